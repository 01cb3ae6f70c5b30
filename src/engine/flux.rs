//! FLUX's transformer as `FluxPipeline` calls it: latents packed 2×2 into 64-wide tokens, the T5 states and
//! CLIP's pooled output as conditioning, the timestep divided by 1000, `img_ids` (0, row, column) and `txt_ids`
//! (zeros) as Optimum exports them (int64, no batch dimension), and the embedded guidance scale of
//! guidance-distilled models. The sampler sees unpacked latents C × H × W, as for every other model.

use std::path::Path;

use super::condition::Condition;
use super::denoiser::{DenoiseError, Denoiser, DenoiserInfo, checked_batch};
use super::error::EngineError;
use super::floats::read_floats;
use super::packing::TypedBuf;
use super::roles::TensorSpec;
use super::session::{OnnxModel, OnnxOptions};
use crate::sampler::PredictionType;

const INPUTS: [&str; 6] = [
    "hidden_states",
    "encoder_hidden_states",
    "pooled_projections",
    "timestep",
    "img_ids",
    "txt_ids",
];
const OUTPUT: &str = "out_hidden_states";

/// Where latent value (channel, y, x) of a C × H × W item goes in its packed tokens: diffusers'
/// `_pack_latents`, `packed[i·(W/2) + j, c·4 + dy·2 + dx] = latent[c, 2i + dy, 2j + dx]`.
fn packed_index(index: usize, [c, h, w]: [usize; 3]) -> usize {
    let (token, k) = (index / (4 * c), index % (4 * c));
    let (i, j) = (token / (w / 2), token % (w / 2));
    let (ch, dy, dx) = (k / 4, (k / 2) % 2, k % 2);
    ch * h * w + (2 * i + dy) * w + 2 * j + dx
}

/// Items of unpacked latents as FLUX's 64-wide tokens.
pub fn pack_latents(sample: &[f32], shape: [usize; 3]) -> Vec<f32> {
    let per: usize = shape.iter().product();
    let mut packed = vec![0.0; sample.len()];
    for (item, out) in sample.chunks(per).zip(packed.chunks_mut(per)) {
        for (index, v) in out.iter_mut().enumerate() {
            *v = item[packed_index(index, shape)];
        }
    }
    packed
}

/// The inverse of [`pack_latents`], into `out`.
pub fn unpack_latents(packed: &[f32], shape: [usize; 3], out: &mut [f32]) {
    let per: usize = shape.iter().product();
    for (item, dst) in packed.chunks(per).zip(out.chunks_mut(per)) {
        for (index, &v) in item.iter().enumerate() {
            dst[packed_index(index, shape)] = v;
        }
    }
}

pub struct FluxDenoiser {
    model: OnnxModel,
    /// The unpacked latent C, H, W.
    shape: [usize; 3],
    /// The inputs in the order of [`INPUTS`], then `guidance` when the model embeds it.
    inputs: Vec<TensorSpec>,
    guidance_input: Option<TensorSpec>,
    conditions: Vec<Condition>,
    /// The embedded guidance of each item of the next call.
    guidance: Vec<f32>,
    runs: usize,
}

impl FluxDenoiser {
    /// Opens a FLUX transformer for latents of `shape` (C × H × W, H and W even).
    pub fn load(
        path: &Path,
        shape: [usize; 3],
        options: &OnnxOptions,
    ) -> Result<Self, EngineError> {
        let model = OnnxModel::open(path, options)?;
        let problem = |what: String| {
            EngineError::Options(format!(
                "{}: a FLUX transformer takes {} (and `guidance` when guidance-distilled) and returns `{OUTPUT}`; {what}",
                path.display(),
                INPUTS.join(", ")
            ))
        };
        let find = |name: &str| model.inputs().iter().find(|s| s.name == name).cloned();
        let inputs = INPUTS
            .iter()
            .map(|&name| find(name).ok_or_else(|| problem(format!("it has no `{name}`"))))
            .collect::<Result<Vec<_>, _>>()?;
        if !model.outputs().iter().any(|o| o.name == OUTPUT) {
            return Err(problem(format!("it has no output `{OUTPUT}`")));
        }
        let [c, h, w] = shape;
        if !(h.is_multiple_of(2) && w.is_multiple_of(2)) || c == 0 {
            return Err(problem(format!(
                "latents {c}×{h}×{w} do not pack into 2×2 patches: give [model] sample_shape with an even height and width"
            )));
        }
        Ok(Self {
            guidance_input: find("guidance"),
            model,
            shape,
            inputs,
            conditions: Vec::new(),
            guidance: Vec::new(),
            runs: 0,
        })
    }

    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// The patch grid: rows and columns of 2×2 patches.
    fn patches(&self) -> (usize, usize) {
        (self.shape[1] / 2, self.shape[2] / 2)
    }

    /// The T5 states and pooled CLIP output of each item's row.
    fn text(&self, rows: &[usize]) -> Result<Text, DenoiseError> {
        let missing = || {
            DenoiseError::Condition(
                "a FLUX transformer needs prompts: each item's T5 states and pooled CLIP output"
                    .into(),
            )
        };
        let mut text = Text::default();
        for &r in rows {
            let c = self.conditions.get(r).ok_or_else(missing)?;
            let (s, p) = (
                c.hidden_states.as_ref().ok_or_else(missing)?,
                c.text_embeds.as_ref().ok_or_else(missing)?,
            );
            (text.tokens, text.width, text.pooled_width) = (s.shape[0], s.shape[1], p.data.len());
            text.states.extend_from_slice(&s.data);
            text.pooled.extend_from_slice(&p.data);
        }
        if text.states.len() != rows.len() * text.tokens * text.width {
            return Err(DenoiseError::Condition(
                "the prompts' T5 states differ in length; encode them at one max_sequence_length"
                    .into(),
            ));
        }
        Ok(text)
    }
}

