//! A ControlNet exported on its own beside a U-Net exported to take its residuals: each call runs the ControlNet on
//! the noisy sample, the timestep, the text states, the control image and the scale, and feeds its outputs to the
//! U-Net's inputs of the same names (as `StableDiffusionControlNetPipeline` passes `down_block_res_samples` and
//! `mid_block_res_sample`).

use std::path::Path;

use super::condition::Condition;
use super::denoiser::{DenoiseError, Denoiser, DenoiserInfo, gather, groups_by, scatter};
use super::error::EngineError;
use super::floats::{FloatBuf, read_floats};
use super::onnx::{Fed, OnnxDenoiser};
use super::roles::{Role, TensorSpec};
use super::session::{OnnxModel, OnnxOptions};

/// The U-Net and the ControlNet that feeds it.
pub struct ControlNetPair {
    unet: OnnxDenoiser,
    controlnet: OnnxModel,
    /// The ControlNet's inputs: sample, timestep, text states, control image, scale.
    inputs: [TensorSpec; 5],
    /// Its outputs, each an input of the U-Net.
    residuals: Vec<String>,
    conditions: Vec<Condition>,
    images: Vec<f32>,
    scales: Vec<f32>,
    bufs: [FloatBuf; 5],
}

impl ControlNetPair {
    /// Opens the ControlNet, then the U-Net with the ControlNet's outputs as inputs it is fed.
    pub fn load(
        unet: &Path,
        controlnet: &Path,
        options: &OnnxOptions,
    ) -> Result<Self, EngineError> {
        let model = OnnxModel::open(controlnet, options)?;
        let problem = |what: String| {
            EngineError::Options(format!(
                "{}: a ControlNet takes the noisy sample, the timestep, the text states, the control image and its \
                 scale, and returns the residuals the U-Net takes; {what}",
                controlnet.display()
            ))
        };
        let find = |role: Role| {
            let names = role.known_names();
            (model.inputs().iter())
                .find(|s| names.iter().any(|n| n.eq_ignore_ascii_case(&s.name)))
                .cloned()
                .ok_or_else(|| problem(format!("it has no input for the {role}")))
        };
        let inputs = [
            find(Role::Sample)?,
            find(Role::Timestep)?,
            find(Role::Conditioning)?,
            find(Role::ControlImage)?,
            find(Role::ControlScale)?,
        ];
        let residuals: Vec<String> = model.outputs().iter().map(|o| o.name.clone()).collect();
        let mut unet_options = options.clone();
        unet_options.fed_inputs = residuals.clone();
        let unet = OnnxDenoiser::load(unet, &unet_options)?;
        if let Some(missing) = residuals.iter().find(|r| !unet.fed_names().contains(r)) {
            return Err(problem(format!(
                "its output '{missing}' is no input of the U-Net {} (its residual inputs must have the same names)",
                unet.path().display()
            )));
        }
        Ok(Self {
            unet,
            controlnet: model,
            inputs,
            residuals,
            conditions: Vec::new(),
            images: Vec::new(),
            scales: Vec::new(),
            bufs: Default::default(),
        })
    }

    pub fn unet(&self) -> &OnnxDenoiser {
        &self.unet
    }

