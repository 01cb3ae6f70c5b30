//! Finding and loading the ONNX Runtime shared library.
//!
//! difflab never links ONNX Runtime: it loads `libonnxruntime.so` at run time, once per process, from the first
//! of these places that has it:
//!
//! 1. `ORT_DYLIB_PATH` (a library file or a folder holding one);
//! 2. a path the caller gives (an experiment file's `runtime` entry, `--runtime`);
//! 3. the folder of the running executable;
//! 4. the `onnxruntime` / `onnxruntime-gpu` Python package, when `python3` (or `$DIFFLAB_PYTHON`) has it: its
//!    `capi/` folder holds the library and, for the GPU package, the CUDA and TensorRT provider libraries, which is
//!    how most GPU users have ONNX Runtime;
//! 5. the pinned CPU build (1.32.0) that `build.rs` fetched into the user cache.
//!
//! The first two are what the user asked for: when set, they must work, and nothing else is tried. The last
//! three are tried in turn; one that exists but fails to load is passed over (and reported). The library must
//! be ONNX Runtime 1.22 or newer.

use std::ffi::{CStr, OsString};
use std::fmt;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The ONNX Runtime version `build.rs` fetches.
pub const PINNED_ORT_VERSION: &str = "1.32.0";

/// How long the Python interpreter may take to say where its `onnxruntime` package is.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a runtime library came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeSource {
    /// The `ORT_DYLIB_PATH` environment variable.
    EnvVar,
    /// A path the caller gave.
    Caller,
    /// The folder of the running executable.
    NextToExecutable,
    /// A Python package's `capi/` folder; the distribution's name (`onnxruntime-gpu`, `onnxruntime`).
    PythonPackage(String),
    /// The pinned CPU build that the build fetched into the user cache.
    Bundled,
}

impl fmt::Display for RuntimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EnvVar => f.write_str("ORT_DYLIB_PATH"),
            Self::Caller => f.write_str("the path given"),
            Self::NextToExecutable => f.write_str("next to the executable"),
            Self::PythonPackage(dist) => write!(f, "the Python package {dist}"),
            Self::Bundled => write!(
                f,
                "the pinned ONNX Runtime {PINNED_ORT_VERSION} fetched by the build"
            ),
        }
    }
}

/// A place that holds (or should hold) a runtime library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub source: RuntimeSource,
    pub path: PathBuf,
}

/// Where to look; [`DiscoveryInputs::from_process`] fills it from the environment, tests fill it by hand.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryInputs {
    /// `ORT_DYLIB_PATH`.
    pub env_path: Option<PathBuf>,
    /// The caller's path.
    pub caller_path: Option<PathBuf>,
    /// The running executable's folder.
    pub exe_dir: Option<PathBuf>,
    /// The Python interpreter to ask for its `onnxruntime` package; `None` asks none.
    pub python: Option<OsString>,
    /// The library file the build fetched (it may be absent).
    pub bundled: Option<PathBuf>,
}

impl DiscoveryInputs {
    /// Reads `ORT_DYLIB_PATH`, `DIFFLAB_PYTHON` (an interpreter, or empty / `none` to skip Python; default
    /// `python3`) and the executable's folder from the process.
    pub fn from_process(caller_path: Option<&Path>) -> Self {
        let env_path = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let python = match std::env::var_os("DIFFLAB_PYTHON") {
            Some(v) if v.is_empty() || v == "none" => None,
            Some(v) => Some(v),
            None => Some(OsString::from("python3")),
        };
        Self {
            env_path,
            caller_path: caller_path.map(Path::to_path_buf),
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            python,
            bundled: bundled_library(),
        }
    }
}

/// The pinned library's path as the build computed it (it exists only if the fetch worked).
pub fn bundled_library() -> Option<PathBuf> {
    option_env!("DIFFLAB_BUNDLED_ORT").map(PathBuf::from)
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "{origin} points at {}, which does not exist{}",
        path.display(),
        fix_hint()
    )]
    Missing {
        origin: RuntimeSource,
        path: PathBuf,
    },
    #[error(
        "{origin} points at the folder {}, which holds no ONNX Runtime library ({}){}",
        path.display(),
        library_pattern(),
        fix_hint()
    )]
    EmptyFolder {
        origin: RuntimeSource,
        path: PathBuf,
    },
    #[error("ONNX Runtime from {origin} ({}) did not load: {reason}{}", path.display(), fix_hint())]
    Load {
        origin: RuntimeSource,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "no ONNX Runtime library found (looked at: {}){}",
        if looked.is_empty() { "nothing".to_string() } else { looked.join("; ") },
        fix_hint()
    )]
    NotFound { looked: Vec<String> },
    #[error(
        "ONNX Runtime is already loaded in this process from {} ({origin}); it cannot switch to {}",
        loaded.display(),
        requested.display()
    )]
    AlreadyLoaded {
        origin: RuntimeSource,
        loaded: PathBuf,
        requested: PathBuf,
    },
}

