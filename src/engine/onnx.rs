//! [`OnnxDenoiser`]: a diffusion model exported to ONNX, run by ONNX Runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, SessionOutputs};

use super::condition::{Condition, ItemTensor, check_fits, fixed_item_shape};
use super::denoiser::{
    DenoiseError, Denoiser, DenoiserInfo, batch_size, checked_batch, gather, groups_by, scatter,
};
use super::error::EngineError;
use super::floats::{FloatBuf, read_floats};
use super::model_file::check_model_file;
use super::packing::{Scratch, tensor_owned};
use super::providers::{ProviderAttempt, ProviderKind};
use super::roles::{ElemType, ModelRoles, Role, TensorSpec, assign_video_roles};
use super::runtime::RuntimeInfo;
use super::session::{OnnxModel, OnnxOptions};
use crate::sampler::PredictionType;

/// Where the prediction type came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PredictionSource {
    /// The caller's options.
    Given,
    /// The `prediction_type` key of this `scheduler_config.json`.
    SchedulerConfig(PathBuf),
    /// Neither: diffusers' default, epsilon.
    Default,
}

impl fmt::Display for PredictionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PredictionSource::Given => f.write_str("given"),
            PredictionSource::SchedulerConfig(p) => write!(f, "from {}", p.display()),
            PredictionSource::Default => f.write_str(
                "default; no scheduler_config.json beside the model or in its pipeline folder",
            ),
        }
    }
}

/// A diffusion model in an ONNX file, run by ONNX Runtime on the first execution provider that works.
///
/// ```no_run
/// use difflab::engine::{Denoiser, OnnxDenoiser, OnnxOptions, ProviderKind};
///
/// let mut options = OnnxOptions::default();
/// options.providers.preference = vec![ProviderKind::Cuda, ProviderKind::Cpu];
/// let mut model = OnnxDenoiser::load("unet.onnx", &options)?;
/// println!("runs on {}", model.provider());
/// let [c, h, w] = model.info().sample_shape;
/// let sample = vec![0.0f32; 2 * c * h * w];
/// let mut eps = vec![0.0f32; sample.len()];
/// model.predict(&sample, &[999.0, 999.0], &mut eps)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct OnnxDenoiser {
    model: OnnxModel,
    roles: ModelRoles,
    prediction_type: PredictionType,
    prediction_source: PredictionSource,
    /// The rows batch items are conditioned on (see [`Denoiser::predict_with`]).
    conditions: Vec<Condition>,
    scratch: Scratch,
    /// The session's inputs, the conditioning bound once per set of conditions and batch rows.
    binding: Option<IoBinding>,
    /// The batch rows whose conditions are bound; `None` after the conditions change.
    bound_rows: Option<Vec<usize>>,
    /// Session runs so far.
    runs: usize,
    /// A ControlNet graph's control image and scale for each item of the next call.
    control: Control,
    /// Inputs another network feeds (a ControlNet's residuals) and their values for the next call.
    fed: FedInputs,
}

/// One value another network feeds a denoiser's input: batch first.
#[derive(Debug, Clone)]
pub struct Fed {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: Vec<f32>,
}

#[derive(Default)]
struct FedInputs {
    specs: Vec<TensorSpec>,
    values: Vec<Fed>,
    buf: FloatBuf,
}

impl FedInputs {
    /// Binds items `first..first + n` of each fed value (padded to `m` with the last).
    fn bind(
        &mut self,
        binding: &mut IoBinding,
        first: usize,
        n: usize,
        m: usize,
    ) -> ort::Result<()> {
        for value in &self.values {
            let Some(spec) = self.specs.iter().find(|s| s.name == value.name) else {
                continue;
            };
            let total = value.dims.first().copied().unwrap_or(1).max(1) as usize;
            let per = value.data.len() / total;
            self.buf.reset(spec.elem);
            for i in 0..m {
                let k = first + i.min(n - 1);
                self.buf.push(&value.data[k * per..(k + 1) * per]);
            }
            let mut dims = value.dims.clone();
            dims[0] = m as i64;
            binding.bind_input(value.name.as_str(), &self.buf.owned(&dims)?)?;
        }
        Ok(())
    }
}

