//! What a batch item is conditioned on besides its sample and timestep: a class label, text-encoder hidden
//! states and their attention mask, SDXL's pooled text embeddings and time ids, an LCM guidance embedding. A denoiser holds a table of
//! [`Condition`]s and each batch item names its row, so a classifier-free-guidance batch [uncond; cond] is
//! two rows, not two copies of every tensor.

use super::roles::{Dim, Role, TensorSpec, shape_text};

/// One item's value of a float conditioning input: its shape after the batch dimension, and its values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl ItemTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// Zeros of `shape`.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let len = shape.iter().product();
        Self {
            shape,
            data: vec![0.0; len],
        }
    }
}

/// What one batch item is conditioned on. An absent value feeds zeros (class 0 for labels) to an input the
/// model has, which needs that input's dims after the batch to be fixed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Condition {
    pub class_label: Option<i64>,
    /// `encoder_hidden_states`: tokens × width.
    pub hidden_states: Option<ItemTensor>,
    /// SDXL's pooled text embedding (`text_embeds`).
    pub text_embeds: Option<ItemTensor>,
    /// SDXL's micro-conditioning (`time_ids`): original size, crop, target size.
    pub time_ids: Option<ItemTensor>,
    /// LCM's guidance-scale embedding (`timestep_cond`).
    pub timestep_cond: Option<ItemTensor>,
    /// Which tokens of `hidden_states` are real (1.0) or padding (0.0), for models that take the mask (Sana).
    pub text_mask: Option<ItemTensor>,
}

impl Condition {
    /// The value for a tensor conditioning role.
    pub fn tensor(&self, role: Role) -> Option<&ItemTensor> {
        match role {
            Role::Conditioning => self.hidden_states.as_ref(),
            Role::TextEmbeds => self.text_embeds.as_ref(),
            Role::TimeIds => self.time_ids.as_ref(),
            Role::TimestepCond => self.timestep_cond.as_ref(),
            Role::TextMask => self.text_mask.as_ref(),
            _ => None,
        }
    }

    /// The roles this condition gives a value for.
    pub fn roles(&self) -> Vec<Role> {
        let mut roles: Vec<Role> = Role::TENSOR_CONDITIONS
            .into_iter()
            .filter(|&r| self.tensor(r).is_some())
            .collect();
        if self.class_label.is_some() {
            roles.insert(0, Role::ClassLabels);
        }
        roles
    }
}

/// Why a condition does not fit the model's input.
pub(super) fn check_fits(value: &ItemTensor, spec: &TensorSpec) -> Result<(), String> {
    let fits = spec.dims.len() == value.shape.len() + 1
        && spec.dims[1..]
            .iter()
            .zip(&value.shape)
            .all(|(d, n)| !matches!(d, Dim::Fixed(m) if m != n))
        && value.shape.iter().product::<usize>() == value.data.len();
    if fits {
        return Ok(());
    }
    let dims: Vec<Dim> = value.shape.iter().map(|&n| Dim::Fixed(n)).collect();
    Err(format!(
        "conditioning of shape {} per item does not fit the model's input {}",
        shape_text(&dims),
        spec.describe()
    ))
}

/// One item's dims after the batch when all are fixed.
pub(super) fn fixed_item_shape(spec: &TensorSpec) -> Option<Vec<usize>> {
    spec.dims[1..]
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbolic(_) => None,
        })
        .collect()
}