fn fix_hint() -> String {
    format!(
        ". To get ONNX Runtime: `python3 -m pip install onnxruntime=={PINNED_ORT_VERSION}` (or onnxruntime-gpu for CUDA/TensorRT), \
         or set ORT_DYLIB_PATH to a libonnxruntime.so (1.22 or newer), or rebuild difflab online so that the build fetches it"
    )
}

fn library_pattern() -> String {
    format!(
        "{}onnxruntime{}*",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The candidates to try, in order. An explicit place (`ORT_DYLIB_PATH`, the caller's path) is the only
/// candidate when set, and an error when it holds no library; the implicit places are listed when they exist.
/// Each candidate's path is a library file.
pub fn candidates(inputs: &DiscoveryInputs) -> Result<Vec<Candidate>, RuntimeError> {
    for (source, path) in [
        (RuntimeSource::EnvVar, &inputs.env_path),
        (RuntimeSource::Caller, &inputs.caller_path),
    ] {
        if let Some(path) = path {
            return explicit_candidate(source, path).map(|c| vec![c]);
        }
    }
    let mut found = Vec::new();
    if let Some(file) = inputs.exe_dir.as_deref().and_then(library_in) {
        found.push(Candidate {
            source: RuntimeSource::NextToExecutable,
            path: file,
        });
    }
    if let Some((dir, dist)) = inputs.python.as_deref().and_then(python_capi_dir)
        && let Some(file) = library_in(&dir)
    {
        found.push(Candidate {
            source: RuntimeSource::PythonPackage(dist),
            path: file,
        });
    }
    if let Some(file) = inputs.bundled.as_ref().filter(|p| p.is_file()) {
        found.push(Candidate {
            source: RuntimeSource::Bundled,
            path: file.clone(),
        });
    }
    Ok(found)
}

/// What [`candidates`] would look at, for the "not found" message.
fn looked_at(inputs: &DiscoveryInputs) -> Vec<String> {
    let mut looked = Vec::new();
    if let Some(dir) = &inputs.exe_dir {
        looked.push(format!("{} (next to the executable)", dir.display()));
    }
    match &inputs.python {
        Some(py) => looked.push(format!(
            "the onnxruntime Python package of `{}` (none)",
            py.to_string_lossy()
        )),
        None => looked.push("no Python (DIFFLAB_PYTHON=none)".into()),
    }
    match &inputs.bundled {
        Some(p) => looked.push(format!(
            "{} (the build's fetch of ONNX Runtime {PINNED_ORT_VERSION}; absent: the build was offline or had DIFFLAB_NO_FETCH set)",
            p.display()
        )),
        None => looked.push("no pinned build for this platform".into()),
    }
    looked
}

fn explicit_candidate(source: RuntimeSource, path: &Path) -> Result<Candidate, RuntimeError> {
    if path.is_dir() {
        return match library_in(path) {
            Some(file) => Ok(Candidate { source, path: file }),
            None => Err(RuntimeError::EmptyFolder {
                origin: source,
                path: path.to_path_buf(),
            }),
        };
    }
    if !path.exists() {
        return Err(RuntimeError::Missing {
            origin: source,
            path: path.to_path_buf(),
        });
    }
    Ok(Candidate {
        source,
        path: path.to_path_buf(),
    })
}

/// The ONNX Runtime library in `dir`: `libonnxruntime.so` itself, else the highest versioned
/// `libonnxruntime.so.1.x.y` (provider libraries excluded).
pub fn library_in(dir: &Path) -> Option<PathBuf> {
    let prefix = format!("{}onnxruntime", std::env::consts::DLL_PREFIX);
    let suffix = std::env::consts::DLL_SUFFIX;
    let exact = dir.join(format!("{prefix}{suffix}"));
    if exact.is_file() {
        return Some(exact);
    }
    let mut versioned: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(&prefix)?;
            // libonnxruntime.so.1.32.0 (Linux), libonnxruntime.1.32.0.dylib (macOS)
            let version = rest
                .strip_prefix(&format!("{suffix}."))
                .or_else(|| rest.strip_prefix('.')?.strip_suffix(suffix))?;
            let parts: Option<Vec<u64>> = version.split('.').map(|p| p.parse().ok()).collect();
            let path = e.path();
            Some((parts?, path)).filter(|(_, p)| p.is_file())
        })
        .collect();
    versioned.sort();
    versioned.pop().map(|(_, p)| p)
}

/// Asks `python` where its `onnxruntime` package is, without importing it (so a broken CUDA install cannot
/// hang or crash the probe). Returns the `capi/` folder and the distribution's name.
fn python_capi_dir(python: &std::ffi::OsStr) -> Option<(PathBuf, String)> {
    const PROBE: &str = "\
import importlib.util, importlib.metadata as md, os
spec = importlib.util.find_spec('onnxruntime')
if spec is None or not spec.submodule_search_locations:
    raise SystemExit(3)
dist = 'onnxruntime'
for name in ('onnxruntime-gpu', 'onnxruntime', 'onnxruntime-openvino', 'onnxruntime-directml'):
    try:
        md.version(name)
        dist = name
        break
    except Exception:
        pass
print(os.path.join(list(spec.submodule_search_locations)[0], 'capi'))
print(dist)
";
    let mut child = Command::new(python)
        .args(["-c", PROBE])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if start.elapsed() > PYTHON_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    let mut lines = out.lines();
    let dir = PathBuf::from(lines.next()?.trim());
    let dist = lines.next().unwrap_or("onnxruntime").trim().to_string();
    Some((dir, dist))
}

/// What was loaded, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The library file.
    pub path: PathBuf,
    /// As the library reports it (`OrtGetApiBase()->GetVersionString()`), e.g. "1.32.0".
    pub version: String,
    pub source: RuntimeSource,
    /// Libraries found before this one that did not load, with the reason.
    pub passed_over: Vec<String>,
    /// The execution providers this build of ONNX Runtime has (e.g. CPUExecutionProvider).
    pub providers: Vec<String>,
}

