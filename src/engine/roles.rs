//! What each input and output of a diffusion model is for.
//!
//! A denoiser takes a noisy sample (B×C×H×W, float), a timestep (a scalar or one per batch item), and maybe
//! class labels (int, one per item) or float conditioning (`encoder_hidden_states` B×…, SDXL's `text_embeds` and
//! `time_ids`, LCM's `timestep_cond`) and a text attention mask (Sana's `encoder_attention_mask`, int B×tokens);
//! it returns a tensor
//! shaped like the sample. Roles are recognised by name (diffusers / Optimum exports: `sample`, `timestep`,
//! `encoder_hidden_states` → `out_sample`, and the usual alternatives); a caller's [`RoleOverrides`] wins.

use super::frames::clip_dims;
use std::collections::BTreeMap;
use std::fmt;

/// What an input or output is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The noisy sample x_t, B×C×H×W.
    Sample,
    /// The timestep: a scalar, or one per batch item.
    Timestep,
    /// Class labels, one int per batch item (class-conditional models).
    ClassLabels,
    /// Conditioning such as text-encoder hidden states, B×…
    Conditioning,
    /// SDXL's pooled text embedding, B×D.
    TextEmbeds,
    /// SDXL's micro-conditioning (original size, crop, target size), B×6.
    TimeIds,
    /// LCM's guidance-scale embedding, B×D.
    TimestepCond,
    /// Which text tokens are real (1) or padding (0), B×tokens (Sana's `encoder_attention_mask`).
    TextMask,
    /// A ControlNet's control image in a graph holding the U-Net and its ControlNet, [1, B, 3, H, W] (diffusers'
    /// ControlNet-to-ONNX export) or [B, 3, H, W], values in [0, 1].
    ControlImage,
    /// The ControlNet's conditioning scale, one per call ([1, 1], [1] or a scalar).
    ControlScale,
    /// The model's prediction, shaped like the sample.
    Output,
}

impl Role {
    pub const ALL: [Role; 11] = [
        Role::Sample,
        Role::Timestep,
        Role::ClassLabels,
        Role::Conditioning,
        Role::TextEmbeds,
        Role::TimeIds,
        Role::TimestepCond,
        Role::TextMask,
        Role::ControlImage,
        Role::ControlScale,
        Role::Output,
    ];

    /// The tensor inputs a batch item is conditioned on besides class labels: floats, and the text mask (kept as
    /// 0/1 floats and fed in the input's integer type).
    pub const TENSOR_CONDITIONS: [Role; 5] = [
        Role::Conditioning,
        Role::TextEmbeds,
        Role::TimeIds,
        Role::TimestepCond,
        Role::TextMask,
    ];

    /// The key used in override maps and on the command line (`sample`, `timestep`, `class_labels`,
    /// `conditioning`, `text_embeds`, `time_ids`, `timestep_cond`, `text_mask`, `control_image`,
    /// `control_scale`, `output`).
    pub fn key(self) -> &'static str {
        match self {
            Role::Sample => "sample",
            Role::Timestep => "timestep",
            Role::ClassLabels => "class_labels",
            Role::Conditioning => "conditioning",
            Role::TextEmbeds => "text_embeds",
            Role::TimeIds => "time_ids",
            Role::TimestepCond => "timestep_cond",
            Role::TextMask => "text_mask",
            Role::ControlImage => "control_image",
            Role::ControlScale => "control_scale",
            Role::Output => "output",
        }
    }

    pub fn from_key(key: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.key() == key)
    }

    /// Names recognised for this role (compared case-insensitively).
    pub fn known_names(self) -> &'static [&'static str] {
        match self {
            Role::Sample => &[
                "sample",
                "x",
                "x_t",
                "xt",
                "noisy",
                "noisy_sample",
                "noisy_input",
                "noisy_latents",
                "latent",
                "latents",
                "latent_model_input",
                "z",
                "z_t",
                "input",
                "inputs",
                // Optimum's name for a transformer's latents (SD3, Flux).
                "hidden_states",
            ],
            Role::Timestep => &[
                "timestep",
                "timesteps",
                "t",
                "time",
                "times",
                "time_step",
                "step",
                "steps",
            ],
            Role::ClassLabels => &[
                "class_labels",
                "class_label",
                "labels",
                "label",
                "y",
                "classes",
                "class",
                "class_idx",
                "cond_class",
            ],
            Role::Conditioning => &[
                "encoder_hidden_states",
                "context",
                "cond",
                "conditioning",
                "c",
                "text_embeddings",
                "prompt_embeds",
                "c_crossattn",
            ],
            Role::TextEmbeds => &[
                "text_embeds",
                "add_text_embeds",
                "pooled_prompt_embeds",
                "pooled_projections",
            ],
            Role::TimeIds => &["time_ids", "add_time_ids"],
            Role::TimestepCond => &["timestep_cond", "w_embedding", "guidance_embedding"],
            Role::TextMask => &[
                "encoder_attention_mask",
                "prompt_attention_mask",
                "context_mask",
                "text_mask",
            ],
            Role::ControlImage => &[
                "controlnet_conds",
                "controlnet_cond",
                "controlnet_image",
                "control_image",
            ],
            Role::ControlScale => &[
                "conditioning_scales",
                "conditioning_scale",
                "controlnet_scales",
                "controlnet_scale",
                "control_scale",
            ],
            Role::Output => &[
                "out_sample",
                "out_hidden_states",
                "output",
                "out",
                "eps",
                "epsilon",
                "noise_pred",
                "noise",
                "pred",
                "prediction",
                "model_output",
                "v",
                "v_pred",
                "x0",
                "x_0",
                "denoised",
            ],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Sample => "noisy sample",
            Role::Timestep => "timestep",
            Role::ClassLabels => "class labels",
            Role::Conditioning => "conditioning",
            Role::TextEmbeds => "pooled text embeddings",
            Role::TimeIds => "time ids",
            Role::TimestepCond => "guidance embedding",
            Role::TextMask => "text attention mask",
            Role::ControlImage => "ControlNet control image",
            Role::ControlScale => "ControlNet conditioning scale",
            Role::Output => "output",
        })
    }
}

