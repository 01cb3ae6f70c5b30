//! A feature network for sample quality: an ONNX classifier whose penultimate activations are the
//! features FID and KID compare.

use std::path::{Path, PathBuf};

use ort::value::{Shape, TensorRef};

use super::error::{EngineError, ort_error};
use super::providers::ProviderKind;
use super::roles::TensorSpec;
use super::session::{OnnxModel, OnnxOptions};

/// Runs a feature network: one float image input `[B, C, H, W]`, and an output named `features`
/// (or else the first rank-2 output) `[B, D]`.
pub struct OnnxFeatures {
    model: OnnxModel,
    path: PathBuf,
    input: String,
    output: String,
    /// The image input's C, H, W when the network fixes them.
    input_shape: Option<[usize; 3]>,
}

impl OnnxFeatures {
    pub fn load(path: impl AsRef<Path>, options: &OnnxOptions) -> Result<Self, EngineError> {
        let path = path.as_ref().to_path_buf();
        let model = OnnxModel::open(&path, options)?;
        let (inputs, outputs) = (model.inputs(), model.outputs());
        let problem =
            |message: String| EngineError::Options(format!("{}: {message}", path.display()));
        let input_shape = inputs.first().and_then(|one| {
            let fixed: Option<Vec<usize>> = one
                .dims
                .get(1..)?
                .iter()
                .map(|d| match d {
                    super::roles::Dim::Fixed(n) => Some(*n),
                    super::roles::Dim::Symbolic(_) => None,
                })
                .collect();
            <[usize; 3]>::try_from(fixed?).ok()
        });
        let input = match inputs {
            [one] if one.rank() == 4 && one.elem.is_float() => one.name.clone(),
            _ => {
                return Err(problem(format!(
                    "a feature network takes one float image input [B, C, H, W]; this one has {}",
                    inputs
                        .iter()
                        .map(TensorSpec::describe)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let output = outputs
            .iter()
            .find(|o| o.name == "features")
            .or_else(|| outputs.iter().find(|o| o.rank() == 2))
            .map(|o| o.name.clone())
            .ok_or_else(|| {
                problem("a feature network needs an output named `features` of shape [B, D]".into())
            })?;
        Ok(Self {
            model,
            path,
            input,
            output,
            input_shape,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image shape the network takes, C × H × W, when it fixes it.
    pub fn input_shape(&self) -> Option<[usize; 3]> {
        self.input_shape
    }

    pub fn provider(&self) -> ProviderKind {
        self.model.provider()
    }

    /// Features of `batch` images of shape `item` (C, H, W), row-major `[batch, D]`; returns D too.
    pub fn features(
        &mut self,
        images: &[f32],
        batch: usize,
        item: [usize; 3],
    ) -> Result<(Vec<f32>, usize), EngineError> {
        let dims = [batch as i64, item[0] as i64, item[1] as i64, item[2] as i64];
        let value = TensorRef::from_array_view((Shape::new(dims), images)).map_err(ort_error)?;
        let outputs = self
            .model
            .session
            .run(ort::inputs![self.input.as_str() => value])
            .map_err(ort_error)?;
        let output = outputs.get(self.output.as_str()).ok_or_else(|| {
            EngineError::Options(format!(
                "{}: the feature network returned no output `{}`",
                self.path.display(),
                self.output
            ))
        })?;
        let (shape, data) = output.try_extract_tensor::<f32>().map_err(ort_error)?;
        if shape.len() != 2 || shape[0] as usize != batch {
            return Err(EngineError::Options(format!(
                "{}: output `{}` has shape {:?}, expected [{batch}, D]",
                self.path.display(),
                self.output,
                shape.iter().collect::<Vec<_>>()
            )));
        }
        if let Some(bad) = super::NonFinite::count(data) {
            return Err(EngineError::Options(format!(
                "{}: the feature network's output `{}` is not finite: {bad}",
                self.path.display(),
                self.output
            )));
        }
        Ok((data.to_vec(), shape[1] as usize))
    }
}
