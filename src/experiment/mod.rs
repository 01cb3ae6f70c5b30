//! Experiment files (TOML): the model, the samplers and step counts to compare, the seeds, how quality
//! is judged, the training runs to show and where results go. Paths resolve relative to the file.

mod diagnostic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

pub use diagnostic::{ExperimentError, closest, line_column};

use crate::sampler::config::{Resolved, SHORT_NAMES, read_json_object};
use crate::sampler::{PredictionType, SamplerConfig};

/// A validated experiment with every path resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// The experiment file.
    pub path: PathBuf,
    pub name: String,
    /// Where results, grids, plots and logs go.
    pub output_dir: PathBuf,
    pub model: ModelSpec,
    /// Seed k gives one initial noise shared by every cell.
    pub seeds: Vec<u64>,
    /// The most samples in one model call.
    pub batch: usize,
    pub samplers: Vec<SamplerSpec>,
    pub quality: Option<QualitySpec>,
    /// Training-log folders or globs, resolved against the file's folder.
    pub training_runs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    Onnx(PathBuf),
    /// The built-in analytic Gaussian-mixture model.
    Analytic,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub source: ModelSource,
    /// Execution providers in order of preference (tensorrt, cuda, cpu).
    pub providers: Vec<String>,
    pub fallback: bool,
    pub device_id: i32,
    pub prediction_type: Option<PredictionType>,
    /// The model's scheduler_config.json: its training schedule, used under short sampler names.
    pub scheduler_config: Option<PathBuf>,
    /// The ONNX Runtime library (or its folder) to use.
    pub runtime: Option<PathBuf>,
    pub threads: Option<usize>,
    pub tensorrt_fp16: bool,
    pub tensorrt_engine_cache: Option<PathBuf>,
    pub tensorrt_max_workspace: Option<usize>,
    /// Role (sample, timestep, class_labels, encoder_hidden_states, output) → tensor name.
    pub roles: BTreeMap<String, String>,
    /// One sample's C, H, W where the model does not fix it (and for the analytic model).
    pub sample_shape: Option<[usize; 3]>,
}

/// One sampler with its step counts: each (sampler, steps) pair is a cell of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSpec {
    pub label: String,
    /// A short name or a scheduler_config.json path (resolved).
    pub name: String,
    pub settings: Map<String, Value>,
    pub steps: Vec<usize>,
    /// Samples per cell for quality; overrides `[quality] samples`.
    pub samples: Option<usize>,
    /// The resolved scheduler.
    pub resolved: Resolved,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QualitySpec {
    pub features: PathBuf,
    pub reference: PathBuf,
    /// Samples per cell, unless the sampler says otherwise.
    pub samples: usize,
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
}