/// The element type of a tensor, as far as difflab cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    F16,
    Bf16,
    F64,
    I64,
    I32,
    /// Anything else (uint8, strings, …), by ONNX Runtime's name.
    Other(&'static str),
}

impl ElemType {
    pub fn is_float(self) -> bool {
        matches!(
            self,
            ElemType::F32 | ElemType::F16 | ElemType::Bf16 | ElemType::F64
        )
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElemType::F32 => "float32",
            ElemType::F16 => "float16",
            ElemType::Bf16 => "bfloat16",
            ElemType::F64 => "float64",
            ElemType::I64 => "int64",
            ElemType::I32 => "int32",
            ElemType::Other(name) => name,
        })
    }
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// A dynamic dimension, with its symbolic name when the model gives one.
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) if s.is_empty() => f.write_str("?"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// A model input or output as declared: name, element type, shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub elem: ElemType,
    pub dims: Vec<Dim>,
    /// False for non-tensor values (sequences, maps), which difflab cannot feed.
    pub is_tensor: bool,
}

impl TensorSpec {
    pub fn tensor(name: &str, elem: ElemType, dims: Vec<Dim>) -> Self {
        Self {
            name: name.to_string(),
            elem,
            dims,
            is_tensor: true,
        }
    }

    /// "[batch, 4, 8, 8] float32"
    pub fn describe(&self) -> String {
        if !self.is_tensor {
            return format!("'{}' (not a tensor)", self.name);
        }
        format!("'{}' {} {}", self.name, shape_text(&self.dims), self.elem)
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }
}