/// What a ControlNet graph takes beside each item: its control images and scales (one per ControlNet, item by
/// item), and their input buffers.
#[derive(Default)]
struct Control {
    nets: usize,
    images: Vec<f32>,
    scales: Vec<f32>,
    image_buf: FloatBuf,
    scale_buf: FloatBuf,
}

impl fmt::Debug for OnnxDenoiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxDenoiser")
            .field("path", &self.model.path())
            .field("provider", &self.model.provider())
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl OnnxDenoiser {
    /// Loads ONNX Runtime if needed (see [`runtime`](mod@super::runtime)), opens the model on the first provider that works,
    /// maps its inputs and outputs to roles, and reads the prediction type.
    pub fn load(path: impl AsRef<Path>, options: &OnnxOptions) -> Result<Self, EngineError> {
        let path = path.as_ref();
        check_model_file(path)?;
        let (prediction_type, prediction_source) = prediction_type(path, options.prediction_type)?;
        let model = OnnxModel::open(path, options)?;
        // Inputs another network feeds take no role.
        let (fed, own): (Vec<TensorSpec>, Vec<TensorSpec>) =
            (model.inputs().iter().cloned()).partition(|s| options.fed_inputs.contains(&s.name));
        let hint = (options.sample_shape, options.frames);
        let roles =
            assign_video_roles(&own, model.outputs(), &options.roles, hint).map_err(|problem| {
                EngineError::Roles {
                    path: path.to_path_buf(),
                    problem,
                }
            })?;
        let integer = matches!(roles.timestep.elem, ElemType::I64 | ElemType::I32);
        if prediction_type == PredictionType::Score && integer {
            return Err(EngineError::Options(format!(
                "{}: a score model takes σ as its timestep, but the graph's `{}` is an integer input; export it \
                 with a float timestep",
                path.display(),
                roles.timestep.name
            )));
        }
        Ok(Self {
            model,
            roles,
            prediction_type,
            prediction_source,
            conditions: Vec::new(),
            scratch: Scratch::default(),
            binding: None,
            bound_rows: None,
            runs: 0,
            control: Control::default(),
            fed: FedInputs {
                specs: fed,
                ..FedInputs::default()
            },
        })
    }

    /// The inputs another network feeds.
    pub fn fed_names(&self) -> Vec<String> {
        self.fed.specs.iter().map(|s| s.name.clone()).collect()
    }

    /// Zeros for every fed input at a batch of `batch` (the other dimensions as the graph fixes them), for timing
    /// the model alone.
    pub fn fed_zeros(&self, batch: usize) -> Vec<Fed> {
        (self.fed.specs.iter())
            .map(|spec| {
                let dims: Vec<i64> = (spec.dims.iter().enumerate())
                    .map(|(i, d)| match (i, d) {
                        (0, _) => batch as i64,
                        (_, super::roles::Dim::Fixed(n)) => *n as i64,
                        _ => 1,
                    })
                    .collect();
                let len = dims.iter().product::<i64>().max(0) as usize;
                Fed {
                    name: spec.name.clone(),
                    dims,
                    data: vec![0.0; len],
                }
            })
            .collect()
    }

    /// What the fed inputs hold for the next call (batch first, as the call's items).
    pub fn set_fed(&mut self, values: Vec<Fed>) {
        self.fed.values = values;
    }

    pub fn path(&self) -> &Path {
        self.model.path()
    }

    /// The loaded ONNX Runtime.
    pub fn runtime(&self) -> &'static RuntimeInfo {
        self.model.runtime()
    }

    /// All declared inputs, in the model's order.
    pub fn inputs(&self) -> &[TensorSpec] {
        self.model.inputs()
    }

    /// All declared outputs, in the model's order.
    pub fn outputs(&self) -> &[TensorSpec] {
        self.model.outputs()
    }

    pub fn roles(&self) -> &ModelRoles {
        &self.roles
    }

    /// The provider the session runs on.
    pub fn provider(&self) -> ProviderKind {
        self.model.provider()
    }

    /// Each requested provider and what became of it, in the order of preference.
    pub fn attempts(&self) -> &[ProviderAttempt] {
        self.model.attempts()
    }

    pub fn prediction_source(&self) -> &PredictionSource {
        &self.prediction_source
    }

    /// See [`OnnxModel::nodes_per_provider`].
    pub fn nodes_per_provider(&mut self) -> Result<Option<BTreeMap<String, usize>>, EngineError> {
        self.model.nodes_per_provider()
    }

    /// Class labels for a class-conditional model: one label for the whole batch, or one per batch item.
    /// The default is label 0. Ignored by models without a class-label input.
    pub fn set_class_labels(&mut self, labels: &[i64]) -> Result<(), EngineError> {
        if labels.is_empty() {
            return Err(EngineError::Options("no class labels given".into()));
        }
        self.update_rows(labels.len(), |c, i| c.class_label = Some(labels[i]));
        Ok(())
    }

    /// Conditioning (e.g. text-encoder hidden states) for a model with a conditioning input: `data` holds one item
    /// (shared by the whole batch) or one per batch item, each of the input's shape after the batch dim. Without it
    /// the engine feeds zeros, which needs the input's item shape to be fixed.
    pub fn set_conditioning(&mut self, data: Vec<f32>) -> Result<(), EngineError> {
        let spec = self.conditioning_spec()?;
        let item_shape = fixed_item_shape(spec).ok_or_else(|| {
            EngineError::Options(format!(
                "the conditioning input {} has dynamic dims after the batch; give its shape with set_conditioning_shaped",
                spec.describe()
            ))
        })?;
        self.set_conditioning_shaped(data, &item_shape)
    }

    /// [`Self::set_conditioning`] with an explicit item shape, for inputs with dynamic dims (e.g. token count).
    pub fn set_conditioning_shaped(
        &mut self,
        data: Vec<f32>,
        item_shape: &[usize],
    ) -> Result<(), EngineError> {
        let spec = self.conditioning_spec()?;
        let per_item: usize = item_shape.iter().product();
        let item = ItemTensor::zeros(item_shape.to_vec());
        let fits = check_fits(&item, spec);
        if fits.is_err() || per_item == 0 || data.is_empty() || !data.len().is_multiple_of(per_item)
        {
            return Err(EngineError::Options(format!(
                "conditioning of {} values with item shape {item_shape:?} does not fit the input {}",
                data.len(),
                spec.describe()
            )));
        }
        let items: Vec<_> = data
            .chunks(per_item)
            .map(|d| ItemTensor::new(item_shape.to_vec(), d.to_vec()))
            .collect();
        self.update_rows(items.len(), |c, i| c.hidden_states = Some(items[i].clone()));
        Ok(())
    }

    fn conditioning_spec(&self) -> Result<&TensorSpec, EngineError> {
        self.roles.conditioning.as_ref().ok_or_else(|| {
            EngineError::Options(format!(
                "{} has no conditioning input",
                self.model.file_name()
            ))
        })
    }

    /// Sets one field of `n` rows (one row: shared by the batch), keeping the other fields of the rows there are.
    fn update_rows(&mut self, n: usize, mut set: impl FnMut(&mut Condition, usize)) {
        self.bound_rows = None;
        if n == 1 && !self.conditions.is_empty() {
            self.conditions.iter_mut().for_each(|c| set(c, 0));
            return;
        }
        if self.conditions.len() != n {
            let base = match self.conditions.as_slice() {
                [one] => one.clone(),
                _ => Condition::default(),
            };
            self.conditions = vec![base; n];
        }
        for (i, c) in self.conditions.iter_mut().enumerate() {
            set(c, i);
        }
    }

    /// Checks that every value of every condition fits an input the model has.
    fn check_conditions(&self, conditions: &[Condition]) -> Result<(), DenoiseError> {
        let name = self.model.file_name();
        for condition in conditions {
            if condition.class_label.is_some() && self.roles.class_labels.is_none() {
                return Err(DenoiseError::Condition(format!(
                    "{name} takes no class labels (its inputs: {})",
                    self.input_names()
                )));
            }
            for role in Role::TENSOR_CONDITIONS {
                let Some(value) = condition.tensor(role) else {
                    continue;
                };
                let spec = self.roles.spec(role).ok_or_else(|| {
                    DenoiseError::Condition(format!(
                        "{name} has no input for the {role} (its inputs: {})",
                        self.input_names()
                    ))
                })?;
                check_fits(value, spec)
                    .map_err(|e| DenoiseError::Condition(format!("{name}: {e}")))?;
            }
        }
        Ok(())
    }

    fn input_names(&self) -> String {
        let names: Vec<&str> = self.inputs().iter().map(|s| s.name.as_str()).collect();
        names.join(", ")
    }

    /// Runs a batch whose timesteps the model can take together, in chunks of a fixed-batch model's size.
    fn run_batch(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        rows: &[usize],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let per_input: usize = self.roles.input_shape().iter().product();
        let per_item: usize = self.roles.sample_shape.iter().product();
        let chunk = self.roles.fixed_batch.unwrap_or(usize::MAX).max(1);
        let mut start = 0;
        while start < timesteps.len() {
            let end = (start + chunk).min(timesteps.len());
            self.run_chunk(
                &sample[start * per_input..end * per_input],
                &timesteps[start..end],
                (&rows[start..end], start),
                &mut out[start * per_item..end * per_item],
            )?;
            start = end;
        }
        Ok(())
    }

    /// A model with a scalar timestep runs once per distinct timestep: each group's items are gathered, run
    /// together and scattered back.
    fn run_grouped(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        rows: &[usize],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let per_input: usize = self.roles.input_shape().iter().product();
        let per_item: usize = self.roles.sample_shape.iter().product();
        // A ControlNet graph takes one scale a call too.
        let (scales, nets) = (&self.control.scales, self.control.nets);
        let key = |i: usize| (timesteps[i], scales.get(i * nets..(i + 1) * nets));
        for group in groups_by(timesteps.len(), key) {
            let part = gather(sample, &group, per_input);
            let part_rows: Vec<usize> = group.iter().map(|&i| rows[i]).collect();
            let mut part_out = vec![0.0; group.len() * per_item];
            let all = self.control.gather(&group);
            let t = vec![timesteps[group[0]]; group.len()];
            let ran = self.run_batch(&part, &t, &part_rows, &mut part_out);
            self.control.restore(all);
            ran?;
            scatter(&part_out, &group, per_item, out);
        }
        Ok(())
    }

    /// One run of the model on `n` items (padded to a fixed batch by repeating the last item). The conditioning
    /// is packed and bound only when the conditions or the batch's rows change; each run binds the sample and
    /// the timestep.
    fn run_chunk(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        (rows, first): (&[usize], usize),
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let n = timesteps.len();
        let m = self.roles.fixed_batch.unwrap_or(n).max(n);
        // Padding a fixed-batch model's last chunk repeats the last item; its output is dropped.
        let rows: Vec<usize> = (0..m).map(|i| rows[i.min(n - 1)]).collect();
        let model_err = |e: ort::Error| DenoiseError::Model(e.to_string());
        if self.binding.is_none() {
            self.binding = Some(self.model.session.create_binding().map_err(model_err)?);
        }
        let Self {
            model,
            roles,
            scratch,
            conditions,
            binding: Some(binding),
            bound_rows,
            runs,
            control,
            fed,
            ..
        } = self
        else {
            unreachable!("the binding was created above");
        };
        if bound_rows.as_ref() != Some(&rows) {
            *bound_rows = None;
            scratch.pack_conditions(roles, conditions, &rows)?;
            scratch.bind_conditions(roles, binding).map_err(model_err)?;
            *bound_rows = Some(rows);
        }
        let sample_dims = roles.input_dims(m);
        let sample_value = if roles.sample.elem == ElemType::F32 && m == n {
            tensor_owned(&sample_dims, sample)
        } else {
            scratch.pack_sample(roles, sample, m);
            scratch.sample.owned(&sample_dims)
        }
        .map_err(model_err)?;
        binding
            .bind_input(roles.sample.name.as_str(), &sample_value)
            .map_err(model_err)?;
        control
            .bind(roles, binding, first, n, m)
            .map_err(model_err)?;
        fed.bind(binding, first, n, m).map_err(model_err)?;
        scratch.pack_timestep(roles, timesteps, m);
        let timestep = scratch.timestep().map_err(model_err)?;
        binding
            .bind_input(roles.timestep.name.as_str(), &timestep)
            .map_err(model_err)?;
        bind_host_output(binding, &roles.output.name).map_err(model_err)?;
        let outputs = model.session.run_binding(binding).map_err(model_err)?;
        *runs += 1;
        read_output(&outputs, roles, m, n, out)
    }
}

