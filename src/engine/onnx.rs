//! [`OnnxDenoiser`]: a diffusion model exported to ONNX, run by ONNX Runtime.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::f16;
use ort::session::builder::{AutoDevicePolicy, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{
    Outlet, PrimitiveTensorElementType, Shape, TensorElementType, TensorRef, ValueType,
};

use super::denoiser::{DenoiseError, Denoiser, DenoiserInfo, batch_size};
use super::providers::{
    AttemptOutcome, ProviderAttempt, ProviderKind, ProviderOptions, clean_ort_message,
    describe_attempts, nodes_per_provider,
};
use super::roles::{Dim, ElemType, ModelRoles, RoleError, RoleOverrides, TensorSpec, assign_roles};
use super::runtime::{Runtime, RuntimeError, RuntimeInfo, runtime};
use crate::sampler::PredictionType;

/// How to load a model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OnnxOptions {
    /// Execution providers to try, in order, and their settings.
    pub providers: ProviderOptions,
    /// What the model predicts; `None`: the `prediction_type` of a `scheduler_config.json` beside the model,
    /// else epsilon.
    pub prediction_type: Option<PredictionType>,
    /// Role → input/output name, for names difflab does not recognise.
    pub roles: RoleOverrides,
    /// One sample's C, H, W, for models whose sample input leaves them dynamic.
    pub sample_shape: Option<[usize; 3]>,
    /// Where to find ONNX Runtime (a library or a folder), after `ORT_DYLIB_PATH`; see [`runtime`](mod@super::runtime).
    pub runtime_path: Option<PathBuf>,
    /// The run's output folder: TensorRT engines are cached under it unless `providers.trt_engine_cache` says.
    pub output_dir: Option<PathBuf>,
    /// Threads within an operator (ONNX Runtime's intra-op pool); `None`: ONNX Runtime's default (one per core).
    pub intra_threads: Option<usize>,
    /// Record which provider runs each node (session profiling), for [`OnnxDenoiser::nodes_per_provider`].
    pub profile_nodes: bool,
}

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
            PredictionSource::Default => {
                f.write_str("default; no scheduler_config.json beside the model")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{}: no such model file", path.display())]
    ModelMissing { path: PathBuf },
    #[error("{} is not an ONNX model: {reason}", path.display())]
    NotOnnx { path: PathBuf, reason: String },
    #[error("ONNX Runtime could not load {}: {message}", path.display())]
    ModelLoad { path: PathBuf, message: String },
    #[error("{}: {problem}", path.display())]
    Roles { path: PathBuf, problem: RoleError },
    #[error(
        "execution provider {provider} did not run the model and fallback is off ({})",
        describe_attempts(attempts)
    )]
    ProviderFailed {
        provider: ProviderKind,
        attempts: Vec<ProviderAttempt>,
    },
    #[error(
        "no execution provider could run the model ({})",
        describe_attempts(attempts)
    )]
    NoProvider { attempts: Vec<ProviderAttempt> },
    #[error("{0}")]
    Options(String),
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    #[error(transparent)]
    Denoise(#[from] DenoiseError),
}

pub(super) fn ort_error(e: impl fmt::Display) -> EngineError {
    EngineError::Ort(e.to_string())
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
    session: Session,
    path: PathBuf,
    name: String,
    runtime: &'static Runtime,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    roles: ModelRoles,
    prediction_type: PredictionType,
    prediction_source: PredictionSource,
    provider: ProviderKind,
    attempts: Vec<ProviderAttempt>,
    profiling: bool,
    class_labels: Vec<i64>,
    conditioning: Option<Conditioning>,
    scratch: Scratch,
}

#[derive(Debug, Clone)]
struct Conditioning {
    data: Vec<f32>,
    /// One item's shape (the conditioning input's dims after the batch).
    item_shape: Vec<usize>,
    /// Items given: 1 (shared by the whole batch) or one per batch item.
    items: usize,
}