pub fn shape_text(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims.iter().map(Dim::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Role → input or output name, to name roles that difflab does not recognise by itself.
pub type RoleOverrides = BTreeMap<Role, String>;

/// Parses `role=name` pairs (e.g. `sample=image`), as the command line and experiment files write them.
pub fn parse_override(text: &str) -> Result<(Role, String), String> {
    let (key, name) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not ROLE=NAME"))?;
    let role = Role::from_key(key.trim()).ok_or_else(|| {
        let keys: Vec<&str> = Role::ALL.iter().map(|r| r.key()).collect();
        format!("unknown role '{}' (roles: {})", key.trim(), keys.join(", "))
    })?;
    Ok((role, name.trim().to_string()))
}

/// How the model's inputs and outputs map to roles, with what the engine derived from their shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoles {
    pub sample: TensorSpec,
    pub timestep: TensorSpec,
    pub class_labels: Option<TensorSpec>,
    pub conditioning: Option<TensorSpec>,
    pub text_embeds: Option<TensorSpec>,
    pub time_ids: Option<TensorSpec>,
    pub timestep_cond: Option<TensorSpec>,
    pub text_mask: Option<TensorSpec>,
    /// A graph holding a U-Net and its ControlNets: the control images and the conditioning scales.
    pub control_image: Option<TensorSpec>,
    pub control_scale: Option<TensorSpec>,
    /// How many ControlNets the graph holds (the control image's leading dimension); 0 without them.
    pub controlnets: usize,
    pub output: TensorSpec,
    /// One sample's C, H, W; for a video model (rank-5 sample [B, C, F, H, W]) one clip's C, F·H, W: its
    /// [C, F, H, W] values as they lie in memory, the frames stacked on the height axis.
    pub sample_shape: [usize; 3],
    /// Frames per clip: 1 for an image model.
    pub frames: usize,
    /// Input channels beyond the sample's, fed with it on its channel axis (an inpainting U-Net's mask and
    /// masked-image latents: 9 input channels for 4 predicted); 0 for most models.
    pub extra_channels: usize,
    /// The batch size the model was exported with, if fixed.
    pub fixed_batch: Option<usize>,
    /// True when the model takes one timestep per batch item; false for a scalar (or `[1]`) timestep, which then
    /// applies to the whole batch.
    pub timestep_per_item: bool,
}

impl ModelRoles {
    /// One item of the sample input: the sample's C, H, W with the extra channels beside it.
    pub fn input_shape(&self) -> [usize; 3] {
        let [c, h, w] = self.sample_shape;
        [c + self.extra_channels, h, w]
    }

    /// The sample input's dims for a batch of `m`: [m, C, H, W], or [m, C, F, H, W] for a video model.
    pub fn input_dims(&self, m: usize) -> Vec<i64> {
        self.dims(m, self.input_shape())
    }

    /// The prediction's dims for a batch of `m`, as [`Self::input_dims`].
    pub fn output_dims(&self, m: usize) -> Vec<i64> {
        self.dims(m, self.sample_shape)
    }

    fn dims(&self, m: usize, shape: [usize; 3]) -> Vec<i64> {
        let item = input_item_dims(self.sample.rank(), shape, self.frames);
        std::iter::once(m).chain(item).map(|d| d as i64).collect()
    }

    /// The role of the input or output `name`.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|&role| self.spec(role).is_some_and(|s| s.name == name))
    }

    /// The input (or output) that has `role`, if the model has one.
    pub fn spec(&self, role: Role) -> Option<&TensorSpec> {
        match role {
            Role::Sample => Some(&self.sample),
            Role::Timestep => Some(&self.timestep),
            Role::ClassLabels => self.class_labels.as_ref(),
            Role::Conditioning => self.conditioning.as_ref(),
            Role::TextEmbeds => self.text_embeds.as_ref(),
            Role::TimeIds => self.time_ids.as_ref(),
            Role::TimestepCond => self.timestep_cond.as_ref(),
            Role::TextMask => self.text_mask.as_ref(),
            Role::ControlImage => self.control_image.as_ref(),
            Role::ControlScale => self.control_scale.as_ref(),
            Role::Output => Some(&self.output),
        }
    }

    /// The tensor conditioning inputs the model has, with their roles.
    pub fn tensor_conditions(&self) -> impl Iterator<Item = (Role, &TensorSpec)> {
        Role::TENSOR_CONDITIONS
            .into_iter()
            .filter_map(|role| self.spec(role).map(|s| (role, s)))
    }

    /// Whether the model takes any conditioning (class labels or float conditions).
    pub fn is_conditional(&self) -> bool {
        self.class_labels.is_some() || self.tensor_conditions().next().is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error(
        "the model has no input for the {role} (difflab looks for names like {}); its inputs are {}. \
         Name it with a role override, e.g. `--role {}=<input name>`",
        examples(*role),
        list(inputs),
        role.key()
    )]
    MissingRole { role: Role, inputs: Vec<String> },
    #[error(
        "the model's input '{name}' has no role (difflab feeds a noisy sample, a timestep, class labels and conditioning); \
         its inputs are {}. Name its role with an override, e.g. `--role timestep={name}`",
        list(inputs)
    )]
    UnknownInput { name: String, inputs: Vec<String> },
    #[error("inputs {} could all be the {role}; name the right one with `--role {}=<input name>`", list(names), role.key())]
    Ambiguous { role: Role, names: Vec<String> },
    #[error("the override {}={name} names no {} of the model; it has {}", role.key(), if *role == Role::Output { "output" } else { "input" }, list(available))]
    OverrideNotFound {
        role: Role,
        name: String,
        available: Vec<String>,
    },
    #[error("the {role} input '{name}' has rank {rank} ({shape}); difflab needs {expected}")]
    WrongRank {
        role: Role,
        name: String,
        rank: usize,
        shape: String,
        expected: &'static str,
    },
    #[error("the {role} '{name}' is {found}; difflab needs {expected}")]
    WrongType {
        role: Role,
        name: String,
        found: ElemType,
        expected: &'static str,
    },
    #[error(
        "the sample input '{name}' has dynamic dims {shape}; give the sample shape (C, H, W, or C, F, H, W for a video model) in the options"
    )]
    DynamicSampleShape { name: String, shape: String },
    #[error(
        "the sample shape given, {given} after the batch, contradicts the model's sample input '{name}' {shape}"
    )]
    SampleShapeMismatch {
        name: String,
        shape: String,
        given: String,
    },
    #[error("the model has no outputs")]
    NoOutput,
    #[error(
        "the model has several outputs ({}) and none has a known name; name the prediction with `--role output=<output name>`",
        list(outputs)
    )]
    AmbiguousOutput { outputs: Vec<String> },
    #[error(
        "the output '{name}' has shape {shape}, but a denoiser's output must have the sample's shape {expected}"
    )]
    OutputShape {
        name: String,
        shape: String,
        expected: String,
    },
    #[error("the batch dims disagree: the sample is {sample} but the {role} '{name}' is {shape}")]
    BatchMismatch {
        role: Role,
        name: String,
        sample: String,
        shape: String,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn examples(role: Role) -> String {
    let names: Vec<String> = role
        .known_names()
        .iter()
        .take(6)
        .map(|n| format!("'{n}'"))
        .collect();
    names.join(", ")
}

fn find_by_name(specs: &[TensorSpec], role: Role) -> Vec<&TensorSpec> {
    specs
        .iter()
        .filter(|s| {
            role.known_names()
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&s.name))
        })
        .collect()
}

