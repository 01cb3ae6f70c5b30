//! A feature network for sample quality: an ONNX classifier whose penultimate activations are the
//! features FID and KID compare.

use std::path::{Path, PathBuf};

use super::error::{EngineError, ort_error};
use super::floats::{FloatBuf, read_floats};
use super::providers::ProviderKind;
use super::roles::TensorSpec;
use super::session::{OnnxModel, OnnxOptions};

/// Runs a feature network: one float image input `[B, C, H, W]`, and an output named `features`
/// (or else the first rank-2 output) `[B, D]`; class logits `[B, K]` from an output named `logits` (or the
/// one the caller names), for prompt accuracy.
pub struct OnnxFeatures {
    model: OnnxModel,
    path: PathBuf,
    input: TensorSpec,
    /// The images, in the input's float type.
    buf: FloatBuf,
    output: String,
    logits: Option<String>,
    /// The image input's C, H, W when the network fixes them.
    input_shape: Option<[usize; 3]>,
}

impl OnnxFeatures {
    /// Opens the network; `logits` names its class-logits output (`None`: `logits` when it has one).
    pub fn load(
        path: impl AsRef<Path>,
        options: &OnnxOptions,
        logits: Option<&str>,
    ) -> Result<Self, EngineError> {
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
            [one] if one.rank() == 4 && one.elem.is_float() => one.clone(),
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
        let logits = match logits {
            Some(name) if outputs.iter().any(|o| o.name == name && o.rank() == 2) => {
                Some(name.to_string())
            }
            Some(name) => {
                return Err(problem(format!(
                    "[quality] logits = \"{name}\" is not a [B, classes] output; its outputs: {}",
                    outputs
                        .iter()
                        .map(TensorSpec::describe)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            None => outputs
                .iter()
                .find(|o| o.name == "logits" && o.rank() == 2)
                .map(|o| o.name.clone()),
        };
        Ok(Self {
            model,
            path,
            input,
            buf: FloatBuf::default(),
            output,
            logits,
            input_shape,
        })
    }

    /// Whether the network gives class logits.
    pub fn has_logits(&self) -> bool {
        self.logits.is_some()
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
        let rows = self.run(images, batch, item)?;
        Ok((rows.features, rows.dim))
    }

    /// Features and, when the network has them, class logits of `batch` images in one run.
    pub fn run(
        &mut self,
        images: &[f32],
        batch: usize,
        item: [usize; 3],
    ) -> Result<FeatureRows, EngineError> {
        let dims = [batch as i64, item[0] as i64, item[1] as i64, item[2] as i64];
        self.buf.reset(self.input.elem);
        self.buf.push(images);
        let value = self.buf.view(&dims).map_err(ort_error)?;
        let outputs = self
            .model
            .session
            .run(vec![(self.input.name.as_str(), value)])
            .map_err(ort_error)?;
        let (features, dim) = rows_of(&self.path, &outputs, &self.output, batch)?;
        let logits = match &self.logits {
            Some(name) => Some(rows_of(&self.path, &outputs, name, batch)?),
            None => None,
        };
        Ok(FeatureRows {
            features,
            dim,
            logits,
        })
    }
}

/// One run's outputs: features `[B, D]` and, when the network has them, logits `[B, K]` with K.
pub struct FeatureRows {
    pub features: Vec<f32>,
    pub dim: usize,
    pub logits: Option<(Vec<f32>, usize)>,
}

/// Output `name` as finite rows `[batch, D]`, with D.
fn rows_of(
    path: &Path,
    outputs: &ort::session::SessionOutputs<'_>,
    name: &str,
    batch: usize,
) -> Result<(Vec<f32>, usize), EngineError> {
    let output = outputs.get(name).ok_or_else(|| {
        EngineError::Options(format!(
            "{}: the feature network returned no output `{name}`",
            path.display()
        ))
    })?;
    let (shape, data) = read_floats(output).map_err(ort_error)?;
    if shape.len() != 2 || shape[0] as usize != batch {
        return Err(EngineError::Options(format!(
            "{}: output `{name}` has shape {:?}, expected [{batch}, D]",
            path.display(),
            shape.iter().collect::<Vec<_>>()
        )));
    }
    if let Some(bad) = super::NonFinite::count(&data) {
        return Err(EngineError::Options(format!(
            "{}: the feature network's output `{name}` is not finite: {bad}",
            path.display()
        )));
    }
    Ok((data, shape[1] as usize))
}