impl fmt::Debug for OnnxDenoiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxDenoiser")
            .field("path", &self.path)
            .field("provider", &self.provider)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl OnnxDenoiser {
    /// Loads ONNX Runtime if needed (see [`runtime`](mod@super::runtime)), opens the model on the first provider that works,
    /// maps its inputs and outputs to roles, and reads the prediction type.
    pub fn load(path: impl AsRef<Path>, options: &OnnxOptions) -> Result<Self, EngineError> {
        let path = path.as_ref().to_path_buf();
        check_model_file(&path)?;
        let (prediction_type, prediction_source) = prediction_type(&path, options.prediction_type)?;
        let rt = runtime(options.runtime_path.as_deref())?;
        let (mut session, provider, attempts) = open_session(rt, &path, options)?;
        let inputs: Vec<TensorSpec> = session.inputs().iter().map(spec_of).collect();
        let outputs: Vec<TensorSpec> = session.outputs().iter().map(spec_of).collect();
        let roles = match assign_roles(&inputs, &outputs, &options.roles, options.sample_shape) {
            Ok(roles) => roles,
            Err(problem) => {
                if options.profile_nodes {
                    discard_profile(&mut session);
                }
                return Err(EngineError::Roles { path, problem });
            }
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(Self {
            session,
            name,
            runtime: rt,
            inputs,
            outputs,
            roles,
            prediction_type,
            prediction_source,
            provider,
            attempts,
            profiling: options.profile_nodes,
            class_labels: vec![0],
            conditioning: None,
            scratch: Scratch::default(),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The loaded ONNX Runtime.
    pub fn runtime(&self) -> &'static RuntimeInfo {
        &self.runtime.info
    }

    /// All declared inputs, in the model's order.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// All declared outputs, in the model's order.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    pub fn roles(&self) -> &ModelRoles {
        &self.roles
    }

    /// The provider the session runs on.
    pub fn provider(&self) -> ProviderKind {
        self.provider
    }

    /// Each requested provider and what became of it, in the order of preference.
    pub fn attempts(&self) -> &[ProviderAttempt] {
        &self.attempts
    }

    pub fn prediction_source(&self) -> &PredictionSource {
        &self.prediction_source
    }

    /// Class labels for a class-conditional model: one label for the whole batch, or one per batch item.
    /// The default is label 0. Ignored by models without a class-label input.
    pub fn set_class_labels(&mut self, labels: &[i64]) -> Result<(), EngineError> {
        if labels.is_empty() {
            return Err(EngineError::Options("no class labels given".into()));
        }
        self.class_labels = labels.to_vec();
        Ok(())
    }

    /// Conditioning (e.g. text-encoder hidden states) for a model with a conditioning input: `data` holds one item
    /// (shared by the whole batch) or one per batch item, each of the input's shape after the batch dim. Without it
    /// the engine feeds zeros, which needs the input's item shape to be fixed.
    pub fn set_conditioning(&mut self, data: Vec<f32>) -> Result<(), EngineError> {
        let Some(spec) = &self.roles.conditioning else {
            return Err(EngineError::Options(format!(
                "{} has no conditioning input",
                self.name
            )));
        };
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
        let Some(spec) = &self.roles.conditioning else {
            return Err(EngineError::Options(format!(
                "{} has no conditioning input",
                self.name
            )));
        };
        let compatible = spec.dims.len() == item_shape.len() + 1
            && spec.dims[1..]
                .iter()
                .zip(item_shape)
                .all(|(d, n)| !matches!(d, Dim::Fixed(m) if m != n));
        let per_item: usize = item_shape.iter().product();
        if !compatible || per_item == 0 || data.is_empty() || data.len() % per_item != 0 {
            return Err(EngineError::Options(format!(
                "conditioning of {} values with item shape {item_shape:?} does not fit the input {}",
                data.len(),
                spec.describe()
            )));
        }
        self.conditioning = Some(Conditioning {
            items: data.len() / per_item,
            data,
            item_shape: item_shape.to_vec(),
        });
        Ok(())
    }

    /// How many nodes ran on each provider (ONNX Runtime's names), from the session profile. Needs
    /// `profile_nodes` in the options and at least one [`Denoiser::predict`] call; it ends profiling, so later
    /// calls are not recorded. `Ok(None)` when profiling was off or already ended.
    pub fn nodes_per_provider(&mut self) -> Result<Option<BTreeMap<String, usize>>, EngineError> {
        if !self.profiling {
            return Ok(None);
        }
        self.profiling = false;
        let file = self.session.end_profiling().map_err(ort_error)?;
        let text = std::fs::read_to_string(&file);
        let _ = std::fs::remove_file(&file);
        let text =
            text.map_err(|e| EngineError::Ort(format!("cannot read the profile {file}: {e}")))?;
        nodes_per_provider(&text)
            .map(Some)
            .map_err(EngineError::Ort)
    }

    /// One chunk the model can take in one run: `n` items starting at item `first`.
    fn run_chunk(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        first: usize,
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let n = timesteps.len();
        let [c, h, w] = self.roles.sample_shape;
        let per_item = c * h * w;
        let m = self.roles.fixed_batch.unwrap_or(n).max(n);
        let Self {
            session,
            roles,
            scratch,
            class_labels,
            conditioning,
            ..
        } = self;
        let model_err = |e: ort::Error| DenoiseError::Model(e.to_string());

        let sample_dims = [m as i64, c as i64, h as i64, w as i64];
        // Padding a fixed-batch model's last chunk repeats the last item; its output is dropped.
        let padded = |i: usize| i.min(n - 1);
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(4);

        let sample_value: SessionInputValue<'_> = match roles.sample.elem {
            ElemType::F32 if m == n => tensor_view(&sample_dims, sample).map_err(model_err)?,
            ElemType::F32 => {
                scratch.sample_f32.clear();
                scratch.sample_f32.extend_from_slice(sample);
                for _ in n..m {
                    scratch
                        .sample_f32
                        .extend_from_within((n - 1) * per_item..n * per_item);
                }
                tensor_view(&sample_dims, &scratch.sample_f32).map_err(model_err)?
            }
            _ => {
                scratch.sample_f16.clear();
                scratch
                    .sample_f16
                    .extend(sample.iter().map(|&v| f16::from_f32(v)));
                for _ in n..m {
                    scratch
                        .sample_f16
                        .extend_from_within((n - 1) * per_item..n * per_item);
                }
                tensor_view(&sample_dims, &scratch.sample_f16).map_err(model_err)?
            }
        };
        inputs.push((Cow::Borrowed(roles.sample.name.as_str()), sample_value));

        // Timesteps: one per item, or one for the chunk (the caller split the batch where they differ).
        let t_count = if roles.timestep_per_item { m } else { 1 };
        let t_dims: Vec<i64> = match roles.timestep.rank() {
            0 => vec![],
            _ => vec![t_count as i64],
        };
        let t_values = (0..t_count).map(|i| timesteps[padded(i)]);
        let t_value = scratch
            .timestep
            .fill(roles.timestep.elem, t_values)
            .view(&t_dims)
            .map_err(model_err)?;
        inputs.push((Cow::Borrowed(roles.timestep.name.as_str()), t_value));

        if let Some(spec) = &roles.class_labels {
            let labels = (0..m).map(|i| {
                let item = first + padded(i);
                class_labels[if class_labels.len() == 1 {
                    0
                } else {
                    item.min(class_labels.len() - 1)
                }] as f64
            });
            if class_labels.len() != 1 && first + n > class_labels.len() {
                return Err(DenoiseError::Model(format!(
                    "{} class labels were set, but the batch has at least {} items",
                    class_labels.len(),
                    first + n
                )));
            }
            let value = scratch
                .labels
                .fill(spec.elem, labels)
                .view(&[m as i64])
                .map_err(model_err)?;
            inputs.push((Cow::Borrowed(spec.name.as_str()), value));
        }

        if let Some(spec) = &roles.conditioning {
            let (item_shape, per_cond) = match conditioning {
                Some(cond) => (
                    cond.item_shape.clone(),
                    cond.item_shape.iter().product::<usize>(),
                ),
                None => {
                    let shape = fixed_item_shape(spec).ok_or_else(|| {
                        DenoiseError::Model(format!(
                            "the model needs conditioning for {} (dynamic dims after the batch); set it first",
                            spec.describe()
                        ))
                    })?;
                    let per = shape.iter().product();
                    (shape, per)
                }
            };
            let buf = &mut scratch.conditioning;
            buf.clear();
            for i in 0..m {
                let item = first + padded(i);
                match conditioning {
                    Some(cond) if cond.items == 1 => buf.extend_from_slice(&cond.data),
                    Some(cond) if item < cond.items => {
                        buf.extend_from_slice(&cond.data[item * per_cond..(item + 1) * per_cond])
                    }
                    Some(cond) => {
                        return Err(DenoiseError::Model(format!(
                            "conditioning was set for {} items, but the batch has at least {}",
                            cond.items,
                            item + 1
                        )));
                    }
                    None => buf.resize(buf.len() + per_cond, 0.0),
                }
            }
            let mut dims = vec![m as i64];
            dims.extend(item_shape.iter().map(|&d| d as i64));
            let value = match spec.elem {
                ElemType::F16 => {
                    scratch.conditioning_f16.clear();
                    scratch
                        .conditioning_f16
                        .extend(scratch.conditioning.iter().map(|&v| f16::from_f32(v)));
                    tensor_view(&dims, &scratch.conditioning_f16)
                }
                _ => tensor_view(&dims, &scratch.conditioning),
            }
            .map_err(model_err)?;
            inputs.push((Cow::Borrowed(spec.name.as_str()), value));
        }

        let outputs = session.run(inputs).map_err(model_err)?;
        let value = outputs.get(roles.output.name.as_str()).ok_or_else(|| {
            DenoiseError::Model(format!("the model returned no '{}'", roles.output.name))
        })?;
        let expected = [m, c, h, w];
        let check_shape = |shape: &Shape| {
            let got: Vec<i64> = shape.iter().copied().collect();
            if got.len() == 4 && got.iter().zip(expected).all(|(&g, e)| g as usize == e) {
                Ok(())
            } else {
                Err(DenoiseError::OutputShape {
                    name: roles.output.name.clone(),
                    got,
                    expected: expected.to_vec(),
                })
            }
        };
        let wanted = n * per_item;
        match roles.output.elem {
            ElemType::F16 => {
                let (shape, data) = value.try_extract_tensor::<f16>().map_err(model_err)?;
                check_shape(shape)?;
                for (o, v) in out.iter_mut().zip(&data[..wanted]) {
                    *o = v.to_f32();
                }
            }
            _ => {
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(model_err)?;
                check_shape(shape)?;
                out.copy_from_slice(&data[..wanted]);
            }
        }
        Ok(())
    }
}

impl Drop for OnnxDenoiser {
    /// A profile nobody read would otherwise be left in the temp folder when the session ends.
    fn drop(&mut self) {
        if self.profiling {
            discard_profile(&mut self.session);
        }
    }
}

/// Ends a session's profiling and deletes the profile (ONNX Runtime writes one when a profiled session ends).
fn discard_profile(session: &mut Session) {
    if let Ok(file) = session.end_profiling() {
        let _ = std::fs::remove_file(file);
    }
}

impl Denoiser for OnnxDenoiser {
    fn info(&self) -> DenoiserInfo {
        DenoiserInfo {
            name: self.name.clone(),
            provider: self.provider.ort_name().to_string(),
            sample_shape: self.roles.sample_shape,
            prediction_type: self.prediction_type,
        }
    }

    /// Runs the model on the batch. Batches larger than a fixed-batch model's are split (the last chunk padded);
    /// a model with a scalar timestep runs once per run of equal timesteps. Integer timestep inputs get the
    /// timesteps rounded; float16 models are converted at the boundary.
    fn predict(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let shape = self.roles.sample_shape;
        let batch = batch_size(sample.len(), shape, timesteps.len())?;
        if out.len() != sample.len() {
            return Err(DenoiseError::OutputLength {
                expected: sample.len(),
                got: out.len(),
            });
        }
        let per_item: usize = shape.iter().product();
        let max_chunk = self.roles.fixed_batch.unwrap_or(usize::MAX).max(1);
        let mut start = 0;
        while start < batch {
            let mut end = (start + max_chunk).min(batch);
            if !self.roles.timestep_per_item {
                let t0 = timesteps[start];
                end = start
                    + timesteps[start..end]
                        .iter()
                        .take_while(|&&t| t == t0)
                        .count()
                        .max(1);
            }
            self.run_chunk(
                &sample[start * per_item..end * per_item],
                &timesteps[start..end],
                start,
                &mut out[start * per_item..end * per_item],
            )?;
            start = end;
        }
        Ok(())
    }
}

/// Reusable input buffers, so that a call allocates only what ONNX Runtime does.
#[derive(Default)]
struct Scratch {
    sample_f32: Vec<f32>,
    sample_f16: Vec<f16>,
    timestep: TypedBuf,
    labels: TypedBuf,
    conditioning: Vec<f32>,
    conditioning_f16: Vec<f16>,
}

/// A small buffer of whichever element type an input wants.
#[derive(Default)]
struct TypedBuf {
    elem: Option<ElemType>,
    f32: Vec<f32>,
    f16: Vec<f16>,
    f64: Vec<f64>,
    i64: Vec<i64>,
    i32: Vec<i32>,
}

impl TypedBuf {
    fn fill(&mut self, elem: ElemType, values: impl Iterator<Item = f64>) -> &Self {
        self.elem = Some(elem);
        match elem {
            ElemType::F16 => {
                self.f16.clear();
                self.f16.extend(values.map(f16::from_f64));
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
        self
    }

    fn view(&self, dims: &[i64]) -> ort::Result<SessionInputValue<'_>> {
        match self.elem {
            Some(ElemType::F16) => tensor_view(dims, &self.f16),
            Some(ElemType::F64) => tensor_view(dims, &self.f64),
            Some(ElemType::I64) => tensor_view(dims, &self.i64),
            Some(ElemType::I32) => tensor_view(dims, &self.i32),
            _ => tensor_view(dims, &self.f32),
        }
    }
}

/// A zero-copy tensor over `data`.
fn tensor_view<'a, T: PrimitiveTensorElementType + fmt::Debug + Clone + 'static>(
    dims: &[i64],
    data: &'a [T],
) -> ort::Result<SessionInputValue<'a>> {
    Ok(TensorRef::from_array_view((Shape::new(dims.iter().copied()), data))?.into())
}

fn fixed_item_shape(spec: &TensorSpec) -> Option<Vec<usize>> {
    spec.dims[1..]
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbolic(_) => None,
        })
        .collect()
}