/// Maps the model's inputs and outputs to roles and checks their types and shapes.
///
/// `sample_shape` is the caller's C, H, W, needed only when the model leaves them dynamic.
pub fn assign_roles(
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    overrides: &RoleOverrides,
    sample_shape: Option<[usize; 3]>,
) -> Result<ModelRoles, RoleError> {
    assign_video_roles(inputs, outputs, overrides, (sample_shape, None))
}

/// [`assign_roles`] with the caller's frame count too, for a video model (rank-5 sample) whose frame dim is
/// dynamic; `sample_shape` is then one frame's C, H, W.
pub fn assign_video_roles(
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    overrides: &RoleOverrides,
    (sample_shape, frames): (Option<[usize; 3]>, Option<usize>),
) -> Result<ModelRoles, RoleError> {
    let Inputs {
        sample,
        timestep,
        class_labels,
        conditioning,
        text_embeds,
        time_ids,
        timestep_cond,
        text_mask,
        control_image,
        control_scale,
    } = pick_inputs(inputs, overrides)?;
    let output = pick_output(outputs, overrides)?;
    let extra_channels = extra_channels(&sample, &output);
    let (sample_shape, frames, fixed_batch) =
        check_sample(&sample, (sample_shape, frames), extra_channels)?;
    let timestep_per_item = check_timestep(&timestep, &sample, fixed_batch)?;
    if let Some(labels) = &class_labels {
        check_class_labels(labels, &sample, fixed_batch)?;
    }
    for (role, cond) in [
        (Role::Conditioning, &conditioning),
        (Role::TextEmbeds, &text_embeds),
        (Role::TimeIds, &time_ids),
        (Role::TimestepCond, &timestep_cond),
    ] {
        if let Some(cond) = cond {
            // A video U-Net takes its text condition once per frame (AnimateDiff's [B·F, tokens, D]).
            let per_frame = role == Role::Conditioning && frames > 1;
            let batch = fixed_batch.map(|b| if per_frame { b * frames } else { b });
            check_float_condition(role, cond, &sample, batch)?;
        }
    }
    if let Some(mask) = &text_mask {
        check_text_mask(mask, &sample, fixed_batch)?;
    }
    let controlnets = check_control(control_image.as_ref(), control_scale.as_ref())?;

    check_output(&output, &sample, fixed_batch, (sample_shape, frames))?;
    Ok(ModelRoles {
        sample,
        timestep,
        class_labels,
        conditioning,
        text_embeds,
        time_ids,
        timestep_cond,
        text_mask,
        control_image,
        control_scale,
        controlnets,
        output,
        sample_shape,
        frames,
        extra_channels,
        fixed_batch,
        timestep_per_item,
    })
}

/// A ControlNet graph's control images are float [N, B, 3, H, W] for N ControlNets (or [B, 3, H, W] for one), its
/// scales float with one value per ControlNet ([N, 1]), and neither comes without the other. Returns N.
fn check_control(
    image: Option<&TensorSpec>,
    scale: Option<&TensorSpec>,
) -> Result<usize, RoleError> {
    let (image, scale) = match (image, scale) {
        (None, None) => return Ok(0),
        (Some(image), Some(scale)) => (image, scale),
        (Some(one), None) | (None, Some(one)) => {
            let missing = match image {
                Some(_) => Role::ControlScale,
                None => Role::ControlImage,
            };
            return Err(RoleError::MissingRole {
                role: missing,
                inputs: vec![one.describe()],
            });
        }
    };
    let leading = match image.rank() {
        5 => image.dims[0].clone(),
        4 => Dim::Fixed(1),
        rank => {
            return Err(RoleError::WrongRank {
                role: Role::ControlImage,
                name: image.name.clone(),
                rank,
                shape: shape_text(&image.dims),
                expected: "[controlnets, batch, 3, height, width] or [batch, 3, height, width]",
            });
        }
    };
    let values: usize = scale
        .dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Symbolic(_) => 0,
        })
        .product();
    let nets = match leading {
        Dim::Fixed(n) if n >= 1 => n,
        _ => 0,
    };
    if nets == 0 || values != nets || !image.elem.is_float() || !scale.elem.is_float() {
        return Err(RoleError::WrongRank {
            role: Role::ControlScale,
            name: scale.name.clone(),
            rank: scale.rank(),
            shape: format!(
                "{} with the control image {}",
                shape_text(&scale.dims),
                shape_text(&image.dims)
            ),
            expected: "N ControlNets: float control images [N, batch, 3, height, width] (N fixed) and N float \
                       scales ([N, 1])",
        });
    }
    Ok(nets)
}