impl Control {
    /// Items the control is set for.
    fn items(&self) -> usize {
        self.scales.len() / self.nets.max(1)
    }

    /// Keeps only the control of the items `group` (in that order); returns everything, for [`Self::restore`].
    fn gather(&mut self, group: &[usize]) -> (Vec<f32>, Vec<f32>) {
        if self.scales.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let per = self.images.len() / self.items();
        let images = gather(&self.images, group, per);
        let scales = gather(&self.scales, group, self.nets);
        (
            std::mem::replace(&mut self.images, images),
            std::mem::replace(&mut self.scales, scales),
        )
    }

    fn restore(&mut self, (images, scales): (Vec<f32>, Vec<f32>)) {
        if !scales.is_empty() {
            (self.images, self.scales) = (images, scales);
        }
    }

    /// Binds the control images of items `first..first + n` (padded to `m` by repeating the last), ControlNet by
    /// ControlNet, and their shared scales, for a ControlNet graph.
    fn bind(
        &mut self,
        roles: &ModelRoles,
        binding: &mut IoBinding,
        first: usize,
        n: usize,
        m: usize,
    ) -> ort::Result<()> {
        let (Some(image), Some(scale)) = (&roles.control_image, &roles.control_scale) else {
            return Ok(());
        };
        let per = self.images.len() / self.items().max(1) / self.nets;
        self.image_buf.reset(image.elem);
        for net in 0..self.nets {
            for i in 0..m {
                let at = (first + i.min(n - 1)) * self.nets + net;
                self.image_buf.push(&self.images[at * per..(at + 1) * per]);
            }
        }
        let [_, h, w] = roles.sample_shape;
        let side = ((per / 3) as f64 / (h * w) as f64).sqrt().round() as usize;
        let (h, w) = ((h * side) as i64, (w * side) as i64);
        let dims: Vec<i64> = match image.rank() {
            5 => vec![self.nets as i64, m as i64, 3, h, w],
            _ => vec![m as i64, 3, h, w],
        };
        binding.bind_input(image.name.as_str(), &self.image_buf.owned(&dims)?)?;
        self.scale_buf.reset(scale.elem);
        self.scale_buf
            .push(&self.scales[first * self.nets..(first + 1) * self.nets]);
        // [N, 1] as the export makes it (any rank: N values, the first axis taking them).
        let dims: Vec<i64> = (0..scale.rank())
            .map(|k| if k == 0 { self.nets as i64 } else { 1 })
            .collect();
        binding.bind_input(scale.name.as_str(), &self.scale_buf.owned(&dims)?)?;
        Ok(())
    }
}