/// The loaded runtime: its description and the process-wide ONNX Runtime environment.
pub struct Runtime {
    pub info: RuntimeInfo,
    pub(crate) env: ort::environment::Environment,
}

impl Runtime {
    /// The ONNX Runtime environment, for building sessions of one's own (`ort::session::Session::builder`);
    /// ONNX Runtime allows one per process.
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.env
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("info", &self.info).finish()
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Finds and loads ONNX Runtime (once per process; later calls return the same runtime).
///
/// `caller_path` is a library file or a folder holding one. A failed attempt leaves nothing behind: a later
/// call can still load a runtime from elsewhere. Asking for a different library once one is loaded is an error
/// ([`RuntimeError::AlreadyLoaded`]), since ONNX Runtime cannot be swapped within a process.
pub fn runtime(caller_path: Option<&Path>) -> Result<&'static Runtime, RuntimeError> {
    runtime_from(&DiscoveryInputs::from_process(caller_path))
}

/// [`runtime`] with explicit discovery inputs.
pub fn runtime_from(inputs: &DiscoveryInputs) -> Result<&'static Runtime, RuntimeError> {
    if let Some(rt) = RUNTIME.get() {
        check_same(rt, inputs)?;
        return Ok(rt);
    }
    let _guard = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        check_same(rt, inputs)?;
        return Ok(rt);
    }
    let found = candidates(inputs)?;
    if found.is_empty() {
        return Err(RuntimeError::NotFound {
            looked: looked_at(inputs),
        });
    }
    let explicit = matches!(
        found[0].source,
        RuntimeSource::EnvVar | RuntimeSource::Caller
    );
    let mut passed_over = Vec::new();
    let mut last_error = None;
    for candidate in found {
        match load(&candidate) {
            Ok((env, version)) => {
                let info = RuntimeInfo {
                    path: candidate.path,
                    version,
                    source: candidate.source,
                    passed_over,
                    providers: available_providers(),
                };
                return Ok(RUNTIME.get_or_init(|| Runtime { info, env }));
            }
            Err(LoadFailure::Fatal(reason)) => {
                return Err(RuntimeError::Load {
                    origin: candidate.source,
                    path: candidate.path,
                    reason,
                });
            }
            Err(LoadFailure::Skippable(reason)) => {
                passed_over.push(format!(
                    "{} ({}): {reason}",
                    candidate.path.display(),
                    candidate.source
                ));
                last_error = Some(RuntimeError::Load {
                    origin: candidate.source,
                    path: candidate.path,
                    reason,
                });
                if explicit {
                    break;
                }
            }
        }
    }
    // `found` is not empty, so every path out of the loop above has set `last_error`.
    Err(last_error.unwrap_or_else(|| RuntimeError::NotFound {
        looked: looked_at(inputs),
    }))
}

/// The runtime, if one is loaded.
pub fn loaded_runtime() -> Option<&'static Runtime> {
    RUNTIME.get()
}

