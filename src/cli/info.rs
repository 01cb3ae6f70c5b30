//! `difflab info MODEL`: what the engine makes of a model: a U-Net file, a whole pipeline folder (every
//! component), or any other ONNX file (its inputs, outputs and what difflab would use it as).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::describe::describe_onnx;
use crate::engine::limits::{cap_threads, frame_shape};
use crate::engine::pipeline_folder::{Family, read_pipeline};
use crate::engine::trt_profile::ShapeHints;
use crate::engine::{
    EngineError, OnnxOptions, ProviderKind, ProviderOptions, RoleOverrides, TimingPlan, inspect,
    open_sample_shape, roles,
};
use crate::lab::tensorrt::with_profile;
use crate::sampler::PredictionType;
use clap::Args;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The model: a U-Net (.onnx), a pipeline folder (with model_index.json), or any ONNX file.
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
    /// conditioning, text_embeds, time_ids, timestep_cond, text_mask, control_image, control_scale, output
    /// (repeatable).
    #[arg(long = "role", value_parser = roles::parse_override)]
    pub roles: Vec<(roles::Role, String)>,
    /// One sample's shape C,H,W, for models whose sample input leaves it dynamic.
    #[arg(long, value_name = "C,H,W", value_parser = parse_sample_shape)]
    pub sample_shape: Option<([usize; 3], Option<usize>)>,
    /// What the model predicts (default: scheduler_config.json beside the model, else epsilon).
    #[arg(long, value_parser = parse_prediction_type)]
    pub prediction_type: Option<PredictionType>,
    /// Threads within an operator (default: ONNX Runtime's, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The batch to time (0: time nothing).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed calls after the warm-up (default: as many as fit in --seconds).
    #[arg(long)]
    pub runs: Option<usize>,
    /// How long to keep timing when --runs is not given, in seconds (at least one call is timed).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
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
        OnnxOptions {
            providers: ProviderOptions {
                preference: self.ep.clone(),
                fallback: !self.no_fallback,
                device_id: self.device,
                trt_fp16: self.trt_fp16,
                trt_engine_cache: self.trt_cache.clone(),
                trt_max_workspace: self.trt_workspace_mib.map(|m| m << 20),
                trt_profile: None,
                ..ProviderOptions::default()
            },
            prediction_type: self.prediction_type,
            roles: self.roles.iter().cloned().collect::<RoleOverrides>(),
            sample_shape: self.sample_shape.map(|(shape, _)| shape),
            frames: self.sample_shape.and_then(|(_, frames)| frames),
            runtime_path: self.runtime.clone(),
            output_dir: self.output.clone(),
            intra_threads: self.threads.map(|t| cap_threads(t).0),
            profile_nodes: true,
            fed_inputs: Vec::new(),
        }
    }
}

/// `--sample-shape 4,64,64` (or `4,16,64,64` for a video model): sizes separated by commas.
fn parse_sample_shape(text: &str) -> Result<([usize; 3], Option<usize>), String> {
    let sizes: Vec<usize> = text
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format!(
                "'{text}' is not a shape: give channels, height and width as C,H,W (e.g. 4,64,64)"
            )
        })?;
    frame_shape(&sizes)
}

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    if let Some((_, Some(note))) = args.threads.map(cap_threads) {
        eprintln!("warning: {note}");
    }
    let text = if args.model.is_dir() {
        pipeline(args)
    } else {
        model(&args.model, args, &args.options(), None)
    };
    // What ONNX Runtime said while loading and timing, success or not.
    for line in crate::engine::ort_log::take() {
        eprintln!("{line}");
    }
    let text = text?;
    // A closed pipe (`difflab info … | head`) is not an error.
    let mut stdout = std::io::stdout().lock();
    match write!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// A denoiser's full report, or for any other ONNX file what it is to difflab. `no_shape`: why a pipeline