/// The sample input's channels beyond the output's, where the graph fixes both (an inpainting U-Net's 9 for 4).
fn extra_channels(sample: &TensorSpec, output: &TensorSpec) -> usize {
    match (sample.dims.get(1), output.dims.get(1)) {
        (Some(Dim::Fixed(input)), Some(Dim::Fixed(out))) if input > out => input - out,
        _ => 0,
    }
}

/// The inputs by role: each found by name (or as overridden), every input claimed by exactly one role.
struct Inputs {
    sample: TensorSpec,
    timestep: TensorSpec,
    class_labels: Option<TensorSpec>,
    conditioning: Option<TensorSpec>,
    text_embeds: Option<TensorSpec>,
    time_ids: Option<TensorSpec>,
    timestep_cond: Option<TensorSpec>,
    text_mask: Option<TensorSpec>,
    control_image: Option<TensorSpec>,
    control_scale: Option<TensorSpec>,
}

fn pick_inputs(inputs: &[TensorSpec], overrides: &RoleOverrides) -> Result<Inputs, RoleError> {
    let described: Vec<String> = inputs.iter().map(TensorSpec::describe).collect();
    let mut taken: Vec<&str> = Vec::new();
    let mut pick = |role: Role, required: bool| -> Result<Option<TensorSpec>, RoleError> {
        if let Some(name) = overrides.get(&role) {
            let spec = inputs.iter().find(|s| &s.name == name).ok_or_else(|| {
                RoleError::OverrideNotFound {
                    role,
                    name: name.clone(),
                    available: described.clone(),
                }
            })?;
            taken.push(&spec.name);
            return Ok(Some(spec.clone()));
        }
        // Inputs that an override already claimed are not candidates for another role.
        let claimed: Vec<&String> = overrides.values().collect();
        let found: Vec<&TensorSpec> = find_by_name(inputs, role)
            .into_iter()
            .filter(|s| !claimed.contains(&&s.name) && !taken.contains(&s.name.as_str()))
            .collect();
        match found.as_slice() {
            [] if required => Err(RoleError::MissingRole {
                role,
                inputs: described.clone(),
            }),
            [] => Ok(None),
            [one] => {
                taken.push(&one.name);
                Ok(Some((*one).clone()))
            }
            many => Err(RoleError::Ambiguous {
                role,
                names: many.iter().map(|s| s.name.clone()).collect(),
            }),
        }
    };
    let missing = |role| RoleError::MissingRole {
        role,
        inputs: described.clone(),
    };
    let sample = pick(Role::Sample, true)?.ok_or_else(|| missing(Role::Sample))?;
    let timestep = pick(Role::Timestep, true)?.ok_or_else(|| missing(Role::Timestep))?;
    let class_labels = pick(Role::ClassLabels, false)?;
    let conditioning = pick(Role::Conditioning, false)?;
    let text_embeds = pick(Role::TextEmbeds, false)?;
    let time_ids = pick(Role::TimeIds, false)?;
    let timestep_cond = pick(Role::TimestepCond, false)?;
    let text_mask = pick(Role::TextMask, false)?;
    let control_image = pick(Role::ControlImage, false)?;
    let control_scale = pick(Role::ControlScale, false)?;

    let used = [
        Some(&sample),
        Some(&timestep),
        class_labels.as_ref(),
        conditioning.as_ref(),
        text_embeds.as_ref(),
        time_ids.as_ref(),
        timestep_cond.as_ref(),
        text_mask.as_ref(),
        control_image.as_ref(),
        control_scale.as_ref(),
    ];
    if let Some(extra) = inputs
        .iter()
        .find(|i| !used.iter().any(|u| u.is_some_and(|u| u.name == i.name)))
    {
        return Err(RoleError::UnknownInput {
            name: extra.name.clone(),
            inputs: described,
        });
    }

    Ok(Inputs {
        sample,
        timestep,
        class_labels,
        conditioning,
        text_embeds,
        time_ids,
        timestep_cond,
        text_mask,
        control_image,
        control_scale,
    })
}