fn check_same(rt: &Runtime, inputs: &DiscoveryInputs) -> Result<(), RuntimeError> {
    let wanted = match (&inputs.env_path, &inputs.caller_path) {
        (Some(p), _) => explicit_candidate(RuntimeSource::EnvVar, p)?,
        (None, Some(p)) => explicit_candidate(RuntimeSource::Caller, p)?,
        (None, None) => return Ok(()),
    };
    let same = match (
        std::fs::canonicalize(&wanted.path),
        std::fs::canonicalize(&rt.info.path),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => wanted.path == rt.info.path,
    };
    if same {
        Ok(())
    } else {
        Err(RuntimeError::AlreadyLoaded {
            origin: rt.info.source.clone(),
            loaded: rt.info.path.clone(),
            requested: wanted.path,
        })
    }
}

enum LoadFailure {
    /// This library is unusable; another may do.
    Skippable(String),
    /// ONNX Runtime got half set up: nothing else can be loaded in this process.
    Fatal(String),
}

/// Checks the library (loads, exports `OrtGetApiBase`, new enough) before handing it to `ort`, whose own
/// loader panics on some of these failures.
fn load(candidate: &Candidate) -> Result<(ort::environment::Environment, String), LoadFailure> {
    let version = probe_version(&candidate.path).map_err(LoadFailure::Skippable)?;
    let minimum = ort::MINOR_VERSION;
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if minor < minimum {
        return Err(LoadFailure::Skippable(format!(
            "it is ONNX Runtime {version}; difflab needs 1.{minimum} or newer"
        )));
    }
    let path = candidate.path.clone();
    let loaded = catch_unwind(AssertUnwindSafe(|| ort::init_from(&path)));
    let builder = match loaded {
        Ok(Ok(builder)) => builder,
        Ok(Err(e)) => return Err(LoadFailure::Skippable(e.to_string())),
        Err(panic) => return Err(LoadFailure::Skippable(panic_message(&panic))),
    };
    let built = catch_unwind(AssertUnwindSafe(|| {
        builder
            .with_name("difflab")
            .with_telemetry(false)
            .with_logger(super::ort_log::logger())
            .build()
    }));
    match built {
        Ok(Ok(env)) => {
            // The logger is handed everything by default; ONNX Runtime need not even format its notes.
            env.set_log_level(ort::logging::LogLevel::Warning);
            Ok((env, version))
        }
        Ok(Err(e)) => Err(LoadFailure::Fatal(format!(
            "could not create the ONNX Runtime environment: {e}"
        ))),
        Err(panic) => Err(LoadFailure::Fatal(format!(
            "could not create the ONNX Runtime environment: {}",
            panic_message(&panic)
        ))),
    }
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "ONNX Runtime panicked".to_string()
    }
}

/// Opens the library and asks it for its version string.
fn probe_version(path: &Path) -> Result<String, String> {
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: loading a shared library runs its initialisers; this is the library the user pointed us at (or
    // the pinned one), which is what we are about to run anyway.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
        // libloading says "dlopen failed" and keeps dlerror()'s text as the source.
        let text = match std::error::Error::source(&e) {
            Some(detail) => detail.to_string(),
            None => e.to_string(),
        };
        if text.contains("invalid ELF header") || text.contains("file too short") {
            format!("it is not a shared library ({text})")
        } else {
            text
        }
    })?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release.
    let get_base = unsafe { lib.get::<GetApiBase>(b"OrtGetApiBase") }
        .map_err(|_| "it does not export OrtGetApiBase: not an ONNX Runtime library".to_string())?;
    // SAFETY: the function takes no arguments and returns a pointer to a static struct (or null).
    let base = unsafe { get_base() };
    if base.is_null() {
        return Err("OrtGetApiBase returned nothing".into());
    }
    // SAFETY: `base` is non-null and points at the library's static OrtApiBase; GetVersionString returns a
    // static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(((*base).GetVersionString)()) };
    Ok(version.to_string_lossy().into_owned())
}

/// The execution providers compiled into the loaded ONNX Runtime.
fn available_providers() -> Vec<String> {
    use ort::ep::ExecutionProvider;
    let mut names = Vec::new();
    for (name, available) in [
        (
            "TensorrtExecutionProvider",
            ort::ep::TensorRT::is_available(),
        ),
        ("CUDAExecutionProvider", ort::ep::CUDA::is_available()),
        ("CPUExecutionProvider", ort::ep::CPU::is_available()),
    ] {
        if available.unwrap_or(false) {
            names.push(name.to_string());
        }
    }
    names
}