/// Binds the prediction output to host memory, where the samplers read it. Bound afresh before each run:
/// ONNX Runtime keeps a bound output's first allocation, which a batch of another size does not fit.
fn bind_host_output(binding: &mut IoBinding, output: &str) -> ort::Result<()> {
    let host = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Device,
        MemoryType::CPUOutput,
    )?;
    binding.bind_output_to_device(output, &host)
}

/// Copies the model's prediction for the first `n` of `m` items into `out`, checking its shape.
fn read_output(
    outputs: &SessionOutputs<'_>,
    roles: &ModelRoles,
    m: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), DenoiseError> {
    let model_err = |e: ort::Error| DenoiseError::Model(e.to_string());
    let name = roles.output.name.as_str();
    let value = outputs
        .get(name)
        .ok_or_else(|| DenoiseError::Model(format!("the model returned no '{name}'")))?;
    let expected = roles.output_dims(m);
    let check_shape = |shape: &[i64]| {
        if shape == expected.as_slice() {
            Ok(())
        } else {
            Err(DenoiseError::OutputShape {
                name: name.to_string(),
                got: shape.to_vec(),
                expected: expected.iter().map(|&d| d as usize).collect(),
            })
        }
    };
    let wanted = n * roles.sample_shape.iter().product::<usize>();
    let (shape, data) = read_floats(value).map_err(model_err)?;
    check_shape(&shape)?;
    out.copy_from_slice(&data[..wanted]);
    Ok(())
}

