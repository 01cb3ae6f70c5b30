//! A VAE decoder exported to ONNX: latents to images, as diffusers' pipelines decode them
//! (`latents / scaling_factor + shift_factor`, decoded in batches, clamped).

use std::path::Path;

use super::denoiser::NonFinite;
use super::error::{EngineError, ort_error};
use super::floats::{FloatBuf, read_floats};
use super::frames::{clip_shape, clips_to_frames, frame_shape, frames_to_clips};
use super::roles::{ElemType, TensorSpec};
use super::session::{OnnxModel, OnnxOptions};

pub struct VaeDecoder {
    model: OnnxModel,
    input: TensorSpec,
    output: String,
    scaling_factor: f64,
    shift_factor: f64,
    /// Frames per latent clip: a video model's clips are decoded frame by frame (1 for images).
    frames: usize,
    buf: FloatBuf,
}

impl VaeDecoder {
    /// Opens the decoder: one float latent input [B, C, h, w] and one image output [B, 3, H, W].
    pub fn load(
        path: &Path,
        scaling_factor: f64,
        shift_factor: Option<f64>,
        options: &OnnxOptions,
    ) -> Result<Self, EngineError> {
        let model = OnnxModel::open(path, options)?;
        let problem = |what: &str| {
            EngineError::Options(format!(
                "{}: a VAE decoder takes one float latent [batch, channels, height, width] and returns the image; {what}",
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
            .find(|o| o.name == "sample")
            .or(model.outputs().first())
            .filter(|o| o.rank() == 4 && o.elem.is_float())
            .cloned()
            .ok_or_else(|| problem("it has no rank-4 float output"))?;
        if !(scaling_factor.is_finite() && scaling_factor > 0.0) {
            return Err(problem(&format!(
                "its scaling_factor {scaling_factor} is not a positive number"
            )));
        }
        Ok(Self {
            model,
            input,
            output: output.name,
            scaling_factor,
            shift_factor: shift_factor.unwrap_or(0.0),
            frames: 1,
            buf: FloatBuf::default(),
        })
    }

    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// The float type the decoder's graph takes its latents in.
    pub fn input_elem(&self) -> ElemType {
        self.input.elem
    }

    pub fn scaling_factor(&self) -> f64 {
        self.scaling_factor
    }

    /// Decodes clips of `frames` frames from here on: each latent item is then a clip [C, F, h, w], decoded
    /// frame by frame into a clip [3, F, H, W] (see [`super::frames`]).
    pub fn set_frames(&mut self, frames: usize) {
        self.frames = frames.max(1);
    }

    /// Decodes `latents` (items of `shape`, C × h × w) `batch` at a time into images in model space [-1, 1]
    /// (clamped, so `x / 2 + 0.5` is diffusers' `output_type="np"`); returns them with their C × H × W. Clips
    /// are decoded `batch` frames at a time.
    pub fn decode(
        &mut self,
        latents: &[f32],
        shape: [usize; 3],
        batch: usize,
    ) -> Result<(Vec<f32>, [usize; 3]), EngineError> {
        if self.frames == 1 {
            return self.decode_images(latents, shape, batch);
        }
        let f = self.frames;
        let frames = clips_to_frames(latents, shape, f);
        let (images, frame) = self.decode_images(&frames, frame_shape(shape, f), batch)?;
        Ok((frames_to_clips(&images, frame, f), clip_shape(frame, f)))
    }

    fn decode_images(
        &mut self,
        latents: &[f32],
        shape: [usize; 3],
        batch: usize,
    ) -> Result<(Vec<f32>, [usize; 3]), EngineError> {
        let per: usize = shape.iter().product();
        let mut images = Vec::new();
        let mut image_shape = [0; 3];
        for chunk in latents.chunks(batch.max(1) * per) {
            let (part, s) = self.decode_chunk(chunk, shape)?;
            images.extend(part);
            image_shape = s;
        }
        Ok((images, image_shape))
    }

    fn decode_chunk(
        &mut self,
        latents: &[f32],
        shape: [usize; 3],
    ) -> Result<(Vec<f32>, [usize; 3]), EngineError> {
        let per: usize = shape.iter().product();
        let n = latents.len() / per;
        let (scale, shift) = (self.scaling_factor as f32, self.shift_factor as f32);
        let scaled: Vec<f32> = latents.iter().map(|&z| z / scale + shift).collect();
        self.buf.reset(self.input.elem);
        self.buf.push(&scaled);
        let dims = [n as i64, shape[0] as i64, shape[1] as i64, shape[2] as i64];
        let value = self.buf.view(&dims).map_err(ort_error)?;
        let inputs = vec![(self.input.name.as_str(), value)];
        let path = self.model.path().to_path_buf();
        let outputs = self.model.session.run(inputs).map_err(ort_error)?;
        let value = &outputs[self.output.as_str()];
        let (dims, data) = read_floats(value).map_err(ort_error)?;
        if let Some(bad) = NonFinite::count(&data) {
            return Err(EngineError::Options(format!(
                "{}: the VAE decoder's output is not finite for finite latents ({bad}); a float16 VAE overflows where diffusers \
                 upcasts it (force_upcast; SDXL's VAE is known to): decode with a float32 export of the VAE \
                 (`[model] vae_decoder = \".../vae_decoder/model.onnx\"`) or an fp16-fixed VAE",
                path.display()
            )));
        }
        match dims.as_slice() {
            &[b, c, h, w] if b as usize == n => {
                let images = data.into_iter().map(|v| v.clamp(-1.0, 1.0)).collect();
                Ok((images, [c as usize, h as usize, w as usize]))
            }
            _ => Err(EngineError::Options(format!(
                "{}: the decoder returned shape {dims:?} for {n} latents",
                path.display()
            ))),
        }
    }
}