/// folder gives no sample shape.
fn model(
    path: &std::path::Path,
    args: &InfoArgs,
    options: &OnnxOptions,
    no_shape: Option<&str>,
) -> anyhow::Result<String> {
    let plan = TimingPlan {
        batch: args.batch,
        runs: args.runs,
        budget: Duration::from_secs_f64(args.seconds.clamp(0.0, 86_400.0)),
    };
    let hints = ShapeHints {
        batch: [1, args.batch.max(1), args.batch.max(1)],
        sample: options.sample_shape,
        frames: options.frames,
        sequence: None,
    };
    // TensorRT builds one engine, for the shapes timed, instead of one per shape it meets.
    let (options, note) = with_profile(options, path, hints);
    let options = &options;
    match inspect(path, options, &plan) {
        Ok(report) => {
            if report.provider == ProviderKind::TensorRt
                && let Some(note) = note
            {
                eprintln!("note: {note}");
            }
            if let Some(note) = &report.non_finite {
                eprintln!("warning: {note}");
            }
            Ok(report.to_string())
        }
        // Another network of a pipeline is described; a would-be denoiser whose inputs do not fit is an error.
        Err(EngineError::Roles { problem, path }) => {
            let mut plain = options.clone();
            plain.profile_nodes = false;
            match describe_onnx(&path, &plain) {
                Ok((text, true)) => {
                    if !args.roles.is_empty() {
                        let roles: Vec<String> = args
                            .roles
                            .iter()
                            .map(|(r, n)| format!("--role {}={n}", r.key()))
                            .collect();
                        // Roles name a denoiser's inputs; say why this network was not read as one.
                        eprintln!(
                            "warning: {} was not used: {} is described as the network it is, not as a \
                             denoiser: {problem}",
                            roles.join(" "),
                            path.display()
                        );
                    }
                    Ok(text)
                }
                _ => {
                    let e = EngineError::Roles { problem, path };
                    let setting = "`--sample-shape C,H,W` (C,F,H,W for a video model)";
                    Err(open_sample_shape(e, no_shape, setting).into())
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Every component of a pipeline folder: the folder's parts, the U-Net's full report, the other networks.
fn pipeline(args: &InfoArgs) -> anyhow::Result<String> {
    let folder = read_pipeline(&args.model)?;
    let mut text = format!(
        "pipeline  {} ({})\n",
        folder.class_name,
        args.model.display()
    );
    for line in folder.describe() {
        text.push_str(&format!("  {line}\n"));
    }
    for warning in &folder.warnings {
        text.push_str(&format!("  note: {warning}\n"));
    }
    let mut options = args.options();
    options.sample_shape = options.sample_shape.or(folder.latent_shape());
    options.frames = options.frames.or(folder.default_frames());
    let mut plain = args.options();
    plain.profile_nodes = false;
    plain.roles.clear();
    // A ControlNet on its own feeds the U-Net's inputs of its outputs' names.
    if let Some(controlnet) = &folder.controlnet {
        let model = crate::engine::OnnxModel::open(controlnet, &plain)?;
        options.fed_inputs = model.outputs().iter().map(|o| o.name.clone()).collect();
    }
    text.push_str(&format!("\n{}\n", folder.denoiser_name()));
    if folder.family == Family::Flux {
        // FLUX's inputs (packed latents, ids, guidance) are not the roles info times: it lists them.
        text.push_str(&describe_onnx(&folder.denoiser, &plain)?.0);
    } else {
        let no_shape = folder.no_latent_shape();
        text.push_str(&model(
            &folder.denoiser,
            args,
            &options,
            no_shape.as_deref(),
        )?);
    }
    let others = (folder.controlnet.iter().cloned())
        .chain(folder.vae_decoder.iter().map(|v| v.model.clone()))
        .chain(folder.text_encoders.iter().map(|t| t.model.clone()));
    for path in others {
        text.push('\n');
        text.push_str(&describe_onnx(&path, &plain)?.0);
    }
    Ok(text)
}