impl Denoiser for OnnxDenoiser {
    fn info(&self) -> DenoiserInfo {
        DenoiserInfo {
            name: self.model.file_name(),
            provider: self.model.provider().ort_name().to_string(),
            sample_shape: self.roles.sample_shape,
            frames: self.roles.frames,
            extra_channels: self.roles.extra_channels,
            prediction_type: self.prediction_type,
        }
    }

    /// Runs the model on the batch, item i conditioned on row i of the conditions set (or on the one row, when
    /// one is set for the whole batch).
    fn predict(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let rows: Vec<usize> = match self.conditions.len() {
            0 | 1 => vec![0; timesteps.len()],
            n if timesteps.len() > n => {
                let what = if self.conditions[0].class_label.is_some() {
                    format!("{n} class labels were set")
                } else {
                    format!("conditioning was set for {n} items")
                };
                return Err(DenoiseError::Condition(format!(
                    "{what}, but the batch has at least {} items",
                    timesteps.len()
                )));
            }
            _ => (0..timesteps.len()).collect(),
        };
        self.predict_with(sample, timesteps, &rows, out)
    }

    fn set_conditions(&mut self, conditions: Vec<Condition>) -> Result<(), DenoiseError> {
        self.check_conditions(&conditions)?;
        self.conditions = conditions;
        self.bound_rows = None;
        Ok(())
    }