// The file as written. Spanned fields are the ones checked after parsing, so errors can point at them.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentFile {
    name: Option<String>,
    output: Option<String>,
    model: ModelSection,
    sampling: Option<SamplingSection>,
    #[serde(rename = "sampler")]
    samplers: Spanned<Vec<SamplerSection>>,
    quality: Option<QualitySection>,
    training: Option<TrainingSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSection {
    path: Spanned<String>,
    providers: Option<Vec<Spanned<String>>>,
    fallback: Option<bool>,
    device_id: Option<i32>,
    prediction_type: Option<Spanned<String>>,
    scheduler_config: Option<Spanned<String>>,
    runtime: Option<String>,
    threads: Option<Spanned<usize>>,
    tensorrt: Option<TensorRtSection>,
    roles: Option<BTreeMap<String, String>>,
    sample_shape: Option<[usize; 3]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorRtSection {
    fp16: Option<bool>,
    engine_cache: Option<String>,
    max_workspace: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SamplingSection {
    seeds: Option<Spanned<Seeds>>,
    batch: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Seeds {
    Count(u64),
    List(Vec<u64>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Steps {
    One(usize),
    Many(Vec<usize>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SamplerSection {
    name: Spanned<String>,
    steps: Spanned<Steps>,
    label: Option<String>,
    settings: Option<Spanned<toml::Table>>,
    samples: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QualitySection {
    features: Spanned<String>,
    reference: Spanned<String>,
    samples: Option<usize>,
    kid_subsets: Option<usize>,
    kid_subset_size: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainingSection {
    runs: Vec<String>,
}

const PROVIDERS: [&str; 3] = ["tensorrt", "cuda", "cpu"];

impl Experiment {
    /// Reads and validates an experiment file.
    pub fn load(path: &Path) -> Result<Self, ExperimentError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ExperimentError::file(path, format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    /// Validates experiment text as if it were the file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ExperimentError> {
        let file: ExperimentFile =
            toml::from_str(text).map_err(|e| ExperimentError::from_toml(path, text, &e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let at = |span: std::ops::Range<usize>, key: &str, message: String| {
            ExperimentError::at(path, text, Some(span), Some(key.to_string()), message)
        };
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        let name = file.name.unwrap_or_else(|| {
            path.file_stem()
                .map_or("experiment".into(), |s| s.to_string_lossy().into_owned())
        });

        let m = &file.model;
        let source = if m.path.get_ref() == "analytic" {
            ModelSource::Analytic
        } else {
            let p = resolve(m.path.get_ref());
            if !p.is_file() {
                return Err(at(
                    m.path.span(),
                    "model.path",
                    format!(
                        "no model file at {} (give the path of an ONNX file, relative to this experiment, or \"analytic\")",
                        p.display()
                    ),
                ));
            }
            ModelSource::Onnx(p)
        };
        let mut providers = Vec::new();
        for p in m.providers.iter().flatten() {
            let name = p.get_ref().to_lowercase();
            if !PROVIDERS.contains(&name.as_str()) {
                return Err(at(
                    p.span(),
                    "model.providers",
                    format!(
                        "unknown execution provider {:?}; use tensorrt, cuda or cpu",
                        p.get_ref()
                    ),
                ));
            }
            providers.push(name);
        }
        if providers.is_empty() {
            providers = PROVIDERS.iter().map(|s| s.to_string()).collect();
        }
        let prediction_type = match &m.prediction_type {
            Some(p) => Some(PredictionType::from_name(p.get_ref()).ok_or_else(|| {
                at(
                    p.span(),
                    "model.prediction_type",
                    format!(
                        "{:?} is not one of {}",
                        p.get_ref(),
                        PredictionType::NAMES.join(", ")
                    ),
                )
            })?),
            None => None,
        };
        // The model's training schedule: given, or the scheduler_config.json beside the model.
        let scheduler_config = match (&m.scheduler_config, &source) {
            (Some(s), _) => {
                let p = resolve(s.get_ref());
                if !p.is_file() {
                    return Err(at(
                        s.span(),
                        "model.scheduler_config",
                        format!("no file at {}", p.display()),
                    ));
                }
                Some(p)
            }
            (None, ModelSource::Onnx(model)) => model
                .parent()
                .map(|d| d.join("scheduler_config.json"))
                .filter(|p| p.is_file()),
            (None, ModelSource::Analytic) => None,
        };
        let mut base = match &scheduler_config {
            Some(p) => read_json_object(p).map_err(|e| {
                let span = m
                    .scheduler_config
                    .as_ref()
                    .map(|s| s.span())
                    .unwrap_or(m.path.span());
                at(span, "model.scheduler_config", e.to_string())
            })?,
            None => Map::new(),
        };
        if let Some(p) = prediction_type {
            base.insert("prediction_type".into(), p.name().into());
        }
        if let Some(t) = &m.threads {
            if *t.get_ref() == 0 {
                return Err(at(t.span(), "model.threads", "must be at least 1".into()));
            }
        }
        let trt = m.tensorrt.as_ref();
        let model = ModelSpec {
            source,
            providers,
            fallback: m.fallback.unwrap_or(true),
            device_id: m.device_id.unwrap_or(0),
            prediction_type,
            scheduler_config,
            runtime: m.runtime.as_deref().map(resolve),
            threads: m.threads.as_ref().map(|t| *t.get_ref()),
            tensorrt_fp16: trt.and_then(|t| t.fp16).unwrap_or(false),
            tensorrt_engine_cache: trt.and_then(|t| t.engine_cache.as_deref()).map(resolve),
            tensorrt_max_workspace: trt.and_then(|t| t.max_workspace),
            roles: m.roles.clone().unwrap_or_default(),
            sample_shape: m.sample_shape,
        };

        let sampling = file.sampling.as_ref();
        let seeds: Vec<u64> = match sampling.and_then(|s| s.seeds.as_ref()) {
            None => (0..8).collect(),
            Some(s) => {
                let seeds: Vec<u64> = match s.get_ref() {
                    Seeds::Count(n) => (0..*n).collect(),
                    Seeds::List(list) => list.clone(),
                };
                if seeds.is_empty() {
                    return Err(at(
                        s.span(),
                        "sampling.seeds",
                        "needs at least one seed".into(),
                    ));
                }
                seeds
            }
        };
        let batch = match sampling.and_then(|s| s.batch.as_ref()) {
            Some(b) if *b.get_ref() == 0 => {
                return Err(at(b.span(), "sampling.batch", "must be at least 1".into()));
            }
            Some(b) => *b.get_ref(),
            None => 64,
        };

        if file.samplers.get_ref().is_empty() {
            return Err(at(
                file.samplers.span(),
                "sampler",
                "list at least one [[sampler]]".into(),
            ));
        }
        let mut samplers = Vec::new();
        for (i, s) in file.samplers.get_ref().iter().enumerate() {
            let key = |k: &str| format!("sampler[{i}].{k}");
            let settings: Map<String, Value> = match &s.settings {
                Some(t) => serde_json::to_value(t.get_ref())
                    .ok()
                    .and_then(|v| v.as_object().cloned())
                    .unwrap_or_default(),
                None => Map::new(),
            };
            let spec = s.name.get_ref();
            // A scheduler_config.json named here resolves relative to the experiment.
            let name = if spec.ends_with(".json") {
                resolve(spec).display().to_string()
            } else {
                spec.clone()
            };
            let resolved = SamplerConfig::resolve(&name, Some(&base), &settings).map_err(|e| {
                let settings_error = matches!(
                    e,
                    crate::sampler::ConfigError::InvalidValue { .. }
                        | crate::sampler::ConfigError::Unsupported { .. }
                );
                let mut message = e.to_string();
                if let crate::sampler::ConfigError::UnknownSampler { .. } = e {
                    let names: Vec<String> =
                        SHORT_NAMES.iter().map(|(n, _, _)| n.to_string()).collect();
                    if let Some(best) = closest(spec, &names) {
                        message = format!("{message}; did you mean `{best}`?");
                    }
                }
                match (&s.settings, settings_error) {
                    (Some(t), true) => at(t.span(), &key("settings"), message),
                    _ => at(s.name.span(), &key("name"), message),
                }
            })?;
            let steps = match s.steps.get_ref() {
                Steps::One(n) => vec![*n],
                Steps::Many(list) => list.clone(),
            };
            let train_steps = resolved.config.schedule().num_train_timesteps;
            if steps.is_empty() || steps.iter().any(|&n| n == 0 || n > train_steps) {
                return Err(at(
                    s.steps.span(),
                    &key("steps"),
                    format!(
                        "each step count must be from 1 to {train_steps} (the model's num_train_timesteps)"
                    ),
                ));
            }
            let label = s.label.clone().unwrap_or_else(|| spec.clone());
            samplers.push(SamplerSpec {
                label,
                name,
                settings,
                steps,
                samples: s.samples,
                resolved,
            });
        }

        let quality = match &file.quality {
            None => None,
            Some(q) => {
                let features = resolve(q.features.get_ref());
                if !features.is_file() {
                    return Err(at(
                        q.features.span(),
                        "quality.features",
                        format!("no feature network at {}", features.display()),
                    ));
                }
                let reference = resolve(q.reference.get_ref());
                if !reference.is_file() {
                    return Err(at(
                        q.reference.span(),
                        "quality.reference",
                        format!("no reference statistics at {}", reference.display()),
                    ));
                }
                Some(QualitySpec {
                    features,
                    reference,
                    samples: q.samples.unwrap_or(256).max(2),
                    kid_subsets: q.kid_subsets.unwrap_or(50).max(1),
                    kid_subset_size: q.kid_subset_size.unwrap_or(100).max(2),
                })
            }
        };
        let training_runs = file
            .training
            .map(|t| {
                t.runs
                    .iter()
                    .map(|r| resolve(r).display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let output_dir = resolve(file.output.as_deref().unwrap_or(&format!("out/{name}")));
        Ok(Self {
            path: path.to_path_buf(),
            name,
            output_dir,
            model,
            seeds,
            batch,
            samplers,
            quality,
            training_runs,
        })
    }
}