/// The sample input is B×C×H×W float, or B×C×F×H×W for a video model; returns one sample's C, H, W (a clip's
/// C, F·H, W), the frames per clip (1 for images) and the batch size a fixed-batch model takes. The given shape
/// fills the dims the model leaves dynamic and must agree with those it fixes.
fn check_sample(
    sample: &TensorSpec,
    (sample_shape, frames): (Option<[usize; 3]>, Option<usize>),
    extra_channels: usize,
) -> Result<([usize; 3], usize, Option<usize>), RoleError> {
    let rank = sample.rank();
    if !sample.is_tensor || !(rank == 4 || rank == 5) {
        return Err(RoleError::WrongRank {
            role: Role::Sample,
            name: sample.name.clone(),
            rank,
            shape: shape_text(&sample.dims),
            expected: "rank 4 (batch × channels × height × width) or 5 (batch × channels × frames × height × width)",
        });
    }
    if !sample.elem.is_float() {
        return Err(RoleError::WrongType {
            role: Role::Sample,
            name: sample.name.clone(),
            found: sample.elem,
            expected: "float32, float16, bfloat16 or float64",
        });
    }
    let fixed_batch = match sample.dims[0] {
        Dim::Fixed(n) => Some(n),
        Dim::Symbolic(_) => None,
    };
    // The given shape is the sample's; the input takes the extra channels beside it.
    let mut given: Vec<Option<usize>> = match sample_shape {
        Some([c, h, w]) => vec![Some(c + extra_channels), Some(h), Some(w)],
        None => vec![None; 3],
    };
    if rank == 5 {
        given.insert(1, frames);
    }
    let dims = resolve_dims(sample, &given)?;
    let (c, frames, h, w) = match dims[..] {
        [c, f, h, w] => (c, f, h, w),
        [c, h, w] => (c, 1, h, w),
        _ => unreachable!("rank checked above"),
    };
    Ok(([c - extra_channels, frames * h, w], frames, fixed_batch))
}

/// Each of the sample's dims after the batch: the model's where fixed (a given value must agree), else the given.
fn resolve_dims(sample: &TensorSpec, given: &[Option<usize>]) -> Result<Vec<usize>, RoleError> {
    let mut dims = Vec::with_capacity(given.len());
    for (dim, &given_dim) in sample.dims[1..].iter().zip(given) {
        dims.push(match (dim, given_dim) {
            (Dim::Fixed(n), Some(g)) if *n != g => {
                return Err(RoleError::SampleShapeMismatch {
                    name: sample.name.clone(),
                    shape: shape_text(&sample.dims),
                    given: given_text(given),
                });
            }
            (Dim::Fixed(n), _) => *n,
            (Dim::Symbolic(_), Some(g)) => g,
            (Dim::Symbolic(_), None) => {
                return Err(RoleError::DynamicSampleShape {
                    name: sample.name.clone(),
                    shape: shape_text(&sample.dims),
                });
            }
        });
    }
    Ok(dims)
}

