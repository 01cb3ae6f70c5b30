//! Opening an ONNX model in ONNX Runtime on the first execution provider that works: [`OnnxModel`], shared by
//! the U-Net, the VAE decoder, the text encoders and the feature network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};
use ort::session::Session;
use ort::session::builder::{AutoDevicePolicy, SessionBuilder};
use ort::value::{Outlet, TensorElementType, ValueType};

use super::build_lock::BuildLock;
use super::error::{EngineError, is_model_error, model_load_error, ort_error};
use super::model_file::check_model_file;
use super::ort_log;
use super::providers::{
    AttemptOutcome, ProviderAttempt, ProviderKind, ProviderOptions, clean_ort_message, engine_dir,
    nodes_per_provider,
};
use super::roles::{Dim, ElemType, RoleOverrides, TensorSpec};
use super::runtime::{Runtime, RuntimeInfo, runtime};
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
    /// One sample's C, H, W (one frame's, for a video model), for models whose sample input leaves them dynamic.
    pub sample_shape: Option<[usize; 3]>,
    /// Frames per clip, for a video model whose sample input leaves them dynamic.
    pub frames: Option<usize>,
    /// Where to find ONNX Runtime (a library or a folder), after `ORT_DYLIB_PATH`; see [`runtime`](mod@super::runtime).
    pub runtime_path: Option<PathBuf>,
    /// The run's output folder: TensorRT engines are cached under it unless `providers.trt_engine_cache` says.
    pub output_dir: Option<PathBuf>,
    /// Threads within an operator (ONNX Runtime's intra-op pool); `None`: ONNX Runtime's default (one per core).
    pub intra_threads: Option<usize>,
    /// Record which provider runs each node (session profiling), for [`OnnxModel::nodes_per_provider`].
    pub profile_nodes: bool,
    /// Inputs of a denoiser that another network feeds (a ControlNet's residuals): no role of their own.
    pub fed_inputs: Vec<String>,
}

/// An ONNX model open in ONNX Runtime, with its declared inputs and outputs and the provider that runs it.
pub struct OnnxModel {
    pub(super) session: Session,
    path: PathBuf,
    runtime: &'static Runtime,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    provider: ProviderKind,
    attempts: Vec<ProviderAttempt>,
    profiling: bool,
}