fn elem_of(ty: TensorElementType) -> ElemType {
    match ty {
        TensorElementType::Float32 => ElemType::F32,
        TensorElementType::Float16 => ElemType::F16,
        TensorElementType::Float64 => ElemType::F64,
        TensorElementType::Int64 => ElemType::I64,
        TensorElementType::Int32 => ElemType::I32,
        TensorElementType::Bfloat16 => ElemType::Other("bfloat16"),
        TensorElementType::Uint8 => ElemType::Other("uint8"),
        TensorElementType::Int8 => ElemType::Other("int8"),
        TensorElementType::Bool => ElemType::Other("bool"),
        TensorElementType::String => ElemType::Other("string"),
        _ => ElemType::Other("an unsupported element type"),
    }
}

pub(super) fn spec_of(outlet: &Outlet) -> TensorSpec {
    match outlet.dtype() {
        ValueType::Tensor {
            ty,
            shape,
            dimension_symbols,
        } => {
            let dims = shape
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d >= 0 {
                        Dim::Fixed(d as usize)
                    } else {
                        Dim::Symbolic(dimension_symbols.get(i).cloned().unwrap_or_default())
                    }
                })
                .collect();
            TensorSpec::tensor(outlet.name(), elem_of(*ty), dims)
        }
        _ => TensorSpec {
            name: outlet.name().to_string(),
            elem: ElemType::Other("not a tensor"),
            dims: Vec::new(),
            is_tensor: false,
        },
    }
}

