//! `difflab info MODEL.onnx`: what the engine makes of a model.

use std::io::Write;
use std::path::PathBuf;

use crate::engine::limits::{cap_threads, check_sample_shape};
use crate::engine::{OnnxOptions, ProviderKind, ProviderOptions, RoleOverrides, inspect, roles};
use crate::sampler::PredictionType;
use clap::Args;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The model (.onnx).
    pub model: PathBuf,
    /// Execution providers in order of preference: tensorrt, cuda, cpu (repeat or separate with commas).
    /// With fallback on, the CPU runs the model when none of them can.
    #[arg(long = "ep", value_delimiter = ',', default_values_t = ProviderKind::ALL.to_vec())]
    pub ep: Vec<ProviderKind>,
    /// Fail instead of falling back when a requested provider does not run the model.
    #[arg(long)]
    pub no_fallback: bool,
    /// CUDA device for the CUDA and TensorRT providers.
    #[arg(long, default_value_t = 0)]
    pub device: i32,
    /// Let TensorRT build fp16 kernels.
    #[arg(long)]
    pub trt_fp16: bool,
    /// TensorRT engine cache folder (default: OUTPUT/trt-engines, else the user cache).
    #[arg(long)]
    pub trt_cache: Option<PathBuf>,
    /// TensorRT builder workspace, in MiB.
    #[arg(long)]
    pub trt_workspace_mib: Option<usize>,
    /// The run's output folder (TensorRT engines are cached under it).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// ONNX Runtime library (or a folder holding one); ORT_DYLIB_PATH wins over it.
    #[arg(long)]
    pub runtime: Option<PathBuf>,
    /// Name an input's or the output's role: ROLE=NAME with ROLE one of sample, timestep, class_labels,
    /// conditioning, output (repeatable).
    #[arg(long = "role", value_parser = roles::parse_override)]
    pub roles: Vec<(roles::Role, String)>,
    /// One sample's shape C,H,W, for models whose sample input leaves it dynamic.
    #[arg(long, value_delimiter = ',', num_args = 3)]
    pub sample_shape: Option<Vec<usize>>,
    /// What the model predicts (default: scheduler_config.json beside the model, else epsilon).
    #[arg(long, value_parser = parse_prediction_type)]
    pub prediction_type: Option<PredictionType>,
    /// Threads within an operator (default: ONNX Runtime's, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The typical batch to time besides batch 1 (0: time batch 1 only).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Timed calls per batch size (after two warm-up calls).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

fn parse_prediction_type(text: &str) -> Result<PredictionType, String> {
    PredictionType::from_name(text).ok_or_else(|| {
        format!(
            "unknown prediction type '{text}' (one of {})",
            PredictionType::NAMES.join(", ")
        )
    })
}

impl InfoArgs {
    pub fn options(&self) -> OnnxOptions {
        let sample_shape = match self.sample_shape.as_deref() {
            Some(&[c, h, w]) => Some([c, h, w]),
            _ => None,
        };
        OnnxOptions {
            providers: ProviderOptions {
                preference: self.ep.clone(),
                fallback: !self.no_fallback,
                device_id: self.device,
                trt_fp16: self.trt_fp16,
                trt_engine_cache: self.trt_cache.clone(),
                trt_max_workspace: self.trt_workspace_mib.map(|m| m << 20),
            },
            prediction_type: self.prediction_type,
            roles: self.roles.iter().cloned().collect::<RoleOverrides>(),
            sample_shape,
            runtime_path: self.runtime.clone(),
            output_dir: self.output.clone(),
            intra_threads: self.threads.map(|t| cap_threads(t).0),
            profile_nodes: true,
        }
    }
}

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    if let Some(&[c, h, w]) = args.sample_shape.as_deref() {
        check_sample_shape([c, h, w]).map_err(anyhow::Error::msg)?;
    }
    if let Some((_, Some(note))) = args.threads.map(cap_threads) {
        eprintln!("warning: {note}");
    }
    let mut batches = vec![1];
    if args.batch > 1 {
        batches.push(args.batch);
    }
    let report = inspect(&args.model, &args.options(), &batches, args.runs)?;
    if let Some(note) = &report.non_finite {
        eprintln!("warning: {note}");
    }
    // A closed pipe (`difflab info … | head`) is not an error.
    let mut stdout = std::io::stdout().lock();
    match write!(stdout, "{report}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