    /// The ControlNet's residuals for `n` items at one timestep and scale.
    fn residuals(
        &mut self,
        sample: &[f32],
        t: f64,
        rows: &[usize],
        (images, scale): (&[f32], f32),
    ) -> Result<Vec<Fed>, DenoiseError> {
        let n = rows.len();
        let model_err = |e: ort::Error| DenoiseError::Model(e.to_string());
        let [c, h, w] = self.unet.info().sample_shape;
        let states: Vec<&Condition> = rows.iter().map(|&r| &self.conditions[r]).collect();
        let shape = states
            .first()
            .and_then(|s| s.hidden_states.as_ref())
            .map(|s| s.shape.clone());
        let Some(shape) = shape else {
            return Err(DenoiseError::Condition(
                "the ControlNet takes text states: give prompts".into(),
            ));
        };
        let side = ((images.len() / n.max(1) / 3) as f64 / (h * w) as f64)
            .sqrt()
            .round() as i64;
        let per_call = |spec: &TensorSpec| match spec.dims.first() {
            Some(super::roles::Dim::Symbolic(_)) => n,
            _ => 1,
        };
        let timesteps = vec![t as f32; per_call(&self.inputs[1])];
        let dims: [Vec<i64>; 5] = [
            vec![n as i64, c as i64, h as i64, w as i64],
            (self.inputs[1].dims.iter().map(|_| timesteps.len() as i64)).collect(),
            std::iter::once(n as i64)
                .chain(shape.iter().map(|&d| d as i64))
                .collect(),
            vec![n as i64, 3, h as i64 * side, w as i64 * side],
            self.inputs[4].dims.iter().map(|_| 1).collect(),
        ];
        let data: [Vec<f32>; 5] = [
            sample.to_vec(),
            timesteps,
            states
                .iter()
                .flat_map(|s| s.hidden_states.iter().flat_map(|h| h.data.iter().copied()))
                .collect(),
            images.to_vec(),
            vec![scale],
        ];
        for ((buf, spec), values) in self.bufs.iter_mut().zip(&self.inputs).zip(&data) {
            buf.reset(spec.elem);
            buf.push(values);
        }
        let values = (self.bufs.iter().zip(&dims))
            .map(|(buf, dims)| buf.view(dims))
            .collect::<ort::Result<Vec<_>>>()
            .map_err(model_err)?;
        let feed: Vec<(&str, _)> = self
            .inputs
            .iter()
            .map(|s| s.name.as_str())
            .zip(values)
            .collect();
        let outputs = self.controlnet.session.run(feed).map_err(model_err)?;
        self.residuals
            .iter()
            .map(|name| {
                let (dims, data) = read_floats(&outputs[name.as_str()]).map_err(model_err)?;
                Ok(Fed {
                    name: name.clone(),
                    dims,
                    data,
                })
            })
            .collect()
    }
}

impl Denoiser for ControlNetPair {
    fn info(&self) -> DenoiserInfo {
        self.unet.info()
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

    fn set_conditions(&mut self, conditions: Vec<Condition>) -> Result<(), DenoiseError> {
        self.unet.set_conditions(conditions.clone())?;
        self.conditions = conditions;
        Ok(())
    }

    fn is_conditional(&self) -> bool {
        self.unet.is_conditional()
    }

    fn runs(&self) -> Option<usize> {
        self.unet.runs()
    }

    fn takes_control(&self) -> bool {
        true
    }

    fn set_control(&mut self, images: &[f32], scales: &[f32]) {
        (self.images, self.scales) = (images.to_vec(), scales.to_vec());
    }

    /// The items go in groups of one timestep and scale: the ControlNet's residuals for a group, then the U-Net
    /// on the same group with them.
    fn predict_with(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        rows: &[usize],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let n = timesteps.len();
        if self.scales.len() != n || !sample.len().is_multiple_of(n.max(1)) {
            return Err(DenoiseError::Condition(format!(
                "the ControlNet has control for {} items; the call has {n}",
                self.scales.len()
            )));
        }
        let (per_in, per_out, per_image) = (sample.len() / n, out.len() / n, self.images.len() / n);
        let scales = self.scales.clone();
        for group in groups_by(n, |i| (timesteps[i], scales[i])) {
            let (t, scale) = (timesteps[group[0]], scales[group[0]]);
            let part = gather(sample, &group, per_in);
            let images = gather(&self.images, &group, per_image);
            let part_rows: Vec<usize> = group.iter().map(|&i| rows[i]).collect();
            let fed = self.residuals(&part, t, &part_rows, (&images, scale))?;
            self.unet.set_fed(fed);
            let mut part_out = vec![0.0; group.len() * per_out];
            let ts = vec![t; group.len()];
            let ran = self
                .unet
                .predict_with(&part, &ts, &part_rows, &mut part_out);
            self.unet.set_fed(Vec::new());
            ran?;
            scatter(&part_out, &group, per_out, out);
        }
        Ok(())
    }
}