    fn is_conditional(&self) -> bool {
        self.roles.is_conditional()
    }

    fn runs(&self) -> Option<usize> {
        Some(self.runs)
    }

    fn controlnets(&self) -> usize {
        self.roles.controlnets
    }

    fn set_control(&mut self, images: &[f32], scales: &[f32]) {
        self.control.nets = self.roles.controlnets;
        self.control.images.clear();
        self.control.images.extend_from_slice(images);
        self.control.scales.clear();
        self.control.scales.extend_from_slice(scales);
    }

    /// Batches larger than a fixed-batch model's are split (the last chunk padded); a model with a scalar
    /// timestep runs once per distinct timestep. Integer timestep inputs get the timesteps rounded; float16
    /// models are converted at the boundary.
    fn predict_with(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        rows: &[usize],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        match self.roles.extra_channels {
            0 => checked_batch(sample, out, self.roles.sample_shape, timesteps.len())?,
            // The input carries the extra channels beside each sample; the prediction has the sample's.
            _ => {
                let n = batch_size(sample.len(), self.roles.input_shape(), timesteps.len())?;
                let expected = n * self.roles.sample_shape.iter().product::<usize>();
                if out.len() != expected {
                    return Err(DenoiseError::OutputLength {
                        expected,
                        got: out.len(),
                    });
                }
                n
            }
        };
        let available = self.conditions.len().max(1);
        if rows.len() != timesteps.len() || rows.iter().any(|&r| r >= available) {
            return Err(DenoiseError::Condition(format!(
                "the batch of {} items names condition rows {:?}; {} are set",
                timesteps.len(),
                rows.iter().max(),
                self.conditions.len()
            )));
        }
        let one_timestep = timesteps.iter().all(|&t| t == timesteps[0]);
        let (scales, nets) = (&self.control.scales, self.control.nets.max(1));
        let one_scale = (scales.chunks(nets)).all(|s| Some(s) == scales.chunks(nets).next());
        if (self.roles.timestep_per_item || one_timestep) && one_scale {
            self.run_batch(sample, timesteps, rows, out)
        } else {
            self.run_grouped(sample, timesteps, rows, out)
        }
    }
}

