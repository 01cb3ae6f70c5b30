//! A VAE encoder exported to ONNX: images to the latent distribution diffusers samples from. Optimum's
//! `vae_encoder` returns `latent_parameters` (mean and log-variance stacked on channels, a
//! `DiagonalGaussianDistribution`); a deterministic encoder (Sana's DC-AE) returns `latent_sample`.

use std::path::Path;

use super::denoiser::NonFinite;
use super::error::{EngineError, ort_error};
use super::floats::{FloatBuf, read_floats};
use super::roles::TensorSpec;
use super::session::{OnnxModel, OnnxOptions};

/// One image's latent distribution as the encoder gives it, and how the U-Net's latents are made from a
/// sample of it: `(z − shift) · scaling`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedImage {
    /// The latent's C, h, w.
    pub shape: [usize; 3],
    pub mean: Vec<f32>,
    /// The standard deviation of each value; `None` for a deterministic encoder.
    pub std: Option<Vec<f32>>,
    pub scaling_factor: f32,
    pub shift_factor: f32,
}

impl EncodedImage {
    /// The U-Net's latents from a sample of the distribution with unit noise `noise` (not read for a
    /// deterministic encoder), in float32 in diffusers' order: `scaling · (mean + std · ε − shift)`.
    pub fn latents(&self, noise: &[f32], out: &mut Vec<f32>) {
        let (scale, shift) = (self.scaling_factor, self.shift_factor);
        out.clear();
        match &self.std {
            Some(std) => out.extend(
                self.mean
                    .iter()
                    .zip(std)
                    .zip(noise)
                    .map(|((&m, &s), &e)| (m + s * e - shift) * scale),
            ),
            None => out.extend(self.mean.iter().map(|&m| (m - shift) * scale)),
        }
    }

    /// Values in one latent.
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }
}

/// The encoder's output: the distribution's parameters, or a latent already sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Parameters,
    Sample,
}

pub struct VaeEncoder {
    model: OnnxModel,
    input: TensorSpec,
    output: (String, Output),
    scaling_factor: f32,
    shift_factor: f32,
    buf: FloatBuf,
}

impl VaeEncoder {
    /// Opens the encoder: one float image input [B, 3, H, W] and `latent_parameters` or `latent_sample`.
    pub fn load(
        path: &Path,
        scaling_factor: f64,
        shift_factor: Option<f64>,
        options: &OnnxOptions,
    ) -> Result<Self, EngineError> {
        let model = OnnxModel::open(path, options)?;
        let problem = |what: &str| {
            EngineError::Options(format!(
                "{}: a VAE encoder takes one float image [batch, 3, height, width] and returns \
                 `latent_parameters` (Optimum's export) or `latent_sample`; {what}",
                model.path().display()
            ))
        };
        let input = match model.inputs() {
            [one] if one.rank() == 4 && one.elem.is_float() => one.clone(),
            _ => return Err(problem("its inputs are not that")),
        };
        let output = model
            .outputs()
            .iter()
            .find_map(|o| match o.name.as_str() {
                "latent_parameters" => Some((o.name.clone(), Output::Parameters)),
                "latent_sample" => Some((o.name.clone(), Output::Sample)),
                _ => None,
            })
            .ok_or_else(|| problem("it has neither output"))?;
        Ok(Self {
            model,
            input,
            output,
            scaling_factor: scaling_factor as f32,
            shift_factor: shift_factor.unwrap_or(0.0) as f32,
            buf: FloatBuf::default(),
        })
    }

    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// Encodes one image (C × H × W values in [-1, 1]).
    pub fn encode(
        &mut self,
        image: &[f32],
        shape: [usize; 3],
    ) -> Result<EncodedImage, EngineError> {
        self.buf.reset(self.input.elem);
        self.buf.push(image);
        let dims = [1, shape[0] as i64, shape[1] as i64, shape[2] as i64];
        let value = self.buf.view(&dims).map_err(ort_error)?;
        let inputs = vec![(self.input.name.as_str(), value)];
        let path = self.model.path().to_path_buf();
        let outputs = self.model.session.run(inputs).map_err(ort_error)?;
        let (dims, data) = read_floats(&outputs[self.output.0.as_str()]).map_err(ort_error)?;
        drop(outputs);
        if let Some(bad) = NonFinite::count(&data) {
            return Err(EngineError::Options(format!(
                "{}: the VAE encoder's output is not finite ({bad})",
                path.display()
            )));
        }
        let [c, h, w] = match dims.as_slice() {
            &[1, c, h, w] => [c as usize, h as usize, w as usize],
            _ => {
                return Err(EngineError::Options(format!(
                    "{}: the encoder returned shape {dims:?} for one image",
                    path.display()
                )));
            }
        };
        Ok(self.distribution(data, [c, h, w]))
    }

    /// diffusers' `DiagonalGaussianDistribution`: mean and log-variance (clamped to [-30, 20]) halves of the
    /// channels.
    fn distribution(&self, data: Vec<f32>, [c, h, w]: [usize; 3]) -> EncodedImage {
        let (scaling_factor, shift_factor) = (self.scaling_factor, self.shift_factor);
        match self.output.1 {
            Output::Sample => EncodedImage {
                shape: [c, h, w],
                mean: data,
                std: None,
                scaling_factor,
                shift_factor,
            },
            Output::Parameters => {
                let (mean, logvar) = data.split_at(data.len() / 2);
                let std = logvar
                    .iter()
                    .map(|&l| (0.5 * l.clamp(-30.0, 20.0)).exp())
                    .collect();
                EncodedImage {
                    shape: [c / 2, h, w],
                    mean: mean.to_vec(),
                    std: Some(std),
                    scaling_factor,
                    shift_factor,
                }
            }
        }
    }
}
