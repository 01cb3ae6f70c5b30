//! Float tensors in whichever float type a model declares — float32, float16, bfloat16 or float64 — packed
//! from and read back into the f32 difflab computes in.

use half::{bf16, f16};
use ort::session::SessionInputValue;
use ort::value::{DynValue, TensorElementType, ValueType};

use super::packing::{tensor_owned, tensor_view};
use super::roles::ElemType;

/// A float tensor being packed item by item in the element type of the input it feeds; an integer input (a
/// text attention mask) gets the values rounded.
#[derive(Default)]
pub(super) struct FloatBuf {
    elem: Option<ElemType>,
    f32: Vec<f32>,
    f16: Vec<f16>,
    bf16: Vec<bf16>,
    f64: Vec<f64>,
    i64: Vec<i64>,
    i32: Vec<i32>,
}

impl FloatBuf {
    /// Empties the buffer for an input of element type `elem` (an unknown type packs as float32).
    pub fn reset(&mut self, elem: ElemType) {
        self.elem = Some(elem);
        self.f32.clear();
        self.f16.clear();
        self.bf16.clear();
        self.f64.clear();
        self.i64.clear();
        self.i32.clear();
    }

    pub fn push(&mut self, values: &[f32]) {
        match self.elem {
            Some(ElemType::F16) => self.f16.extend(values.iter().map(|&v| f16::from_f32(v))),
            Some(ElemType::Bf16) => self.bf16.extend(values.iter().map(|&v| bf16::from_f32(v))),
            Some(ElemType::F64) => self.f64.extend(values.iter().map(|&v| f64::from(v))),
            Some(ElemType::I64) => self.i64.extend(values.iter().map(|&v| v.round() as i64)),
            Some(ElemType::I32) => self.i32.extend(values.iter().map(|&v| v.round() as i32)),
            _ => self.f32.extend_from_slice(values),
        }
    }

    pub fn push_zeros(&mut self, n: usize) {
        match self.elem {
            Some(ElemType::F16) => self.f16.resize(self.f16.len() + n, f16::ZERO),
            Some(ElemType::Bf16) => self.bf16.resize(self.bf16.len() + n, bf16::ZERO),
            Some(ElemType::F64) => self.f64.resize(self.f64.len() + n, 0.0),
            Some(ElemType::I64) => self.i64.resize(self.i64.len() + n, 0),
            Some(ElemType::I32) => self.i32.resize(self.i32.len() + n, 0),
            _ => self.f32.resize(self.f32.len() + n, 0.0),
        }
    }

    /// Appends a copy of values `range` already in the buffer (padding a fixed batch with its last item).
    pub fn repeat(&mut self, range: std::ops::Range<usize>) {
        match self.elem {
            Some(ElemType::F16) => self.f16.extend_from_within(range),
            Some(ElemType::Bf16) => self.bf16.extend_from_within(range),
            Some(ElemType::F64) => self.f64.extend_from_within(range),
            Some(ElemType::I64) => self.i64.extend_from_within(range),
            Some(ElemType::I32) => self.i32.extend_from_within(range),
            _ => self.f32.extend_from_within(range),
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

/// A float output's shape and values as f32, whatever float type the model returned it in.
pub(super) fn read_floats(value: &DynValue) -> ort::Result<(Vec<i64>, Vec<f32>)> {
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(ort::Error::new(format!(
                "expected a float tensor, got {other}"
            )));
        }
    };
    let (shape, data): (Vec<i64>, Vec<f32>) = match ty {
        TensorElementType::Float32 => {
            let (s, d) = value.try_extract_tensor::<f32>()?;
            (s.to_vec(), d.to_vec())
        }
        TensorElementType::Float16 => {
            let (s, d) = value.try_extract_tensor::<f16>()?;
            (s.to_vec(), d.iter().map(|v| v.to_f32()).collect())
        }
        TensorElementType::Bfloat16 => {
            let (s, d) = value.try_extract_tensor::<bf16>()?;
            (s.to_vec(), d.iter().map(|v| v.to_f32()).collect())
        }
        TensorElementType::Float64 => {
            let (s, d) = value.try_extract_tensor::<f64>()?;
            (s.to_vec(), d.iter().map(|&v| v as f32).collect())
        }
        other => {
            return Err(ort::Error::new(format!(
                "expected a float tensor, got {other:?} elements"
            )));
        }
    };
    Ok((shape, data))
}

/// Whether a value ONNX Runtime returned is a float tensor of any width.
pub(super) fn is_float_tensor(value: &DynValue) -> bool {
    matches!(
        value.dtype(),
        ValueType::Tensor {
            ty: TensorElementType::Float32
                | TensorElementType::Float16
                | TensorElementType::Bfloat16
                | TensorElementType::Float64,
            ..
        }
    )
}
