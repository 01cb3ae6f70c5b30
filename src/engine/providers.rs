//! Execution providers: which to try, with what options, and what became of each.
//!
//! Providers are tried in the caller's order of preference (say tensorrt, cuda, cpu). Each is registered with
//! `error_on_failure` and a session is built with it; if either step fails the reason is recorded and the next
//! provider is tried, unless `fallback` is off, which turns the first failure into an error. ONNX Runtime's own
//! silent fallback to CPU never hides a failure this way.
//!
//! TensorRT builds an engine per model and shape, which takes minutes: engines are cached, by default under
//! the caller's output folder (`<output>/trt-engines`), else under `trt-engines` in difflab's cache folder ([`cache_dir`](crate::cache_dir)).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::trt_profile::ShapeProfile;

/// An execution provider difflab can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProviderKind {
    TensorRt,
    Cuda,
    Cpu,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::TensorRt,
        ProviderKind::Cuda,
        ProviderKind::Cpu,
    ];

    /// The short name used on the command line: `tensorrt`, `cuda`, `cpu`.
    pub fn key(self) -> &'static str {
        match self {
            ProviderKind::TensorRt => "tensorrt",
            ProviderKind::Cuda => "cuda",
            ProviderKind::Cpu => "cpu",
        }
    }

    /// ONNX Runtime's name, e.g. `CUDAExecutionProvider`.
    pub fn ort_name(self) -> &'static str {
        match self {
            ProviderKind::TensorRt => "TensorrtExecutionProvider",
            ProviderKind::Cuda => "CUDAExecutionProvider",
            ProviderKind::Cpu => "CPUExecutionProvider",
        }
    }

    pub fn from_ort_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.ort_name() == name)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" | "tensorrtexecutionprovider" => Ok(ProviderKind::TensorRt),
            "cuda" | "cudaexecutionprovider" => Ok(ProviderKind::Cuda),
            "cpu" | "cpuexecutionprovider" => Ok(ProviderKind::Cpu),
            other => Err(format!(
                "unknown execution provider '{other}' (difflab knows tensorrt, cuda, cpu)"
            )),
        }
    }
}

/// Which providers to try and how to set them up.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderOptions {
    /// In order of preference.
    pub preference: Vec<ProviderKind>,
    /// Go on to the next provider when one fails (default); when false, the first failure is an error.
    pub fallback: bool,
    /// The CUDA device for the CUDA and TensorRT providers.
    pub device_id: i32,
    /// Let TensorRT build fp16 kernels.
    pub trt_fp16: bool,
    /// Where TensorRT keeps its engines; `None`: `<output_dir>/trt-engines`, else the user cache.
    pub trt_engine_cache: Option<PathBuf>,
    /// TensorRT's builder workspace in bytes; `None` leaves ONNX Runtime's default.
    pub trt_max_workspace: Option<usize>,
    /// TensorRT's min/opt/max input shapes; engines are cached per profile.
    pub trt_profile: Option<ShapeProfile>,
    /// TensorRT's builder optimization level (0–5); `None` leaves ONNX Runtime's default (3).
    pub trt_builder_optimization_level: Option<u8>,
    /// Keep LayerNorm in fp32 inside fp16 engines; `None`: on when `trt_fp16` is.
    pub trt_layer_norm_fp32_fallback: Option<bool>,
    /// Capture TensorRT's (or CUDA's) launches in a CUDA graph.
    pub trt_cuda_graph: bool,
    /// The CUDA provider's settings, also for the nodes TensorRT leaves to CUDA.
    pub cuda: CudaOptions,
}

/// `[model.cuda]`: ONNX Runtime's CUDA provider options, by its key names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CudaOptions {
    /// `use_tf32`: off by default here (ONNX Runtime's default is on), so GPU fp32 results match the CPU's.
    pub tf32: bool,
    /// `cudnn_conv_algo_search`: exhaustive (ONNX Runtime's default), heuristic or default.
    pub cudnn_conv_algo_search: Option<String>,
    /// `arena_extend_strategy`: next_power_of_two (default) or same_as_requested.
    pub arena_extend_strategy: Option<String>,
    /// `gpu_mem_limit` in bytes.
    pub gpu_mem_limit: Option<usize>,
    /// `prefer_nhwc`.
    pub prefer_nhwc: bool,
    /// `enable_cuda_graph`.
    pub cuda_graph: bool,
}

impl CudaOptions {
    pub const CONV_SEARCH: [&'static str; 3] = ["exhaustive", "heuristic", "default"];
    pub const ARENA: [&'static str; 2] = ["next_power_of_two", "same_as_requested"];
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            preference: ProviderKind::ALL.to_vec(),
            fallback: true,
            device_id: 0,
            trt_fp16: false,
            trt_engine_cache: None,
            trt_max_workspace: None,
            trt_profile: None,
            trt_builder_optimization_level: None,
            trt_layer_norm_fp32_fallback: None,
            trt_cuda_graph: false,
            cuda: CudaOptions::default(),
        }
    }
}