/// The scheduler config beside a model file, or a pipeline folder's `scheduler/` for its `unet/model.onnx`
/// (or `transformer/model.onnx`).
pub fn scheduler_config_of(model: &Path) -> PathBuf {
    let beside = model.with_file_name("scheduler_config.json");
    let unet_dir = model.parent().filter(|d| {
        d.file_name()
            .is_some_and(|n| n == "unet" || n == "transformer")
    });
    match unet_dir.and_then(Path::parent) {
        Some(root) if !beside.is_file() => root.join("scheduler").join("scheduler_config.json"),
        _ => beside,
    }
}

/// The prediction type: given, else `scheduler_config.json` beside the model, else epsilon.
fn prediction_type(
    model: &Path,
    given: Option<PredictionType>,
) -> Result<(PredictionType, PredictionSource), EngineError> {
    if let Some(p) = given {
        return Ok((p, PredictionSource::Given));
    }
    let config = scheduler_config_of(model);
    let text = match std::fs::read_to_string(&config) {
        Ok(text) => text,
        Err(_) => return Ok((PredictionType::Epsilon, PredictionSource::Default)),
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        EngineError::Options(format!("{} is not valid JSON: {e}", config.display()))
    })?;
    // A flow-matching scheduler class (SD3, Flux) has no prediction_type: the model predicts the velocity.
    let class = json.get("_class_name").and_then(serde_json::Value::as_str);
    if class == Some(crate::sampler::score_sde_ve::CLASS) {
        return Ok((
            PredictionType::Score,
            PredictionSource::SchedulerConfig(config),
        ));
    }
    if class.is_some_and(crate::sampler::registry::is_flow_match) {
        return Ok((
            PredictionType::FlowPrediction,
            PredictionSource::SchedulerConfig(config),
        ));
    }
    match json.get("prediction_type") {
        None | Some(serde_json::Value::Null) => Ok((
            PredictionType::Epsilon,
            PredictionSource::SchedulerConfig(config),
        )),
        Some(serde_json::Value::String(name)) => match PredictionType::from_name(name) {
            Some(p) => Ok((p, PredictionSource::SchedulerConfig(config))),
            None => Err(EngineError::Options(format!(
                "{} says prediction_type \"{name}\"; difflab knows {}",
                config.display(),
                PredictionType::NAMES.join(", ")
            ))),
        },
        Some(other) => Err(EngineError::Options(format!(
            "{}: prediction_type should be a string, not {other}",
            config.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests report failure by panicking")]

    use super::*;
    use crate::engine::condition::ItemTensor;
    use crate::engine::packing::tensor_view;
    use crate::engine::providers::ProviderKind;
    use crate::engine::roles::Dim;

    fn text_unet() -> OnnxDenoiser {
        let mut options = OnnxOptions::default();
        options.providers.preference = vec![ProviderKind::Cpu];
        options.sample_shape = Some([4, 8, 8]);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits-sd/unet/model.onnx");
        OnnxDenoiser::load(path, &options).unwrap()
    }

    /// `n` rows of distinct hidden states of the model's shape.
    fn table(unet: &OnnxDenoiser, n: usize, seed: f32) -> Vec<Condition> {
        // Seven tokens where the sequence length is dynamic.
        let spec = unet.roles.conditioning.as_ref().unwrap();
        let item: Vec<usize> = spec.dims[1..]
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Symbolic(_) => 7,
            })
            .collect();
        let len: usize = item.iter().product();
        (0..n)
            .map(|row| Condition {
                hidden_states: Some(ItemTensor::new(
                    item.clone(),
                    (0..len)
                        .map(|i| (i as f32 * 0.37 + row as f32 * 1.3 + seed).sin())
                        .collect(),
                )),
                ..Condition::default()
            })
            .collect()
    }

    /// The same call through `Session::run` with every input packed afresh: what the binding must equal.
    fn run_unbound(unet: &mut OnnxDenoiser, sample: &[f32], t: f64, rows: &[usize]) -> Vec<f32> {
        let m = rows.len();
        let mut scratch = Scratch::default();
        scratch.pack_timestep(&unet.roles, &vec![t; m], m);
        let spec = unet.roles.conditioning.clone().unwrap();
        let mut hidden = Vec::new();
        for &row in rows {
            hidden.extend_from_slice(&unet.conditions[row].hidden_states.as_ref().unwrap().data);
        }
        let mut hidden_dims = vec![m as i64];
        let item = &unet.conditions[0].hidden_states.as_ref().unwrap().shape;
        hidden_dims.extend(item.iter().map(|&d| d as i64));
        let [c, h, w] = unet.roles.sample_shape;
        let dims = [m as i64, c as i64, h as i64, w as i64];
        let inputs = vec![
            (
                unet.roles.sample.name.clone(),
                tensor_view(&dims, sample).unwrap(),
            ),
            (
                unet.roles.timestep.name.clone(),
                scratch.timestep().unwrap().into(),
            ),
            (
                spec.name.clone(),
                tensor_view(&hidden_dims, &hidden).unwrap(),
            ),
        ];
        let outputs = unet.model.session.run(inputs).unwrap();
        let mut out = vec![0.0; sample.len()];
        read_output(&outputs, &unet.roles, m, m, &mut out).unwrap();
        out
    }

    #[test]
    fn bound_conditioning_gives_what_a_plain_run_gives_as_rows_and_conditions_change() {
        let mut unet = text_unet();
        let per_item: usize = unet.roles.sample_shape.iter().product();
        let sample: Vec<f32> = (0..2 * per_item).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut calls = 0;
        for seed in [0.0, 5.0] {
            let conditions = table(&unet, 2, seed);
            unet.set_conditions(conditions).unwrap();
            // Batches of two sizes; ends on the rows it starts with, so a binding kept across new conditions
            // would show.
            let calls_per_set: [(&[usize], f64); 5] = [
                (&[0, 1], 999.0),
                (&[1, 0], 500.0),
                (&[1], 500.0),
                (&[1, 1], 20.0),
                (&[0, 1], 20.0),
            ];
            for (rows, t) in calls_per_set {
                let sample = &sample[..rows.len() * per_item];
                let mut bound = vec![0.0; sample.len()];
                unet.predict_with(sample, &vec![t; rows.len()], rows, &mut bound)
                    .unwrap();
                let plain = run_unbound(&mut unet, sample, t, rows);
                assert_eq!(bound, plain, "rows {rows:?}, t {t}, conditions {seed}");
                calls += 1;
            }
        }
        assert_eq!(unet.runs, calls);
    }
}