/// ModelProto's field numbers and wire types (0 varint, 2 length-delimited).
const MODEL_PROTO_FIELDS: [(u64, u64); 11] = [
    (1, 0),  // ir_version
    (2, 2),  // producer_name
    (3, 2),  // producer_version
    (4, 2),  // domain
    (5, 0),  // model_version
    (6, 2),  // doc_string
    (7, 2),  // graph
    (8, 2),  // opset_import
    (14, 2), // metadata_props
    (20, 2), // training_info
    (25, 2), // functions
];

/// Rejects what plainly is not an ONNX model before ONNX Runtime sees it, naming what it looks like instead.
pub(super) fn check_model_file(path: &Path) -> Result<(), EngineError> {
    let not_onnx = |reason: String| EngineError::NotOnnx {
        path: path.to_path_buf(),
        reason: format!(
            "{reason}; export the model with torch.onnx.export or `optimum-cli export onnx`"
        ),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::ModelMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(not_onnx(format!("it cannot be read ({e})"))),
    };
    if meta.is_dir() {
        return Err(not_onnx(
            "it is a folder (give the .onnx file in it)".into(),
        ));
    }
    if meta.len() == 0 {
        return Err(not_onnx("the file is empty".into()));
    }
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| not_onnx(format!("it cannot be read ({e})")))?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        return Err(not_onnx(
            "it is a zip archive (a PyTorch checkpoint?)".into(),
        ));
    }
    if head.first() == Some(&0x80) {
        return Err(not_onnx(
            "it is a Python pickle (a PyTorch .pt/.ckpt?)".into(),
        ));
    }
    if head.len() >= 9 && head[8] == b'{' {
        return Err(not_onnx("it is a safetensors file".into()));
    }
    if head.starts_with(b"\x89HDF") {
        return Err(not_onnx("it is an HDF5 file (Keras?)".into()));
    }
    let mut tag = 0u64;
    let mut valid = false;
    for (i, &b) in head.iter().take(2).enumerate() {
        tag |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            valid = true;
            break;
        }
    }
    let (field, wire) = (tag >> 3, tag & 7);
    if !valid || !MODEL_PROTO_FIELDS.contains(&(field, wire)) {
        let looks_like_text = head
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        let what = if looks_like_text {
            "it is a text file"
        } else {
            "it does not start like an ONNX ModelProto"
        };
        return Err(not_onnx(what.into()));
    }
    Ok(())
}