impl OnnxModel {
    /// Checks the file, loads ONNX Runtime if needed and opens the model on the first provider that works.
    pub fn open(path: impl AsRef<Path>, options: &OnnxOptions) -> Result<Self, EngineError> {
        let path = path.as_ref().to_path_buf();
        check_model_file(&path)?;
        let rt = runtime(options.runtime_path.as_deref())?;
        let (session, provider, attempts) = open_session(rt, &path, options)?;
        Ok(Self {
            inputs: session.inputs().iter().map(spec_of).collect(),
            outputs: session.outputs().iter().map(spec_of).collect(),
            session,
            path,
            runtime: rt,
            provider,
            attempts,
            profiling: options.profile_nodes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file name, for display.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
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

    /// The provider the session runs on.
    pub fn provider(&self) -> ProviderKind {
        self.provider
    }

    /// Each requested provider and what became of it, in the order of preference.
    pub fn attempts(&self) -> &[ProviderAttempt] {
        &self.attempts
    }

    /// How many nodes ran on each provider (ONNX Runtime's names), from the session profile. Needs
    /// `profile_nodes` in the options and at least one run; it ends profiling, so later runs are not recorded.
    /// `Ok(None)` when profiling was off or already ended.
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
}

impl Drop for OnnxModel {
    /// A profile nobody read would otherwise be left in the temp folder when the session ends.
    fn drop(&mut self) {
        if self.profiling
            && let Ok(file) = self.session.end_profiling()
        {
            let _ = std::fs::remove_file(file);
        }
    }
}

fn elem_of(ty: TensorElementType) -> ElemType {
    match ty {
        TensorElementType::Float32 => ElemType::F32,
        TensorElementType::Float16 => ElemType::F16,
        TensorElementType::Float64 => ElemType::F64,
        TensorElementType::Int64 => ElemType::I64,
        TensorElementType::Int32 => ElemType::I32,
        TensorElementType::Bfloat16 => ElemType::Bf16,
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

/// Whether the loaded ONNX Runtime has the provider, or why not.
fn provider_available(rt: &Runtime, kind: ProviderKind) -> Result<(), String> {
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
}

/// The execution providers to register for an attempt on `kind`.
fn provider_dispatch(
    rt: &Runtime,
    path: &Path,
    kind: ProviderKind,
    options: &OnnxOptions,
    preference: &[ProviderKind],
) -> Vec<ExecutionProviderDispatch> {
    let prefs = &options.providers;
    match kind {
        ProviderKind::TensorRt => {
            let timing = prefs.engine_cache_dir(options.output_dir.as_deref());
            let engines = engine_dir(
                &timing,
                &model_fingerprint(path),
                prefs.trt_profile.as_ref(),
            );
            let _ = std::fs::create_dir_all(&engines);
            let mut trt = ep::TensorRT::default()
                .with_device_id(prefs.device_id)
                .with_fp16(prefs.trt_fp16)
                .with_engine_cache(true)
                .with_engine_cache_path(engines.display())
                .with_timing_cache(true)
                .with_timing_cache_path(timing.display());
            if let Some(bytes) = prefs.trt_max_workspace {
                trt = trt.with_max_workspace_size(bytes);
            }
            if let Some(profile) = &prefs.trt_profile {
                trt = trt
                    .with_profile_min_shapes(&profile.min)
                    .with_profile_opt_shapes(&profile.opt)
                    .with_profile_max_shapes(&profile.max);
            }
            if let Some(level) = prefs.trt_builder_optimization_level {
                trt = trt.with_builder_optimization_level(level);
            }
            let layer_norm_fp32 = prefs.trt_layer_norm_fp32_fallback.unwrap_or(prefs.trt_fp16);
            trt = trt
                .with_layer_norm_fp32_fallback(layer_norm_fp32)
                .with_cuda_graph(prefs.trt_cuda_graph);
            let mut eps = vec![trt.build().error_on_failure()];
            // Nodes TensorRT cannot take go to CUDA rather than the CPU, when CUDA was asked for too; a CUDA
            // that fails to register fails the attempt, in words, rather than leaving those nodes to the CPU.
            if preference.contains(&ProviderKind::Cuda)
                && provider_available(rt, ProviderKind::Cuda).is_ok()
            {
                eps.push(cuda_provider(prefs).build().error_on_failure());
            }
            eps
        }
        ProviderKind::Cuda => vec![cuda_provider(prefs).build().error_on_failure()],
        // ort's CPU default would turn the memory arena off; keep ONNX Runtime's default (on).
        ProviderKind::Cpu => vec![
            ep::CPU::default()
                .with_arena_allocator(true)
                .build()
                .error_on_failure(),
        ],
    }
}

/// What the model's engines are cached under: the digest of every file it reads (its graph and external
/// weights), so a fine-tune with the same file names never runs another's engine. An unreadable file (which
/// ONNX Runtime will name when it loads) shares the "unread" folder.
fn model_fingerprint(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    super::fingerprint::network_files(path)
        .ok()
        .and_then(|files| super::fingerprint::files_digest(dir, &files).ok())
        .map_or_else(|| "unread".into(), |d| d[..16].to_string())
}

/// The CUDA provider with `[model.cuda]`'s settings (TF32 off unless asked for).
fn cuda_provider(prefs: &ProviderOptions) -> ep::CUDA {
    let c = &prefs.cuda;
    let mut cuda = ep::CUDA::default()
        .with_device_id(prefs.device_id)
        .with_tf32(c.tf32)
        .with_prefer_nhwc(c.prefer_nhwc)
        .with_cuda_graph(c.cuda_graph);
    cuda = match c.cudnn_conv_algo_search.as_deref() {
        Some("heuristic") => {
            cuda.with_conv_algorithm_search(ep::cuda::ConvAlgorithmSearch::Heuristic)
        }
        Some("default") => cuda.with_conv_algorithm_search(ep::cuda::ConvAlgorithmSearch::Default),
        _ => cuda,
    };
    if c.arena_extend_strategy.as_deref() == Some("same_as_requested") {
        cuda = cuda.with_arena_extend_strategy(ep::ArenaExtendStrategy::SameAsRequested);
    }
    if let Some(bytes) = c.gpu_mem_limit {
        cuda = cuda.with_memory_limit(bytes);
    }
    cuda
}

/// One attempt on `kind`: the session, or what became of the attempt. A model the CPU cannot load (or that is
/// broken for every provider) is an error, not a failed attempt.
fn try_provider(
    rt: &Runtime,
    path: &Path,
    options: &OnnxOptions,
    preference: &[ProviderKind],
    kind: ProviderKind,
) -> Result<Result<Session, AttemptOutcome>, EngineError> {
    if let Err(reason) = provider_available(rt, kind) {
        return Ok(Err(AttemptOutcome::NotAvailable(reason)));
    }
    let eps = provider_dispatch(rt, path, kind, options, preference);
    // Held while the session builds, which is when TensorRT builds (or loads) its engines.
    let _build_lock = (kind == ProviderKind::TensorRt).then(|| build_lock(options));
    let mut builder = match base_builder(rt, options)?.with_execution_providers(eps) {
        Ok(builder) => builder,
        Err(e) => {
            return Ok(Err(AttemptOutcome::Failed(format!(
                "registration failed: {}",
                clean_ort_message(e.message())
            ))));
        }
    };
    match builder.commit_from_file(path) {
        Ok(session) => Ok(Ok(session)),
        Err(e) if kind == ProviderKind::Cpu || is_model_error(&e) => {
            Err(model_load_error(path, &e))
        }
        Err(e) => Ok(Err(AttemptOutcome::Failed(format!(
            "the session did not build: {}",
            clean_ort_message(e.message())
        )))),
    }
}

/// The engine cache's build lock, with a note when another process kept us waiting; `None` (and a note)
/// where the cache cannot be locked, e.g. on a file system without locks.
fn build_lock(options: &OnnxOptions) -> Option<BuildLock> {
    let dir = options
        .providers
        .engine_cache_dir(options.output_dir.as_deref());
    match BuildLock::acquire(&dir) {
        Ok(lock) => {
            if let Some(line) = lock.wait_note() {
                ort_log::note(line);
            }
            Some(lock)
        }
        Err(e) => {
            ort_log::note(format!(
                "could not lock the TensorRT engine cache {} ({e}): processes that build the same engine \
                 at once may overwrite each other's files",
                dir.display()
            ));
            None
        }
    }
}

/// Tries the providers in order; returns the session, the provider that runs it and every attempt.
pub(super) fn open_session(
    rt: &Runtime,
    path: &Path,
    options: &OnnxOptions,
) -> Result<(Session, ProviderKind, Vec<ProviderAttempt>), EngineError> {
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
    for (index, &kind) in preference.iter().enumerate() {
        if preference[..index].contains(&kind) {
            continue;
        }
        let outcome = if chosen.is_some() {
            AttemptOutcome::NotTried
        } else {
            match try_provider(rt, path, options, &preference, kind)? {
                Ok(session) => {
                    chosen = Some((session, kind));
                    AttemptOutcome::Ran
                }
                Err(outcome) => outcome,
            }
        };
        let failed = !matches!(outcome, AttemptOutcome::Ran | AttemptOutcome::NotTried);
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
