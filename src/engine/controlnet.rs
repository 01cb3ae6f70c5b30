//! ControlNets exported on their own beside a U-Net exported to take their residuals: each call runs every
//! ControlNet on the noisy sample, the timestep, the text states, its control image and its scale, sums their
//! outputs by name (as diffusers' `MultiControlNetModel` sums the residuals) and feeds the sums to the U-Net's
//! inputs of the same names (as `StableDiffusionControlNetPipeline` passes `down_block_res_samples` and
//! `mid_block_res_sample`).

use std::path::{Path, PathBuf};

use super::condition::Condition;
use super::denoiser::{DenoiseError, Denoiser, DenoiserInfo, gather, groups_by, scatter};
use super::error::EngineError;
use super::floats::{FloatBuf, read_floats};
use super::onnx::{Fed, OnnxDenoiser};
use super::roles::{Dim, Role, TensorSpec};
use super::session::{OnnxModel, OnnxOptions};

/// One ControlNet exported on its own: its session, its inputs and its outputs.
struct SeparateControlNet {
    model: OnnxModel,
    path: PathBuf,
    /// Its inputs: sample, timestep, text states, control image, scale.
    inputs: [TensorSpec; 5],
    /// Its outputs, each an input of the U-Net.
    residuals: Vec<String>,
    bufs: [FloatBuf; 5],
}

/// What one group of items takes: its sample, timestep, condition rows, and control images and scale of one
/// ControlNet.
struct GroupInput<'a> {
    sample: &'a [f32],
    t: f64,
    states: &'a [&'a Condition],
    images: &'a [f32],
    scale: f32,
}

/// The U-Net and the ControlNets that feed it.
pub struct ControlNetPair {
    unet: OnnxDenoiser,
    nets: Vec<SeparateControlNet>,
    conditions: Vec<Condition>,
    images: Vec<f32>,
    scales: Vec<f32>,
}

impl SeparateControlNet {
    fn open(path: &Path, options: &OnnxOptions) -> Result<Self, EngineError> {
        let model = OnnxModel::open(path, options)?;
        let find = |role: Role| {
            let names = role.known_names();
            (model.inputs().iter())
                .find(|s| names.iter().any(|n| n.eq_ignore_ascii_case(&s.name)))
                .cloned()
                .ok_or_else(|| problem(path, format!("it has no input for the {role}")))
        };
        let inputs = [
            find(Role::Sample)?,
            find(Role::Timestep)?,
            find(Role::Conditioning)?,
            find(Role::ControlImage)?,
            find(Role::ControlScale)?,
        ];
        let residuals = model.outputs().iter().map(|o| o.name.clone()).collect();
        Ok(Self {
            model,
            path: path.to_path_buf(),
            inputs,
            residuals,
            bufs: Default::default(),
        })
    }

    /// Its residuals for one group of items.
    fn residuals(
        &mut self,
        [c, h, w]: [usize; 3],
        group: &GroupInput<'_>,
    ) -> Result<Vec<Fed>, DenoiseError> {
        let n = group.states.len();
        let model_err = |e: ort::Error| DenoiseError::Model(e.to_string());
        let shape = (group.states.first())
            .and_then(|s| s.hidden_states.as_ref())
            .map(|s| s.shape.clone());
        let Some(shape) = shape else {
            return Err(DenoiseError::Condition(
                "the ControlNet takes text states: give prompts".into(),
            ));
        };
        let side = ((group.images.len() / n.max(1) / 3) as f64 / (h * w) as f64)
            .sqrt()
            .round() as i64;
        let timesteps = match self.inputs[1].dims.first() {
            Some(Dim::Symbolic(_)) => vec![group.t as f32; n],
            _ => vec![group.t as f32],
        };
        let dims: [Vec<i64>; 5] = [
            vec![n as i64, c as i64, h as i64, w as i64],
            (self.inputs[1].dims.iter().map(|_| timesteps.len() as i64)).collect(),
            std::iter::once(n as i64)
                .chain(shape.iter().map(|&d| d as i64))
                .collect(),
            vec![n as i64, 3, h as i64 * side, w as i64 * side],
            self.inputs[4].dims.iter().map(|_| 1).collect(),
        ];
        let states = (group.states.iter())
            .flat_map(|s| s.hidden_states.iter().flat_map(|h| h.data.iter().copied()));
        let data: [Vec<f32>; 5] = [
            group.sample.to_vec(),
            timesteps,
            states.collect(),
            group.images.to_vec(),
            vec![group.scale],
        ];
        for ((buf, spec), values) in self.bufs.iter_mut().zip(&self.inputs).zip(&data) {
            buf.reset(spec.elem);
            buf.push(values);
        }
        let values = (self.bufs.iter().zip(&dims))
            .map(|(buf, dims)| buf.view(dims))
            .collect::<ort::Result<Vec<_>>>()
            .map_err(model_err)?;
        let names = self.inputs.iter().map(|s| s.name.as_str());
        let feed: Vec<(&str, _)> = names.zip(values).collect();
        let outputs = self.model.session.run(feed).map_err(model_err)?;
        (self.residuals.iter())
            .map(|name| {
                let (dims, data) = read_floats(&outputs[name.as_str()]).map_err(model_err)?;
                let name = name.clone();
                Ok(Fed { name, dims, data })
            })
            .collect()
    }
}

/// What a file that is not a ControlNet the U-Net can take is told.
fn problem(path: &Path, what: String) -> EngineError {
    EngineError::Options(format!(
        "{}: a ControlNet takes the noisy sample, the timestep, the text states, the control image and its scale, \
         and returns the residuals the U-Net takes; {what}",
        path.display()
    ))
}

