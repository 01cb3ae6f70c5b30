//! Input buffers reused from call to call, in whichever element type each input wants, and zero-copy tensor
//! views over them.

use std::fmt;

use half::{bf16, f16};
use ort::session::{IoBinding, SessionInputValue};
use ort::value::{DynValue, PrimitiveTensorElementType, Shape, Tensor, TensorRef};

use super::condition::{Condition, ItemTensor, fixed_item_shape};
use super::denoiser::DenoiseError;
use super::floats::FloatBuf;
use super::roles::{ElemType, ModelRoles, Role, TensorSpec};

/// A zero-copy tensor over `data`.
pub(super) fn tensor_view<'a, T: PrimitiveTensorElementType + fmt::Debug + Clone + 'static>(
    dims: &[i64],
    data: &'a [T],
) -> ort::Result<SessionInputValue<'a>> {
    Ok(TensorRef::from_array_view((Shape::new(dims.iter().copied()), data))?.into())
}

/// A tensor holding its own copy of `data`: a binding keeps it without ONNX Runtime copying it again.
pub(super) fn tensor_owned<T: PrimitiveTensorElementType + fmt::Debug + Clone + 'static>(
    dims: &[i64],
    data: &[T],
) -> ort::Result<DynValue> {
    Ok(Tensor::from_array((Shape::new(dims.iter().copied()), data.to_vec()))?.into_dyn())
}

/// A small buffer of whichever element type an input wants (timesteps, labels).
#[derive(Default)]
pub(super) struct TypedBuf {
    elem: Option<ElemType>,
    f32: Vec<f32>,
    f16: Vec<f16>,
    bf16: Vec<bf16>,
    f64: Vec<f64>,
    i64: Vec<i64>,
    i32: Vec<i32>,
}

impl TypedBuf {
    /// Fills the buffer with `values` as `elem`; integer inputs get them rounded.
    pub fn fill(&mut self, elem: ElemType, values: impl Iterator<Item = f64>) {
        self.elem = Some(elem);
        match elem {
            ElemType::F16 => {
                self.f16.clear();
                self.f16.extend(values.map(f16::from_f64));
            }
            ElemType::Bf16 => {
                self.bf16.clear();
                self.bf16.extend(values.map(bf16::from_f64));
            }
            ElemType::F64 => {
                self.f64.clear();
                self.f64.extend(values);
            }
            ElemType::I64 => {
                self.i64.clear();
                self.i64.extend(values.map(|v| v.round() as i64));
            }
            ElemType::I32 => {
                self.i32.clear();
                self.i32.extend(values.map(|v| v.round() as i32));
            }
            _ => {
                self.f32.clear();
                self.f32.extend(values.map(|v| v as f32));
            }
        }
    }

    pub fn view(&self, dims: &[i64]) -> ort::Result<SessionInputValue<'_>> {
        match self.elem {
            Some(ElemType::F16) => tensor_view(dims, &self.f16),
            Some(ElemType::Bf16) => tensor_view(dims, &self.bf16),
            Some(ElemType::F64) => tensor_view(dims, &self.f64),
            Some(ElemType::I64) => tensor_view(dims, &self.i64),
            Some(ElemType::I32) => tensor_view(dims, &self.i32),
            _ => tensor_view(dims, &self.f32),
        }
    }

    /// A tensor with its own copy of the values.
    pub fn owned(&self, dims: &[i64]) -> ort::Result<DynValue> {
        match self.elem {
            Some(ElemType::F16) => tensor_owned(dims, &self.f16),
            Some(ElemType::Bf16) => tensor_owned(dims, &self.bf16),
            Some(ElemType::F64) => tensor_owned(dims, &self.f64),
            Some(ElemType::I64) => tensor_owned(dims, &self.i64),
            Some(ElemType::I32) => tensor_owned(dims, &self.i32),
            _ => tensor_owned(dims, &self.f32),
        }
    }
}

/// Reusable input buffers, so that a call allocates only what ONNX Runtime does.
#[derive(Default)]
pub(super) struct Scratch {
    pub sample: FloatBuf,
    timestep: TypedBuf,
    timestep_dims: Vec<i64>,
    labels: TypedBuf,
    labels_dims: Vec<i64>,
    /// One buffer per float conditioning input, with its dims.
    floats: Vec<(Role, FloatBuf, Vec<i64>)>,
}

impl Scratch {
    pub fn pack_sample(&mut self, roles: &ModelRoles, sample: &[f32], m: usize) {
        let per_item: usize = roles.input_shape().iter().product();
        let n = sample.len() / per_item;
        self.sample.reset(roles.sample.elem);
        self.sample.push(sample);
        for _ in n..m {
            self.sample.repeat((n - 1) * per_item..n * per_item);
        }
    }