fn given_text(given: &[Option<usize>]) -> String {
    let dims: Vec<String> = given
        .iter()
        .map(|g| g.map_or("?".to_string(), |g| g.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// The timestep is a scalar, [1] or [B], int or float; returns whether it takes one timestep per item.
fn check_timestep(
    timestep: &TensorSpec,
    sample: &TensorSpec,
    fixed_batch: Option<usize>,
) -> Result<bool, RoleError> {
    if !timestep.is_tensor || timestep.rank() > 1 {
        return Err(RoleError::WrongRank {
            role: Role::Timestep,
            name: timestep.name.clone(),
            rank: timestep.rank(),
            shape: shape_text(&timestep.dims),
            expected: "a scalar or one timestep per batch item ([batch])",
        });
    }
    if !matches!(
        timestep.elem,
        ElemType::I64
            | ElemType::I32
            | ElemType::F32
            | ElemType::F16
            | ElemType::Bf16
            | ElemType::F64
    ) {
        return Err(RoleError::WrongType {
            role: Role::Timestep,
            name: timestep.name.clone(),
            found: timestep.elem,
            expected: "int64, int32, float32, float16 or float64",
        });
    }
    let per_item = match timestep.dims.first() {
        None => false,
        Some(Dim::Fixed(1)) => fixed_batch.is_some_and(|b| b == 1),
        Some(Dim::Fixed(n)) if fixed_batch == Some(*n) => true,
        Some(Dim::Fixed(_)) => {
            return Err(RoleError::BatchMismatch {
                role: Role::Timestep,
                name: timestep.name.clone(),
                sample: shape_text(&sample.dims),
                shape: shape_text(&timestep.dims),
            });
        }
        Some(Dim::Symbolic(_)) => true,
    };

    Ok(per_item)
}

/// Class labels: one int per batch item.
fn check_class_labels(
    labels: &TensorSpec,
    sample: &TensorSpec,
    fixed_batch: Option<usize>,
) -> Result<(), RoleError> {
    if !labels.is_tensor || labels.rank() != 1 {
        return Err(RoleError::WrongRank {
            role: Role::ClassLabels,
            name: labels.name.clone(),
            rank: labels.rank(),
            shape: shape_text(&labels.dims),
            expected: "one label per batch item ([batch])",
        });
    }
    if !matches!(labels.elem, ElemType::I64 | ElemType::I32) {
        return Err(RoleError::WrongType {
            role: Role::ClassLabels,
            name: labels.name.clone(),
            found: labels.elem,
            expected: "int64 or int32",
        });
    }
    check_batch_dim(Role::ClassLabels, labels, sample, fixed_batch)
}

/// The output has the sample's shape and a float type.
fn check_output(
    output: &TensorSpec,
    sample: &TensorSpec,
    fixed_batch: Option<usize>,
    (shape, frames): ([usize; 3], usize),
) -> Result<(), RoleError> {
    let expected = shape_text(&sample.dims);
    if !output.is_tensor || output.rank() != sample.rank() {
        return Err(RoleError::OutputShape {
            name: output.name.clone(),
            shape: shape_text(&output.dims),
            expected,
        });
    }
    if !output.elem.is_float() {
        return Err(RoleError::WrongType {
            role: Role::Output,
            name: output.name.clone(),
            found: output.elem,
            expected: "float32, float16, bfloat16 or float64",
        });
    }
    let item = input_item_dims(sample.rank(), shape, frames);
    let want = std::iter::once(fixed_batch).chain(item.into_iter().map(Some));
    for (dim, want) in output.dims.iter().zip(want) {
        if let (Dim::Fixed(n), Some(w)) = (dim, want)
            && *n != w
        {
            return Err(RoleError::OutputShape {
                name: output.name.clone(),
                shape: shape_text(&output.dims),
                expected,
            });
        }
    }

    Ok(())
}

/// One item's dims after the batch as a sample input of `rank` takes them: C, H, W, or a clip's C, F, H, W.
fn input_item_dims(rank: usize, shape: [usize; 3], frames: usize) -> Vec<usize> {
    match rank {
        5 => clip_dims(shape, frames),
        _ => shape.to_vec(),
    }
}

/// A float conditioning input: batch first, float.
fn check_float_condition(
    role: Role,
    cond: &TensorSpec,
    sample: &TensorSpec,
    fixed_batch: Option<usize>,
) -> Result<(), RoleError> {
    if !cond.is_tensor || cond.rank() < 2 {
        return Err(RoleError::WrongRank {
            role,
            name: cond.name.clone(),
            rank: cond.rank(),
            shape: shape_text(&cond.dims),
            expected: "rank 2 or more, batch first (e.g. batch × tokens × features)",
        });
    }
    if !cond.elem.is_float() {
        return Err(RoleError::WrongType {
            role,
            name: cond.name.clone(),
            found: cond.elem,
            expected: "float32, float16, bfloat16 or float64",
        });
    }
    check_batch_dim(role, cond, sample, fixed_batch)
}

/// A text mask is one 0/1 per token: rank 2, batch first, integer (or float, as some exports take it).
fn check_text_mask(
    mask: &TensorSpec,
    sample: &TensorSpec,
    fixed_batch: Option<usize>,
) -> Result<(), RoleError> {
    if !mask.is_tensor || mask.rank() != 2 {
        return Err(RoleError::WrongRank {
            role: Role::TextMask,
            name: mask.name.clone(),
            rank: mask.rank(),
            shape: shape_text(&mask.dims),
            expected: "rank 2 (batch × tokens)",
        });
    }
    if matches!(mask.elem, ElemType::Other(_)) {
        return Err(RoleError::WrongType {
            role: Role::TextMask,
            name: mask.name.clone(),
            found: mask.elem,
            expected: "int64, int32 or a float type",
        });
    }
    check_batch_dim(Role::TextMask, mask, sample, fixed_batch)
}

fn check_batch_dim(
    role: Role,
    spec: &TensorSpec,
    sample: &TensorSpec,
    fixed_batch: Option<usize>,
) -> Result<(), RoleError> {
    if let (Some(Dim::Fixed(n)), Some(b)) = (spec.dims.first(), fixed_batch)
        && *n != b
    {
        return Err(RoleError::BatchMismatch {
            role,
            name: spec.name.clone(),
            sample: shape_text(&sample.dims),
            shape: shape_text(&spec.dims),
        });
    }
    if let (Some(Dim::Fixed(_)), None) = (spec.dims.first(), fixed_batch) {
        return Err(RoleError::BatchMismatch {
            role,
            name: spec.name.clone(),
            sample: shape_text(&sample.dims),
            shape: shape_text(&spec.dims),
        });
    }
    Ok(())
}

fn pick_output(outputs: &[TensorSpec], overrides: &RoleOverrides) -> Result<TensorSpec, RoleError> {
    if let Some(name) = overrides.get(&Role::Output) {
        return outputs
            .iter()
            .find(|o| &o.name == name)
            .cloned()
            .ok_or_else(|| RoleError::OverrideNotFound {
                role: Role::Output,
                name: name.clone(),
                available: outputs.iter().map(TensorSpec::describe).collect(),
            });
    }
    match outputs {
        [] => Err(RoleError::NoOutput),
        [one] => Ok(one.clone()),
        many => match find_by_name(many, Role::Output).as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(RoleError::AmbiguousOutput {
                outputs: many.iter().map(TensorSpec::describe).collect(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_sample(name: &str) -> TensorSpec {
        TensorSpec::tensor(
            name,
            ElemType::F32,
            vec![
                Dim::Symbolic("batch".into()),
                Dim::Fixed(4),
                Dim::Fixed(8),
                Dim::Fixed(8),
            ],
        )
    }

    fn t(name: &str, elem: ElemType) -> TensorSpec {
        TensorSpec::tensor(name, elem, vec![Dim::Symbolic("batch".into())])
    }

    #[test]
    fn diffusers_names() {
        let roles = assign_roles(
            &[f32_sample("sample"), t("timestep", ElemType::I64)],
            &[f32_sample("out_sample")],
            &RoleOverrides::new(),
            None,
        )
        .unwrap();
        assert_eq!(roles.sample_shape, [4, 8, 8]);
        assert_eq!(roles.fixed_batch, None);
        assert!(roles.timestep_per_item);
        assert_eq!(roles.role_of("out_sample"), Some(Role::Output));
    }

    #[test]
    fn names_are_case_insensitive_and_overrides_win() {
        let inputs = [f32_sample("X_T"), t("Noise_Level", ElemType::F32)];
        let err =
            assign_roles(&inputs, &[f32_sample("o")], &RoleOverrides::new(), None).unwrap_err();
        assert!(
            matches!(
                err,
                RoleError::MissingRole {
                    role: Role::Timestep,
                    ..
                }
            ),
            "{err}"
        );
        let overrides = RoleOverrides::from([(Role::Timestep, "Noise_Level".to_string())]);
        let roles = assign_roles(&inputs, &[f32_sample("o")], &overrides, None).unwrap();
        assert_eq!(roles.timestep.name, "Noise_Level");
        assert_eq!(roles.sample.name, "X_T");
    }

    #[test]
    fn two_sample_candidates_are_ambiguous() {
        let err = assign_roles(
            &[f32_sample("x"), f32_sample("sample"), t("t", ElemType::I64)],
            &[f32_sample("o")],
            &RoleOverrides::new(),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                RoleError::Ambiguous {
                    role: Role::Sample,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn dynamic_spatial_dims_need_a_shape() {
        let dynamic = TensorSpec::tensor(
            "sample",
            ElemType::F32,
            vec![
                Dim::Symbolic("b".into()),
                Dim::Fixed(4),
                Dim::Symbolic("h".into()),
                Dim::Symbolic("w".into()),
            ],
        );
        let inputs = [dynamic.clone(), t("t", ElemType::I64)];
        let err = assign_roles(
            &inputs,
            std::slice::from_ref(&dynamic),
            &RoleOverrides::new(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, RoleError::DynamicSampleShape { .. }), "{err}");
        let roles = assign_roles(
            &inputs,
            std::slice::from_ref(&dynamic),
            &RoleOverrides::new(),
            Some([4, 32, 32]),
        )
        .unwrap();
        assert_eq!(roles.sample_shape, [4, 32, 32]);
        let err = assign_roles(
            &inputs,
            &[dynamic],
            &RoleOverrides::new(),
            Some([3, 32, 32]),
        )
        .unwrap_err();
        assert!(
            matches!(err, RoleError::SampleShapeMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn parse_overrides() {
        assert_eq!(
            parse_override("sample=image"),
            Ok((Role::Sample, "image".into()))
        );
        assert!(
            parse_override("noise=image")
                .unwrap_err()
                .contains("unknown role")
        );
        assert!(parse_override("sample").is_err());
    }

    /// Sana's transformer: the text mask is an int64 [batch, tokens] input of its own role; a mask of another
    /// rank is refused by name.
    #[test]
    fn sanas_encoder_attention_mask_is_the_text_mask() {
        let batch = || Dim::Symbolic("batch".into());
        let tokens = || Dim::Symbolic("sequence_length".into());
        let states = TensorSpec::tensor(
            "encoder_hidden_states",
            ElemType::F32,
            vec![batch(), tokens(), Dim::Fixed(8)],
        );
        let mask = TensorSpec::tensor(
            "encoder_attention_mask",
            ElemType::I64,
            vec![batch(), tokens()],
        );
        let inputs = vec![
            f32_sample("hidden_states"),
            states.clone(),
            t("timestep", ElemType::F32),
            mask,
        ];
        let out = vec![f32_sample("out_hidden_states")];
        let roles = assign_roles(&inputs, &out, &RoleOverrides::new(), None).unwrap();
        assert_eq!(
            roles.role_of("encoder_attention_mask"),
            Some(Role::TextMask)
        );
        assert_eq!(
            roles.role_of("encoder_hidden_states"),
            Some(Role::Conditioning)
        );
        let mut bad = inputs.clone();
        bad[3] = TensorSpec::tensor(
            "encoder_attention_mask",
            ElemType::I64,
            vec![batch(), tokens(), Dim::Fixed(1)],
        );
        let err = assign_roles(&bad, &out, &RoleOverrides::new(), None).unwrap_err();
        assert!(err.to_string().contains("rank 2 (batch × tokens)"), "{err}");
    }
}