/// The prediction type: given, else `scheduler_config.json` beside the model, else epsilon.
fn prediction_type(
    model: &Path,
    given: Option<PredictionType>,
) -> Result<(PredictionType, PredictionSource), EngineError> {
    if let Some(p) = given {
        return Ok((p, PredictionSource::Given));
    }
    let config = model.with_file_name("scheduler_config.json");
    let text = match std::fs::read_to_string(&config) {
        Ok(text) => text,
        Err(_) => return Ok((PredictionType::Epsilon, PredictionSource::Default)),
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        EngineError::Options(format!("{} is not valid JSON: {e}", config.display()))
    })?;
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

static PROFILE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Session options shared by every attempt.
fn base_builder(rt: &Runtime, options: &OnnxOptions) -> Result<SessionBuilder, EngineError> {
    let mut builder = Session::builder(&rt.env).map_err(ort_error)?;
    // difflab picks the providers itself: never let ONNX Runtime add any (builds without the device API refuse
    // the setting, which is then moot).
    builder = builder
        .with_auto_device(AutoDevicePolicy::PreferCPU)
        .unwrap_or_else(|e| e.recover());
    if let Some(threads) = options.intra_threads {
        builder = builder.with_intra_threads(threads).map_err(ort_error)?;
    }
    if options.profile_nodes {
        let prefix = std::env::temp_dir().join(format!(
            "difflab-profile-{}-{}",
            std::process::id(),
            PROFILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        builder = builder.with_profiling(prefix).map_err(ort_error)?;
    }
    Ok(builder)
}

/// Is this ONNX Runtime failure about the model itself (so no other provider will do better)?
fn is_model_error(e: &ort::Error) -> bool {
    matches!(
        e.code(),
        ort::ErrorCode::NoSuchFile
            | ort::ErrorCode::InvalidProtobuf
            | ort::ErrorCode::InvalidGraph
            | ort::ErrorCode::NoModel
    )
}

fn model_load_error(path: &Path, e: &ort::Error) -> EngineError {
    let mut message = clean_ort_message(e.message());
    if e.code() == ort::ErrorCode::InvalidProtobuf {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        message.push_str(&format!(
            " (the file, {size} bytes, is not a complete ONNX model: truncated or corrupt?)"
        ));
    }
    EngineError::ModelLoad {
        path: path.to_path_buf(),
        message,
    }
}

/// Tries the providers in order; returns the session, the provider that runs it and every attempt.
pub(super) fn open_session(
    rt: &Runtime,
    path: &Path,
    options: &OnnxOptions,
) -> Result<(Session, ProviderKind, Vec<ProviderAttempt>), EngineError> {
    use ort::ep::{self, ExecutionProvider};

    let prefs = &options.providers;
    if prefs.preference.is_empty() {
        return Err(EngineError::Options(
            "no execution provider requested".into(),
        ));
    }
    // With fallback on, the CPU is the last resort even when not asked for.
    let mut preference = prefs.preference.clone();
    if prefs.fallback && !preference.contains(&ProviderKind::Cpu) {
        preference.push(ProviderKind::Cpu);
    }
    let mut attempts: Vec<ProviderAttempt> = Vec::new();
    let mut chosen: Option<(Session, ProviderKind)> = None;
    let available = |kind: ProviderKind| -> Result<(), String> {
        let has = match kind {
            ProviderKind::TensorRt => ep::TensorRT::is_available(),
            ProviderKind::Cuda => ep::CUDA::is_available(),
            ProviderKind::Cpu => ep::CPU::is_available(),
        };
        match has {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "the loaded ONNX Runtime {} was built without it; for CUDA/TensorRT install onnxruntime-gpu \
                 (with its CUDA libraries) or point ORT_DYLIB_PATH at a GPU build",
                rt.info.version
            )),
            Err(e) => Err(e.to_string()),
        }
    };

    for (index, &kind) in preference.iter().enumerate() {
        if chosen.is_some() || preference[..index].contains(&kind) {
            if !preference[..index].contains(&kind) {
                attempts.push(ProviderAttempt {
                    provider: kind,
                    outcome: AttemptOutcome::NotTried,
                });
            }
            continue;
        }
        let outcome = match available(kind) {
            Err(reason) => AttemptOutcome::NotAvailable(reason),
            Ok(()) => {
                let mut eps = Vec::new();
                match kind {
                    ProviderKind::TensorRt => {
                        let cache = prefs.engine_cache_dir(options.output_dir.as_deref());
                        let _ = std::fs::create_dir_all(&cache);
                        let cache = cache.display().to_string();
                        let mut trt = ep::TensorRT::default()
                            .with_device_id(prefs.device_id)
                            .with_fp16(prefs.trt_fp16)
                            .with_engine_cache(true)
                            .with_engine_cache_path(&cache)
                            .with_timing_cache(true)
                            .with_timing_cache_path(&cache);
                        if let Some(bytes) = prefs.trt_max_workspace {
                            trt = trt.with_max_workspace_size(bytes);
                        }
                        eps.push(trt.build().error_on_failure());
                        // Nodes TensorRT cannot take go to CUDA rather than the CPU, when CUDA was asked for too.
                        if preference.contains(&ProviderKind::Cuda)
                            && available(ProviderKind::Cuda).is_ok()
                        {
                            eps.push(
                                ep::CUDA::default()
                                    .with_device_id(prefs.device_id)
                                    .build()
                                    .fail_silently(),
                            );
                        }
                    }
                    ProviderKind::Cuda => eps.push(
                        ep::CUDA::default()
                            .with_device_id(prefs.device_id)
                            .build()
                            .error_on_failure(),
                    ),
                    // ort's CPU default would turn the memory arena off; keep ONNX Runtime's default (on).
                    ProviderKind::Cpu => eps.push(
                        ep::CPU::default()
                            .with_arena_allocator(true)
                            .build()
                            .error_on_failure(),
                    ),
                }
                let builder = base_builder(rt, options)?;
                match builder.with_execution_providers(eps) {
                    Err(e) => AttemptOutcome::Failed(format!(
                        "registration failed: {}",
                        clean_ort_message(e.message())
                    )),
                    Ok(mut builder) => match builder.commit_from_file(path) {
                        Ok(session) => {
                            chosen = Some((session, kind));
                            AttemptOutcome::Ran
                        }
                        Err(e) if kind == ProviderKind::Cpu || is_model_error(&e) => {
                            return Err(model_load_error(path, &e));
                        }
                        Err(e) => AttemptOutcome::Failed(format!(
                            "the session did not build: {}",
                            clean_ort_message(e.message())
                        )),
                    },
                }
            }
        };
        let failed = !matches!(outcome, AttemptOutcome::Ran);
        attempts.push(ProviderAttempt {
            provider: kind,
            outcome,
        });
        if failed && !prefs.fallback {
            return Err(EngineError::ProviderFailed {
                provider: kind,
                attempts,
            });
        }
    }
    match chosen {
        Some((session, kind)) => Ok((session, kind, attempts)),
        None => Err(EngineError::NoProvider { attempts }),
    }
}