impl ControlNetPair {
    /// Opens the ControlNets, then the U-Net with the ControlNets' outputs as inputs it is fed. Every ControlNet
    /// returns the same residuals.
    pub fn load(
        unet: &Path,
        controlnets: &[PathBuf],
        options: &OnnxOptions,
    ) -> Result<Self, EngineError> {
        let nets = (controlnets.iter())
            .map(|path| SeparateControlNet::open(path, options))
            .collect::<Result<Vec<_>, _>>()?;
        let residuals = nets[0].residuals.clone();
        for net in &nets[1..] {
            let (mut theirs, mut first) = (net.residuals.clone(), residuals.clone());
            theirs.sort();
            first.sort();
            if theirs != first {
                return Err(problem(
                    &net.path,
                    format!(
                        "its outputs {theirs:?} are not those of {} ({first:?}): ControlNets that feed one U-Net \
                         return the same residuals",
                        nets[0].path.display()
                    ),
                ));
            }
        }
        let mut unet_options = options.clone();
        unet_options.fed_inputs = residuals.clone();
        let unet = OnnxDenoiser::load(unet, &unet_options)?;
        if let Some(missing) = residuals.iter().find(|r| !unet.fed_names().contains(r)) {
            return Err(problem(
                &nets[0].path,
                format!(
                    "its output '{missing}' is no input of the U-Net {} (its residual inputs must have the same \
                     names)",
                    unet.path().display()
                ),
            ));
        }
        Ok(Self {
            unet,
            nets,
            conditions: Vec::new(),
            images: Vec::new(),
            scales: Vec::new(),
        })
    }

    pub fn unet(&self) -> &OnnxDenoiser {
        &self.unet
    }

    /// The sum of every ControlNet's residuals for one group of items (`images`: each item's image for every
    /// ControlNet in turn; `scales`: the group's scale for each ControlNet).
    fn summed_residuals(
        &mut self,
        (sample, t, rows): (&[f32], f64, &[usize]),
        images: &[f32],
        scales: &[f32],
    ) -> Result<Vec<Fed>, DenoiseError> {
        let shape = self.unet.info().sample_shape;
        let states: Vec<&Condition> = rows.iter().map(|&r| &self.conditions[r]).collect();
        let nets = self.nets.len();
        let per_image = images.len() / rows.len().max(1) / nets;
        let mut summed: Vec<Fed> = Vec::new();
        for (k, net) in self.nets.iter_mut().enumerate() {
            let mine: Vec<f32> = (images.chunks(per_image))
                .skip(k)
                .step_by(nets)
                .flatten()
                .copied()
                .collect();
            let group = GroupInput {
                sample,
                t,
                states: &states,
                images: &mine,
                scale: scales[k],
            };
            let residuals = net.residuals(shape, &group)?;
            if summed.is_empty() {
                summed = residuals;
                continue;
            }
            for fed in residuals {
                // Every ControlNet returns the same residuals (checked at load).
                if let Some(to) = summed.iter_mut().find(|s| s.name == fed.name) {
                    for (a, b) in to.data.iter_mut().zip(&fed.data) {
                        *a += b;
                    }
                }
            }
        }
        Ok(summed)
    }
    /// Each group of items at one timestep and one set of scales: the ControlNets' summed residuals, then the
    /// U-Net on the group with them.
    fn run_groups(
        &mut self,
        (sample, timesteps, rows): (&[f32], &[f64], &[usize]),
        (images, scales): (&[f32], &[f32]),
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let (n, nets) = (timesteps.len(), self.nets.len());
        let (per_in, per_out, per_item) = (sample.len() / n, out.len() / n, images.len() / n);
        let at = |i: usize| &scales[i * nets..(i + 1) * nets];
        for group in groups_by(n, |i| (timesteps[i], at(i))) {
            let t = timesteps[group[0]];
            let part = gather(sample, &group, per_in);
            let part_rows: Vec<usize> = group.iter().map(|&i| rows[i]).collect();
            let part_images = gather(images, &group, per_item);
            let fed = self.summed_residuals((&part, t, &part_rows), &part_images, at(group[0]))?;
            self.unet.set_fed(fed);
            let mut part_out = vec![0.0; group.len() * per_out];
            let ts = vec![t; group.len()];
            let ran = (self.unet).predict_with(&part, &ts, &part_rows, &mut part_out);
            self.unet.set_fed(Vec::new());
            ran?;
            scatter(&part_out, &group, per_out, out);
        }
        Ok(())
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

    fn controlnets(&self) -> usize {
        self.nets.len()
    }

    fn set_control(&mut self, images: &[f32], scales: &[f32]) {
        (self.images, self.scales) = (images.to_vec(), scales.to_vec());
    }

    /// The items go in groups of one timestep and one set of scales: the ControlNets' summed residuals for a
    /// group, then the U-Net on the same group with them.
    fn predict_with(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        rows: &[usize],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let (n, nets) = (timesteps.len(), self.nets.len());
        if self.scales.len() != n * nets || !sample.len().is_multiple_of(n.max(1)) {
            return Err(DenoiseError::Condition(format!(
                "the ControlNets have scales for {} items; the call has {n}",
                self.scales.len() / nets
            )));
        }
        // The control is taken out while the groups run (they borrow it), and put back even after an error.
        let control = (
            std::mem::take(&mut self.images),
            std::mem::take(&mut self.scales),
        );
        let ran = self.run_groups((sample, timesteps, rows), (&control.0, &control.1), out);
        (self.images, self.scales) = control;
        ran
    }
}