    /// One timestep per item, or one for the chunk (the caller grouped items by timestep).
    pub fn pack_timestep(&mut self, roles: &ModelRoles, timesteps: &[f64], m: usize) {
        let n = timesteps.len();
        let count = if roles.timestep_per_item { m } else { 1 };
        self.timestep_dims = match roles.timestep.rank() {
            0 => vec![],
            _ => vec![count as i64],
        };
        let values = (0..count).map(|i| timesteps[i.min(n - 1)]);
        self.timestep.fill(roles.timestep.elem, values);
    }

    pub fn pack_conditions(
        &mut self,
        roles: &ModelRoles,
        conditions: &[Condition],
        rows: &[usize],
    ) -> Result<(), DenoiseError> {
        if let Some(spec) = &roles.class_labels {
            let labels = rows
                .iter()
                .map(|&r| conditions.get(r).and_then(|c| c.class_label).unwrap_or(0) as f64);
            self.labels.fill(spec.elem, labels);
            self.labels_dims = vec![rows.len() as i64];
        }
        let specs: Vec<(Role, &TensorSpec)> = roles.tensor_conditions().collect();
        self.floats.resize_with(specs.len(), || {
            (Role::Conditioning, FloatBuf::default(), Vec::new())
        });
        // A video U-Net takes its text condition once per frame (AnimateDiff's [B·F, tokens, D]).
        let frame_rows: Vec<usize> = (rows.iter())
            .flat_map(|&r| std::iter::repeat_n(r, roles.frames))
            .collect();
        for ((role, spec), slot) in specs.into_iter().zip(&mut self.floats) {
            slot.0 = role;
            let rows = match role {
                Role::Conditioning => &frame_rows,
                _ => rows,
            };
            slot.2 = pack_float(&mut slot.1, role, spec, conditions, rows)?;
        }
        Ok(())
    }

    /// The timestep input packed last.
    pub fn timestep(&self) -> ort::Result<DynValue> {
        self.timestep.owned(&self.timestep_dims)
    }

    /// Binds the packed class labels and float conditioning inputs, which stay bound across runs.
    pub fn bind_conditions(&self, roles: &ModelRoles, binding: &mut IoBinding) -> ort::Result<()> {
        if let Some(spec) = &roles.class_labels {
            binding.bind_input(spec.name.as_str(), &self.labels.owned(&self.labels_dims)?)?;
        }
        for (role, buf, dims) in &self.floats {
            if let Some(spec) = roles.spec(*role) {
                binding.bind_input(spec.name.as_str(), &buf.owned(dims)?)?;
            }
        }
        Ok(())
    }
}

/// Packs one float conditioning input for the items of `rows`; returns its dims. A row without a value feeds
/// zeros, which needs the input's dims after the batch to be fixed; a row without a text mask (precomputed
/// embeddings) marks every token of its hidden states real.
fn pack_float(
    buf: &mut FloatBuf,
    role: Role,
    spec: &TensorSpec,
    conditions: &[Condition],
    rows: &[usize],
) -> Result<Vec<i64>, DenoiseError> {
    buf.reset(spec.elem);
    let mut shape: Option<Vec<usize>> = None;
    for &row in rows {
        let all_real = (role == Role::TextMask)
            .then(|| conditions.get(row)?.hidden_states.as_ref())
            .flatten()
            .map(|h| ItemTensor::new(vec![h.shape[0]], vec![1.0; h.shape[0]]));
        let value = conditions
            .get(row)
            .and_then(|c| c.tensor(role))
            .or(all_real.as_ref());
        let item_shape = match value {
            Some(v) => v.shape.clone(),
            None => fixed_item_shape(spec).ok_or_else(|| {
                DenoiseError::Condition(format!(
                    "the model needs its {role} {} (dynamic dims after the batch); set it first",
                    spec.describe()
                ))
            })?,
        };
        if shape.as_ref().is_some_and(|s| *s != item_shape) {
            return Err(DenoiseError::Condition(format!(
                "the items of one batch have {role} of different shapes ({:?} and {item_shape:?})",
                shape.unwrap_or_default()
            )));
        }
        match value {
            Some(v) => buf.push(&v.data),
            None => buf.push_zeros(item_shape.iter().product()),
        }
        shape = Some(item_shape);
    }
    let mut dims = vec![rows.len() as i64];
    dims.extend(shape.unwrap_or_default().iter().map(|&d| d as i64));
    Ok(dims)
}