/// A batch's text conditioning: T5 states (tokens × width each) and pooled CLIP outputs.
#[derive(Default)]
struct Text {
    states: Vec<f32>,
    tokens: usize,
    width: usize,
    pooled: Vec<f32>,
    pooled_width: usize,
}

impl Denoiser for FluxDenoiser {
    fn info(&self) -> DenoiserInfo {
        DenoiserInfo {
            name: self.model.file_name(),
            provider: self.model.provider().ort_name().to_string(),
            sample_shape: self.shape,
            frames: 1,
            extra_channels: 0,
            prediction_type: PredictionType::FlowPrediction,
        }
    }

    fn predict(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let rows = vec![0; timesteps.len()];
        self.predict_with(sample, timesteps, &rows, out)
    }

    fn runs(&self) -> Option<usize> {
        Some(self.runs)
    }

    fn is_conditional(&self) -> bool {
        true
    }

    fn embeds_guidance(&self) -> bool {
        self.guidance_input.is_some()
    }

    fn set_guidance(&mut self, per_item: &[f32]) {
        self.guidance = per_item.to_vec();
    }

    fn set_conditions(&mut self, conditions: Vec<Condition>) -> Result<(), DenoiseError> {
        self.conditions = conditions;
        Ok(())
    }

    fn predict_with(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        rows: &[usize],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let b = checked_batch(sample, out, self.shape, timesteps.len())?;
        let Text {
            states,
            tokens,
            width,
            pooled,
            pooled_width,
        } = self.text(rows)?;
        let (ph, pw) = self.patches();
        let (patches, packed_width) = ((ph * pw) as i64, (4 * self.shape[0]) as i64);
        let b64 = b as i64;
        let img_ids = (0..ph * pw).flat_map(|t| [0.0, (t / pw) as f64, (t % pw) as f64]);
        // FluxPipeline feeds t / 1000 in float32, and the guidance scale as given.
        let t: Vec<f64> = timesteps
            .iter()
            .map(|&t| ((t as f32) / 1000.0) as f64)
            .collect();
        let guidance: Vec<f64> = (0..b)
            .map(|i| self.guidance.get(i).copied().unwrap_or(1.0) as f64)
            .collect();
        let values: [(Vec<f64>, Vec<i64>); 6] = [
            (
                pack_latents(sample, self.shape)
                    .into_iter()
                    .map(f64::from)
                    .collect(),
                vec![b64, patches, packed_width],
            ),
            (
                states.into_iter().map(f64::from).collect(),
                vec![b64, tokens as i64, width as i64],
            ),
            (
                pooled.into_iter().map(f64::from).collect(),
                vec![b64, pooled_width as i64],
            ),
            (t, vec![b64]),
            (img_ids.collect(), vec![patches, 3]),
            (vec![0.0; tokens * 3], vec![tokens as i64, 3]),
        ];
        let model_err = |e: ort::Error| DenoiseError::Model(e.to_string());
        let mut bufs: Vec<(TypedBuf, Vec<i64>, &str)> = Vec::new();
        for ((data, dims), spec) in values.into_iter().zip(&self.inputs) {
            let mut buf = TypedBuf::default();
            buf.fill(spec.elem, data.into_iter());
            bufs.push((buf, dims, spec.name.as_str()));
        }
        if let Some(spec) = &self.guidance_input {
            let mut buf = TypedBuf::default();
            buf.fill(spec.elem, guidance.into_iter());
            bufs.push((buf, vec![b64], spec.name.as_str()));
        }
        let inputs = bufs
            .iter()
            .map(|(buf, dims, name)| Ok((name.to_string(), buf.view(dims)?)))
            .collect::<ort::Result<Vec<_>>>()
            .map_err(model_err)?;
        let outputs = self.model.session.run(inputs).map_err(model_err)?;
        self.runs += 1;
        let value = outputs
            .get(OUTPUT)
            .ok_or_else(|| DenoiseError::Model(format!("the model returned no '{OUTPUT}'")))?;
        let (shape, data) = read_floats(value).map_err(model_err)?;
        if shape != [b64, patches, packed_width] {
            return Err(DenoiseError::OutputShape {
                name: OUTPUT.into(),
                got: shape,
                expected: vec![b, patches as usize, packed_width as usize],
            });
        }
        unpack_latents(&data, self.shape, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{pack_latents, unpack_latents};

    /// Packing as diffusers does it: the 2×2 patch (dy, dx) of channel c lands at c·4 + dy·2 + dx, and
    /// unpacking restores the latents.
    #[test]
    fn packing_follows_diffusers_layout_and_unpacks() {
        // One item, 1 channel, 2×4 latents: two patches side by side.
        let latent: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let packed = pack_latents(&latent, [1, 2, 4]);
        // Patch 0 is rows 0-1, columns 0-1: values 0, 1, 4, 5.
        assert_eq!(packed, [0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]);
        let two: Vec<f32> = (0..64).map(|v| v as f32).collect();
        let mut back = vec![0.0; 64];
        unpack_latents(&pack_latents(&two, [2, 4, 4]), [2, 4, 4], &mut back);
        assert_eq!(back, two);
    }
}