impl ProviderOptions {
    /// Only the CPU.
    pub fn cpu() -> Self {
        Self {
            preference: vec![ProviderKind::Cpu],
            ..Self::default()
        }
    }

    /// The TensorRT engine cache folder, given the caller's output folder.
    pub fn engine_cache_dir(&self, output_dir: Option<&Path>) -> PathBuf {
        if let Some(dir) = &self.trt_engine_cache {
            return dir.clone();
        }
        if let Some(out) = output_dir {
            return out.join("trt-engines");
        }
        crate::cache_dir::cache_dir().join("trt-engines")
    }
}

/// A model's TensorRT engine folder under the cache: one per model (by its files' fingerprint) and shape
/// profile. The timing cache above it is shared: it is keyed by layer, not by model.
pub fn engine_dir(
    cache: &Path,
    model_fingerprint: &str,
    profile: Option<&ShapeProfile>,
) -> PathBuf {
    let model = cache.join(format!("model-{model_fingerprint}"));
    match profile {
        Some(profile) => model.join(format!("profile-{}", profile.key())),
        None => model,
    }
}

/// What became of one requested provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The session runs on it.
    Ran,
    /// The runtime has it, but registering it or building the session with it failed.
    Failed(String),
    /// The loaded ONNX Runtime build does not have it.
    NotAvailable(String),
    /// Not tried: a provider earlier in the list already runs the model.
    NotTried,
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptOutcome::Ran => f.write_str("runs the model"),
            AttemptOutcome::Failed(reason) => write!(f, "failed: {reason}"),
            AttemptOutcome::NotAvailable(reason) => write!(f, "not available: {reason}"),
            AttemptOutcome::NotTried => {
                f.write_str("not tried (an earlier provider runs the model)")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAttempt {
    pub provider: ProviderKind,
    pub outcome: AttemptOutcome,
}

/// What became of each provider, like "tensorrt, cuda: not available: …; cpu: runs the model":
/// providers with the same outcome and reason share one entry, so a reason is said once.
pub fn describe_attempts(attempts: &[ProviderAttempt]) -> String {
    let mut groups: Vec<(Vec<String>, &AttemptOutcome)> = Vec::new();
    for a in attempts {
        match groups.iter_mut().find(|g| g.1 == &a.outcome) {
            Some(g) => g.0.push(a.provider.to_string()),
            None => groups.push((vec![a.provider.to_string()], &a.outcome)),
        }
    }
    groups
        .iter()
        .map(|(names, outcome)| format!("{}: {outcome}", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The providers that did not run, in a few words for a status line: "tensorrt, cuda: not available".
/// Empty when the first one tried runs the model.
pub fn summarize_attempts(attempts: &[ProviderAttempt]) -> String {
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for a in attempts {
        let kind = match a.outcome {
            AttemptOutcome::Failed(_) => "failed",
            AttemptOutcome::NotAvailable(_) => "not available",
            AttemptOutcome::Ran | AttemptOutcome::NotTried => continue,
        };
        match groups.iter_mut().find(|g| g.0 == kind) {
            Some(g) => g.1.push(a.provider.to_string()),
            None => groups.push((kind, vec![a.provider.to_string()])),
        }
    }
    groups
        .iter()
        .map(|(kind, names)| format!("{}: {kind}", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// ONNX Runtime's message without its source location and status prefix ("…/provider_bridge_ort.cc:2043 …
/// \[ONNXRuntimeError\] : 1 : FAIL : "), with a hint when a GPU library is missing.
pub fn clean_ort_message(message: &str) -> String {
    let mut text = message.trim();
    if let Some((_, rest)) = text.rsplit_once("[ONNXRuntimeError] : ") {
        let mut parts = rest.splitn(3, " : ");
        if let (Some(_code), Some(_name), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
            text = rest.trim();
        }
    }
    let mut text = text.to_string();
    if text.contains("cannot open shared object file") {
        text.push_str(
            " (the CUDA, cuDNN or TensorRT libraries this provider needs are not on the loader path: install them \
             (e.g. the nvidia-* pip packages that onnxruntime-gpu lists) and add their lib folders to LD_LIBRARY_PATH)",
        );
    }
    text
}

/// Counts the nodes per provider in an ONNX Runtime profile (the JSON that session profiling writes): each
/// node event names its provider. The counts are of the nodes as run, after graph optimisation and fusion (a
/// TensorRT engine shows as one node).
pub fn nodes_per_provider(profile_json: &str) -> Result<BTreeMap<String, usize>, String> {
    let events: serde_json::Value =
        serde_json::from_str(profile_json).map_err(|e| format!("unreadable profile: {e}"))?;
    let events = events
        .as_array()
        .ok_or("the profile is not a list of events")?;
    let mut nodes: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for event in events {
        if event.get("cat").and_then(|c| c.as_str()) != Some("Node") {
            continue;
        }
        let Some(name) = event.get("name").and_then(|n| n.as_str()) else {
            continue;
        };
        let Some(provider) = event
            .get("args")
            .and_then(|a| a.get("provider"))
            .and_then(|p| p.as_str())
        else {
            continue;
        };
        let node = name
            .strip_suffix("_kernel_time")
            .or_else(|| name.strip_suffix("_fence_before"))
            .or_else(|| name.strip_suffix("_fence_after"))
            .unwrap_or(name);
        nodes
            .entry(provider.to_string())
            .or_default()
            .insert(node.to_string());
    }
    Ok(nodes.into_iter().map(|(p, n)| (p, n.len())).collect())
}

#[cfg(test)]
mod tests {

    #[test]
    fn engines_are_kept_per_model_fingerprint_and_profile() {
        let cache = Path::new("/c/trt-engines");
        let a = engine_dir(cache, "0123456789abcdef", None);
        let b = engine_dir(cache, "fedcba9876543210", None);
        assert_eq!(a, Path::new("/c/trt-engines/model-0123456789abcdef"));
        assert_ne!(
            a, b,
            "two fine-tunes of one file name never share an engine"
        );
    }

    use super::*;

    #[test]
    fn ort_messages_lose_their_prefix() {
        let raw = "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& \
                   onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library \
                   libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: \
                   No such file or directory\n";
        let clean = clean_ort_message(raw);
        assert!(
            clean.starts_with("Failed to load library libonnxruntime_providers_cuda.so"),
            "{clean}"
        );
        assert!(clean.contains("LD_LIBRARY_PATH"), "{clean}");
        assert_eq!(clean_ort_message(" plain message\n"), "plain message");
    }

    #[test]
    fn the_summary_names_the_providers_that_did_not_run() {
        let attempt = |provider, outcome| ProviderAttempt { provider, outcome };
        let why = || "the loaded ONNX Runtime 1.32.0 was built without it".to_string();
        let attempts = [
            attempt(ProviderKind::TensorRt, AttemptOutcome::NotAvailable(why())),
            attempt(ProviderKind::Cuda, AttemptOutcome::NotAvailable(why())),
            attempt(ProviderKind::Cpu, AttemptOutcome::Ran),
        ];
        assert_eq!(
            summarize_attempts(&attempts),
            "tensorrt, cuda: not available"
        );
        assert_eq!(
            describe_attempts(&attempts),
            "tensorrt, cuda: not available: the loaded ONNX Runtime 1.32.0 was built without it; cpu: runs the model",
            "a reason shared by two providers is said once"
        );
        let attempts = [
            attempt(
                ProviderKind::TensorRt,
                AttemptOutcome::Failed("no libnvinfer".into()),
            ),
            attempt(ProviderKind::Cuda, AttemptOutcome::Ran),
            attempt(ProviderKind::Cpu, AttemptOutcome::NotTried),
        ];
        assert_eq!(summarize_attempts(&attempts), "tensorrt: failed");
        assert_eq!(
            summarize_attempts(&attempts[1..]),
            "",
            "the first choice ran"
        );
    }

    #[test]
    fn parse_names() {
        assert_eq!("TRT".parse::<ProviderKind>(), Ok(ProviderKind::TensorRt));
        assert_eq!("cuda".parse::<ProviderKind>(), Ok(ProviderKind::Cuda));
        assert!(
            "rocm"
                .parse::<ProviderKind>()
                .unwrap_err()
                .contains("unknown")
        );
    }

    #[test]
    fn engine_cache_prefers_explicit_then_output_dir() {
        let mut options = ProviderOptions::default();
        assert_eq!(
            options.engine_cache_dir(Some(Path::new("/runs/a"))),
            PathBuf::from("/runs/a/trt-engines")
        );
        options.trt_engine_cache = Some("/engines".into());
        assert_eq!(
            options.engine_cache_dir(Some(Path::new("/runs/a"))),
            PathBuf::from("/engines")
        );
    }

    #[test]
    fn counts_nodes_once_per_provider() {
        let json = r#"[
            {"cat":"Session","name":"model_loading_uri"},
            {"cat":"Node","name":"Mul_0_fence_before","args":{"provider":"CPUExecutionProvider"}},
            {"cat":"Node","name":"Mul_0_kernel_time","args":{"provider":"CPUExecutionProvider","op_name":"Mul"}},
            {"cat":"Node","name":"Mul_0_kernel_time","args":{"provider":"CPUExecutionProvider","op_name":"Mul"}},
            {"cat":"Node","name":"TRTKernel_graph_1_kernel_time","args":{"provider":"TensorrtExecutionProvider"}}
        ]"#;
        let counts = nodes_per_provider(json).unwrap();
        assert_eq!(counts["CPUExecutionProvider"], 1);
        assert_eq!(counts["TensorrtExecutionProvider"], 1);
    }
}
