//! Experiment files (TOML): the model, the samplers and step counts to compare, the seeds, how quality
//! is judged, the training runs to show and where results go. Paths resolve relative to the file.

mod axes;
mod conditioning;
mod control;
mod diagnostic;
mod model;
mod quality;
mod schema;
mod start_image;

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use toml::Spanned;

pub use conditioning::{ConditioningSpec, ControlImageSet, HumanInstruction, InitPer};
pub use control::per_controlnet_text;
pub use diagnostic::{ExperimentError, ExperimentWarning, closest, line_column};
pub use quality::{FeatureSpec, QualitySpec, ReferenceSolve, cell_name};
pub use schema::NoiseKind;

use crate::engine::{ProviderKind, RoleOverrides};
use crate::guidance::{GuidanceMethod, MethodName, Window};
use crate::sampler::config::Resolved;
use crate::sampler::sigma_schedule::SigmaSchedule;
use crate::sampler::{ConfigError, PredictionType, SamplerConfig};
use axes::{Apply, Axis, AxisValue};
use schema::{
    ExperimentFile, Guidance, PreviewKind, SamplerSection, Seeds, Shift, Steps, TrainingSection,
};

/// A validated experiment with every path resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// The experiment file.
    pub path: PathBuf,
    pub name: String,
    /// Where results, grids, plots and logs go.
    pub output_dir: PathBuf,
    pub model: ModelSpec,
    /// Prompts or classes to condition on; `None`: unconditioned (or the lab's default).
    pub conditioning: Option<ConditioningSpec>,
    /// Seed k gives one initial noise shared by every cell.
    pub seeds: Vec<u64>,
    /// The most samples in one model call.
    pub batch: usize,
    /// A [N, C, H, W] float32 .npy of unit-variance noise, row k for seed k, instead of drawing it.
    pub init_noise: Option<PathBuf>,
    /// How latent models' live previews are made.
    pub preview: Preview,
    /// Where seed k's initial noise comes from.
    pub noise: NoiseKind,
    pub samplers: Vec<SamplerSpec>,
    pub quality: Option<QualitySpec>,
    /// Training-log folders or files, resolved against the file's folder, globs expanded.
    pub training_runs: Vec<String>,
    /// What the file asks for that difflab ignores or adjusts (unknown scheduler settings, a capped
    /// thread count, ...), located like errors.
    pub warnings: Vec<ExperimentWarning>,
}

/// Steps between decoded previews when `preview_every` is not given.
pub const DEFAULT_PREVIEW_EVERY: usize = 5;

/// Live previews of a latent model's x0 prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preview {
    /// The family's cheap 4×3 latent→RGB map, every step (web UIs' "approx cheap").
    #[default]
    Approx,
    /// The VAE decoder, every `every` steps: exact colours, for latent spaces the map does not know.
    Decode { every: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A bare U-Net .onnx file.
    Onnx(PathBuf),
    /// A diffusers pipeline folder (model_index.json, unet/, vae_decoder/, text_encoder/, ...).
    Pipeline(PathBuf),
    /// The built-in analytic Gaussian-mixture model.
    Analytic,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub source: ModelSource,
    /// Execution providers in order of preference.
    pub providers: Vec<ProviderKind>,
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
    /// `[model.tensorrt]` builder_optimization_level (0–5).
    pub tensorrt_builder_optimization_level: Option<u8>,
    /// `[model.tensorrt]` layer_norm_fp32_fallback; `None`: on with fp16.
    pub tensorrt_layer_norm_fp32_fallback: Option<bool>,
    pub tensorrt_cuda_graph: bool,
    /// `[model.cuda]`: the CUDA provider's settings.
    pub cuda: crate::engine::providers::CudaOptions,
    /// Role → tensor name, for names difflab does not recognise by itself.
    pub roles: RoleOverrides,
    /// One sample's C, H, W where the model does not fix it (and for the analytic model); one frame's for a
    /// video model (`sample_shape = [C, F, H, W]`).
    pub sample_shape: Option<[usize; 3]>,
    /// Frames per clip, for a video model whose frame count the model does not fix.
    pub frames: Option<usize>,
    /// `[model] fps`: a video model's clips play at this many frames a second (the dashboard,
    /// `cells/<cell>.gif`); `None`: [`DEFAULT_FPS`].
    pub fps: Option<f64>,
    /// The other parts of a pipeline, given beside a bare U-Net file (resolved, existing).
    pub vae_decoder: Option<PathBuf>,
    /// The VAE encoder img2img encodes start images with (its config.json beside it, as Optimum writes it).
    pub vae_encoder: Option<PathBuf>,
    /// ControlNets exported on their own, whose outputs (summed) feed the U-Net's inputs of the same names.
    pub controlnet: Vec<PathBuf>,
    /// Images per VAE decoder call; `None`: as many as make about a megapixel (1 at 1024², 4 at 512²).
    pub vae_batch: Option<usize>,
    pub text_encoder: Option<PathBuf>,
    /// A folder with tokenizer.json, or vocab.json and merges.txt.
    pub tokenizer: Option<PathBuf>,
}

/// The frame rate a video model's clips play at unless `[model] fps` says: diffusers' `export_to_video`'s.
pub const DEFAULT_FPS: f64 = 8.0;

impl ModelSpec {
    /// The frame rate clips play at.
    pub fn fps(&self) -> f64 {
        self.fps.unwrap_or(DEFAULT_FPS)
    }
}

/// One sampler with its step counts: each (sampler, steps) pair is a cell of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSpec {
    pub label: String,
    /// A short name or a scheduler_config.json path (resolved).
    pub name: String,
    pub settings: Map<String, Value>,
    pub steps: Vec<usize>,
    /// Classifier-free guidance scales to compare; 1 is no guidance.
    pub guidance: Vec<f64>,
    /// How far guided predictions are rescaled toward the conditional one's spread, from 0 to 1.
    pub guidance_rescale: f64,
    /// FLUX's true classifier-free guidance scale (1: none), beside the guidance it embeds.
    pub true_cfg_scale: f64,
    /// Samples per cell for quality; overrides `[quality] samples`.
    pub samples: Option<usize>,
    /// The share of the steps each ControlNet is on, from `control_guidance_start` to `control_guidance_end`:
    /// one window for all, or one per ControlNet.
    pub control_windows: Vec<(f64, f64)>,
    /// The resolved scheduler (the first variant's).
    pub resolved: Resolved,
    /// One per value of the sampler's setting axes (`shift`), each its own cells; one when nothing varies.
    pub variants: Vec<SamplerVariant>,
}

/// A sampler at one value of its setting axes.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerVariant {
    /// The sampler's label, with what varies appended (`euler s3`, `euler_ancestral eta=0.5 karras`).
    pub label: String,
    /// The sampler's label alone (`euler_ancestral`).
    pub sampler_label: String,
    /// The flow shift, where `shift` is set.
    pub shift: Option<f64>,
    /// img2img's strength, where `strength` is set.
    pub strength: Option<f64>,
    /// The ControlNets' conditioning scale (one for all, or one per ControlNet), where `control_scale` is set.
    pub control_scale: Option<Vec<f64>>,
    /// How its guided predictions are made.
    pub guidance_method: GuidanceMethod,
    /// The value of each axis that varies, by results column (`schedule`, `eta`, `guidance_method`, `shift`).
    pub axes: Vec<(String, Value)>,
    pub resolved: Resolved,
}

/// Settings whose value is a list (not an axis).
const LIST_SETTINGS: [&str; 3] = ["sigmas", "trained_betas", "restart_list"];

/// `guidance_interval`: `[lo, hi]` in sigmas, or `{ start, stop }` as fractions of the steps.
fn interval(value: &toml::Value) -> Result<Window, String> {
    let expected = "guidance_interval is [lo, hi] (sigmas, lo ≤ hi) or { start = 0.2, stop = 0.8 } (fractions of the steps)";
    let number = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    match value {
        toml::Value::Array(pair) if pair.len() == 2 => match (number(&pair[0]), number(&pair[1])) {
            (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi => {
                Ok(Window::Sigma { lo, hi })
            }
            _ => Err(expected.into()),
        },
        toml::Value::Table(t) if t.len() == 2 => match (
            t.get("start").and_then(number),
            t.get("stop").and_then(number),
        ) {
            (Some(start), Some(stop))
                if (0.0..=1.0).contains(&start) && (0.0..=1.0).contains(&stop) && start <= stop =>
            {
                Ok(Window::Steps { start, stop })
            }
            _ => Err(expected.into()),
        },
        _ => Err(expected.into()),
    }
}

/// The most samples one cell may draw for quality.
const MAX_SAMPLES: usize = 1_000_000;

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
        let mut cx = Reading {
            path,
            text,
            dir: path.parent().unwrap_or(Path::new(".")),
            warnings: Vec::new(),
            has_negative_prompt: false,
            flux: false,
            controlnets: 0,
        };
        let name = file.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map_or("experiment".into(), |s| s.to_string_lossy().into_owned())
        });
        let (model, base) = cx.model(&file.model)?;
        let mut conditioning = match &file.conditioning {
            Some(c) => cx.conditioning(c, &model.source)?,
            None => None,
        };
        cx.has_negative_prompt = conditioning
            .as_ref()
            .is_some_and(|c| c.negative_prompt.is_some());
        let (seeds, batch) = cx.sampling(&file)?;
        if let (Some(spec), Some(c)) = (conditioning.as_mut(), &file.conditioning) {
            cx.init_per(spec, c, seeds.len())?;
            cx.control_per(spec, c, seeds.len())?;
            cx.controlnets = spec.controls.len();
        }
        let init_noise = file
            .sampling
            .as_ref()
            .and_then(|s| s.init_noise.as_ref())
            .map(|n| cx.existing_file(n, "sampling.init_noise", "initial noise file"))
            .transpose()?;
        let preview = cx.preview(&file)?;
        let noise = file
            .sampling
            .as_ref()
            .and_then(|s| s.noise.as_ref())
            .map_or(NoiseKind::Difflab, |n| *n.get_ref());
        let samplers = cx.samplers(&file, &base, seeds.len(), &model.source)?;
        cx.check_strengths(&file, conditioning.as_ref(), &samplers)?;
        cx.check_control(&file, conditioning.as_ref())?;
        let quality = file
            .quality
            .as_ref()
            .map(|q| cx.quality(q, seeds.len(), conditioning.as_ref(), &base, &samplers))
            .transpose()?;
        let training_runs = match &file.training {
            Some(t) => cx.training_runs(t)?,
            None => Vec::new(),
        };
        let output_dir = cx.resolve(file.output.as_deref().unwrap_or(&format!("out/{name}")));
        Ok(Self {
            path: path.to_path_buf(),
            name,
            output_dir,
            model,
            conditioning,
            seeds,
            batch,
            init_noise,
            preview,
            noise,
            samplers,
            quality,
            training_runs,
            warnings: cx.warnings,
        })
    }

    /// The warnings that concern sampler `index`'s cells: its own and the experiment-wide ones.
    pub fn warnings_for(&self, index: usize) -> Vec<String> {
        self.warnings
            .iter()
            .filter(|w| w.sampler.is_none_or(|s| s == index))
            .map(ToString::to_string)
            .collect()
    }
}

/// The state of reading one file: where it is, for locating problems and resolving paths, and what
/// was noticed so far.
struct Reading<'a> {
    path: &'a Path,
    text: &'a str,
    dir: &'a Path,
    warnings: Vec<ExperimentWarning>,
    /// Whether `[conditioning]` gives a negative prompt (FLUX's true CFG needs one).
    has_negative_prompt: bool,
    /// Whether the model is a FLUX pipeline folder.
    flux: bool,
    /// How many ControlNets `[conditioning]` gives control images for.
    controlnets: usize,
}

impl Reading<'_> {
    fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ExperimentError {
        ExperimentError::at(self.path, self.text, Some(span), Some(key.into()), message)
    }

    fn warn(&mut self, sampler: Option<usize>, span: Range<usize>, key: &str, message: String) {
        let place = self.error(span, key, message);
        self.warnings.push(ExperimentWarning { sampler, place });
    }

    /// A path as written, relative to the experiment's folder.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// A path that must name an existing file.
    fn existing_file(
        &self,
        p: &Spanned<String>,
        key: &str,
        what: &str,
    ) -> Result<PathBuf, ExperimentError> {
        let resolved = self.resolve(p.get_ref());
        if resolved.is_file() {
            return Ok(resolved);
        }
        Err(self.error(
            p.span(),
            key,
            format!("no {what} at {}", resolved.display()),
        ))
    }

    /// `[training] runs`: folders or files, and glob patterns (`runs/*`) expanded now, sorted; a
    /// pattern that matches nothing yet is a warning.
    fn training_runs(&mut self, t: &TrainingSection) -> Result<Vec<String>, ExperimentError> {
        let mut runs = Vec::new();
        for r in t.runs.get_ref() {
            let path = self.resolve(r).display().to_string();
            if !r.contains(['*', '?', '[']) {
                runs.push(path);
                continue;
            }
            let matches = glob::glob(&path).map_err(|e| {
                self.error(
                    t.runs.span(),
                    "training.runs",
                    format!("{r:?} is not a valid pattern: {e}"),
                )
            })?;
            let mut found: Vec<String> = matches
                .filter_map(Result::ok)
                .map(|p| p.display().to_string())
                .collect();
            if found.is_empty() {
                self.warn(
                    None,
                    t.runs.span(),
                    "training.runs",
                    format!("{r:?} matches nothing yet"),
                );
            }
            found.sort();
            runs.extend(found);
        }
        Ok(runs)
    }

    /// `[sampling]`: the seeds (0..8 by default) and the batch size (64).
    fn sampling(&self, file: &ExperimentFile) -> Result<(Vec<u64>, usize), ExperimentError> {
        let sampling = file.sampling.as_ref();
        let seeds: Vec<u64> = match sampling.and_then(|s| s.seeds.as_ref()) {
            None => (0..8).collect(),
            Some(s) => {
                let seeds: Vec<u64> = match s.get_ref() {
                    Seeds::Count(n) if *n as usize > MAX_SAMPLES => {
                        return Err(self.error(
                            s.span(),
                            "sampling.seeds",
                            format!("at most {MAX_SAMPLES} seeds"),
                        ));
                    }
                    Seeds::Count(n) => (0..*n).collect(),
                    Seeds::List(list) => list.clone(),
                };
                if seeds.is_empty() {
                    return Err(self.error(s.span(), "sampling.seeds", "needs at least one seed"));
                }
                seeds
            }
        };
        let batch = match sampling.and_then(|s| s.batch.as_ref()) {
            Some(b) if *b.get_ref() == 0 => {
                return Err(self.error(b.span(), "sampling.batch", "must be at least 1"));
            }
            Some(b) => *b.get_ref(),
            None => 64,
        };
        Ok((seeds, batch))
    }

    /// `[sampling] preview` ("approx", the default, or "decode") and `preview_every` (decode every k steps,
    /// default 5).
    fn preview(&mut self, file: &ExperimentFile) -> Result<Preview, ExperimentError> {
        let Some(sampling) = file.sampling.as_ref() else {
            return Ok(Preview::Approx);
        };
        let every = match &sampling.preview_every {
            Some(k) if *k.get_ref() == 0 => {
                return Err(self.error(k.span(), "sampling.preview_every", "must be at least 1"));
            }
            Some(k) => Some((*k.get_ref(), k.span())),
            None => None,
        };
        match sampling.preview.as_ref().map(|p| *p.get_ref()) {
            Some(PreviewKind::Decode) => Ok(Preview::Decode {
                every: every.map_or(DEFAULT_PREVIEW_EVERY, |e| e.0),
            }),
            _ => {
                if let Some((_, span)) = every {
                    let message = "applies only with preview = \"decode\"; ignored".to_string();
                    self.warn(None, span, "sampling.preview_every", message);
                }
                Ok(Preview::Approx)
            }
        }
    }

    /// Every `[[sampler]]`, resolved on the model's training schedule.
    fn samplers(
        &mut self,
        file: &ExperimentFile,
        base: &Map<String, Value>,
        seeds: usize,
        source: &ModelSource,
    ) -> Result<Vec<SamplerSpec>, ExperimentError> {
        if file.samplers.get_ref().is_empty() {
            return Err(self.error(
                file.samplers.span(),
                "sampler",
                "list at least one [[sampler]]",
            ));
        }
        let mut samplers = Vec::new();
        for (i, s) in file.samplers.get_ref().iter().enumerate() {
            samplers.push(self.sampler(i, s, base, seeds, source)?);
        }
        Ok(samplers)
    }

    fn sampler(
        &mut self,
        i: usize,
        s: &SamplerSection,
        base: &Map<String, Value>,
        seeds: usize,
        source: &ModelSource,
    ) -> Result<SamplerSpec, ExperimentError> {
        let key = |k: &str| format!("sampler[{i}].{k}");
        let (mut settings, mut axes) = self.setting_axes(i, s)?;
        if let Some(axis) = self.schedule_axis(i, s)? {
            axes.insert(0, axis);
        }
        let sigmas_key = match (&s.sigmas, &s.schedule) {
            (Some(list), Some(_)) => {
                let message = "give `schedule` or `sigmas`, not both: the list is the schedule";
                return Err(self.error(list.span(), &key("sigmas"), message));
            }
            (Some(list), None) => {
                let value = serde_json::json!(list.get_ref());
                settings.insert("sigmas".into(), value.clone());
                Some((list.span(), value))
            }
            (None, _) => None,
        };
        axes.push(self.method_axis(i, s)?);
        let spec = s.name.get_ref();
        // A scheduler_config.json named here resolves relative to the experiment.
        let name = if spec.ends_with(".json") {
            self.resolve(spec).display().to_string()
        } else {
            spec.clone()
        };
        let resolved = SamplerConfig::resolve(&name, Some(base), &settings)
            .map_err(|e| self.sampler_error(i, s, e))?;
        if let Some(shift) = &s.shift {
            let shift_key = self.shift_key(i, shift, &resolved, &settings)?;
            axes.push(self.shift_axis(i, shift, shift_key)?);
        }
        if let Some(strength) = &s.strength {
            axes.push(self.strength_axis(i, strength)?);
        }
        if let Some(scale) = &s.control_scale {
            axes.push(self.control_scale_axis(i, scale)?);
        }
        let label = s.label.clone().unwrap_or_else(|| spec.clone());
        let mut variants = Vec::new();
        for combination in axes::combinations(&axes, &settings) {
            let resolved = SamplerConfig::resolve(&name, Some(base), &combination.settings)
                .map_err(|e| self.sampler_error(i, s, e))?;
            self.check_schedule(i, s, &resolved, &combination.settings)?;
            let mut named = label.clone();
            for suffix in &combination.suffixes {
                named.push(' ');
                named.push_str(suffix);
            }
            variants.push(SamplerVariant {
                sampler_label: label.clone(),
                label: named,
                shift: combination.shift,
                strength: combination.strength,
                control_scale: combination.control_scale,
                guidance_method: combination.method,
                axes: combination.columns,
                resolved,
            });
        }
        let resolved = variants[0].resolved.clone();
        if let Some((span, value)) = sigmas_key
            && resolved.settings.get("sigmas") != Some(&value)
        {
            let message = format!(
                "{spec} ({}) takes no list of sigmas; the k-diffusion style samplers (euler, heun, lms, dpm2, \
                 ...) and flow Euler do",
                resolved.config.class_name()
            );
            return Err(self.error(span, &key("sigmas"), message));
        }
        // Warnings about settings point at the settings, others at the name.
        let span = s.settings.as_ref().map_or(s.name.span(), Spanned::span);
        let place = if s.settings.is_some() {
            key("settings")
        } else {
            key("name")
        };
        for w in &resolved.warnings {
            self.warn(Some(i), span.clone(), &place, w.clone());
        }
        self.edm_on_vp(i, s, &resolved, base, source);
        let steps = self.steps(i, s, &resolved)?;
        if let Some(list) = &s.sigmas {
            let given = list.get_ref();
            let per_run = given.len() - usize::from(given.last() == Some(&0.0));
            if let Some(n) = steps.iter().find(|&&n| n != per_run) {
                let message = format!(
                    "{} sigmas (a final 0 aside) make {per_run} steps, but `steps` asks for {n}",
                    given.len()
                );
                return Err(self.error(list.span(), &key("sigmas"), message));
            }
        }
        let (guidance, guidance_rescale) = self.guidance(i, s, source)?;
        let true_cfg_scale = self.true_cfg_scale(i, s)?;
        if let Some(n) = &s.samples {
            self.check_samples(n, &key("samples"), seeds)?;
        }
        Ok(SamplerSpec {
            label,
            name,
            settings,
            steps,
            guidance,
            guidance_rescale,
            true_cfg_scale,
            samples: s.samples.as_ref().map(|n| *n.get_ref()),
            control_windows: self.control_windows(i, s)?,
            resolved,
            variants,
        })
    }

    /// `settings` without its lists, and an axis for each setting given as a list (but the settings whose
    /// value is a list: `sigmas`, `trained_betas`).
    fn setting_axes(
        &self,
        i: usize,
        s: &SamplerSection,
    ) -> Result<(Map<String, Value>, Vec<Axis>), ExperimentError> {
        let Some(table) = &s.settings else {
            return Ok((Map::new(), Vec::new()));
        };
        let given = serde_json::to_value(table.get_ref())
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let (mut settings, mut axes) = (Map::new(), Vec::new());
        for (k, v) in given {
            match v {
                Value::Array(values) if !LIST_SETTINGS.contains(&k.as_str()) => {
                    let place = format!("sampler[{i}].settings.{k}");
                    self.check_axis(table.span(), &place, &values)?;
                    let values = values
                        .into_iter()
                        .map(|v| AxisValue {
                            suffix: format!("{k}={}", axes::show(&v)),
                            column: v.clone(),
                            apply: Apply::Settings(vec![(k.clone(), v)]),
                        })
                        .collect();
                    axes.push(Axis { column: k, values });
                }
                other => {
                    settings.insert(k, other);
                }
            }
        }
        Ok((settings, axes))
    }

    /// An axis's values: at least one, none a list or table, none twice.
    fn check_axis(
        &self,
        span: Range<usize>,
        place: &str,
        values: &[Value],
    ) -> Result<(), ExperimentError> {
        if values.is_empty() {
            return Err(self.error(span, place, "list at least one value"));
        }
        if values.iter().any(|v| v.is_array() || v.is_object()) {
            let message =
                "a list of settings takes numbers, booleans or names: each one is a column";
            return Err(self.error(span, place, message));
        }
        if let Some(v) = values
            .iter()
            .enumerate()
            .find_map(|(k, v)| values[..k].contains(v).then_some(v))
        {
            return Err(self.error(
                span,
                place,
                format!("{v} is listed twice; each value is a column"),
            ));
        }
        Ok(())
    }

    /// `schedule`'s values as an axis (one value: a schedule for every cell, named nowhere).
    fn schedule_axis(&self, i: usize, s: &SamplerSection) -> Result<Option<Axis>, ExperimentError> {
        let Some(sched) = &s.schedule else {
            return Ok(None);
        };
        let place = format!("sampler[{i}].schedule");
        let names = sched.get_ref().list();
        let as_values: Vec<Value> = names.iter().map(|n| Value::String(n.clone())).collect();
        self.check_axis(sched.span(), &place, &as_values)?;
        let mut values = Vec::new();
        for name in names {
            let (k, v) = schedule_setting(&name).ok_or_else(|| {
                let message = format!("unknown schedule {name:?}; use one of {}", schedule_names());
                self.error(sched.span(), &place, message)
            })?;
            values.push(AxisValue {
                suffix: name.clone(),
                column: Value::String(name),
                apply: Apply::Settings(vec![(k.into(), v)]),
            });
        }
        Ok(Some(Axis {
            column: "schedule".into(),
            values,
        }))
    }

    /// A schedule the class does not take shows in its resolved settings as missing: an error at `schedule`.
    fn check_schedule(
        &self,
        i: usize,
        s: &SamplerSection,
        resolved: &Resolved,
        settings: &Map<String, Value>,
    ) -> Result<(), ExperimentError> {
        let Some(sched) = &s.schedule else {
            return Ok(());
        };
        for name in sched.get_ref().list() {
            let Some((k, v)) = schedule_setting(&name) else {
                continue;
            };
            if settings.get(k) == Some(&v) && resolved.settings.get(k) != Some(&v) {
                let message = format!(
                    "{} ({}) has no {name:?} schedule",
                    s.name.get_ref(),
                    resolved.config.class_name()
                );
                return Err(self.error(sched.span(), &format!("sampler[{i}].schedule"), message));
            }
        }
        Ok(())
    }

    /// `guidance_method` (default "cfg") with `guidance_settings` and `guidance_interval`, as an axis.
    fn method_axis(&self, i: usize, s: &SamplerSection) -> Result<Axis, ExperimentError> {
        let place = |k: &str| format!("sampler[{i}].{k}");
        let window = match &s.guidance_interval {
            Some(w) => Some(
                interval(w.get_ref())
                    .map_err(|m| self.error(w.span(), &place("guidance_interval"), m))?,
            ),
            None => None,
        };
        let given: Map<String, Value> = s
            .guidance_settings
            .as_ref()
            .and_then(|t| serde_json::to_value(t.get_ref()).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let names = match &s.guidance_method {
            Some(m) => m.get_ref().list(),
            None => vec!["cfg".into()],
        };
        let span = s
            .guidance_method
            .as_ref()
            .map_or(s.name.span(), Spanned::span);
        let as_values: Vec<Value> = names.iter().map(|n| Value::String(n.clone())).collect();
        self.check_axis(span.clone(), &place("guidance_method"), &as_values)?;
        let mut values = Vec::new();
        for name in names {
            let method = name.parse::<MethodName>().map_err(|_| {
                let names = MethodName::NAMES.join(", ");
                let message = format!("unknown guidance method {name:?}; use one of {names}");
                self.error(span.clone(), &place("guidance_method"), message)
            })?;
            // With several methods, each takes the settings it has.
            let own: Map<String, Value> = match as_values.len() {
                1 => given.clone(),
                _ => given
                    .iter()
                    .filter(|(k, _)| method.has_setting(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            let method = GuidanceMethod::new(method, &own, window).map_err(|m| {
                let at = s
                    .guidance_settings
                    .as_ref()
                    .map_or(span.clone(), Spanned::span);
                self.error(at, &place("guidance_settings"), m)
            })?;
            values.push(AxisValue {
                suffix: method.label(),
                column: Value::String(method.label()),
                apply: Apply::Method(method),
            });
        }
        if let Some(k) = given.keys().find(|k| {
            !values.iter().any(|v| match &v.apply {
                Apply::Method(m) => m.name.has_setting(k),
                _ => false,
            })
        }) {
            let at = s.guidance_settings.as_ref().map_or(span, Spanned::span);
            let message = format!("no guidance method named here has the setting {k:?}");
            return Err(self.error(at, &place("guidance_settings"), message));
        }
        Ok(Axis {
            column: "guidance_method".into(),
            values,
        })
    }

    /// `shift`'s values as an axis, under the key the class reads.
    fn shift_axis(
        &self,
        i: usize,
        shift: &Spanned<Shift>,
        key: &'static str,
    ) -> Result<Axis, ExperimentError> {
        let values = self
            .shifts(i, shift)?
            .into_iter()
            .map(|v| AxisValue {
                suffix: format!("s{v}"),
                column: v.into(),
                apply: Apply::Shift { key, value: v },
            })
            .collect();
        Ok(Axis {
            column: "shift".into(),
            values,
        })
    }

    /// The setting `[[sampler]] shift` stands for: `shift` for the FlowMatch classes, `flow_shift` for the
    /// multistep solvers in flow mode; an error on a sampler that is not a flow one, or when `settings` sets
    /// it too.
    fn shift_key(
        &self,
        i: usize,
        shift: &Spanned<Shift>,
        resolved: &Resolved,
        settings: &Map<String, Value>,
    ) -> Result<&'static str, ExperimentError> {
        let place = format!("sampler[{i}].shift");
        let class = resolved.config.class_name();
        if resolved.config.prediction_type() != PredictionType::FlowPrediction {
            let message = format!(
                "shift moves a flow-matching sampler's sigmas; {class} here is not one (on a flow model, or with \
                 prediction_type = \"flow_prediction\", the samplers are)"
            );
            return Err(self.error(shift.span(), &place, message));
        }
        let key = if crate::sampler::registry::is_flow_match(class) {
            "shift"
        } else {
            "flow_shift"
        };
        if settings.contains_key(key) {
            let message = format!("shift is given twice: here and as settings.{key}; keep one");
            return Err(self.error(shift.span(), &place, message));
        }
        Ok(key)
    }

    /// `shift`'s values: at least one, each positive, none twice.
    fn shifts(&self, i: usize, shift: &Spanned<Shift>) -> Result<Vec<f64>, ExperimentError> {
        let place = format!("sampler[{i}].shift");
        let values = match shift.get_ref() {
            Shift::One(v) => vec![*v],
            Shift::Many(list) => list.clone(),
        };
        if values.is_empty() || values.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            let message = "shift must be a positive number or a non-empty list of them (1 = no shift; SD3 uses 3)";
            return Err(self.error(shift.span(), &place, message));
        }
        if let Some(v) = values
            .iter()
            .enumerate()
            .find_map(|(k, v)| values[..k].contains(v).then_some(v))
        {
            let message = format!("shift {v} is listed twice; each value is a column");
            return Err(self.error(shift.span(), &place, message));
        }
        Ok(values)
    }

    /// An EDM sampler preconditions the model's input and output for an EDM-trained model; on a
    /// variance-preserving one (any model whose scheduler config is not an EDM class) it runs, but what it
    /// gives means nothing.
    fn edm_on_vp(
        &mut self,
        i: usize,
        s: &SamplerSection,
        resolved: &Resolved,
        base: &Map<String, Value>,
        source: &ModelSource,
    ) {
        let class = resolved.config.class_name();
        if !EDM_CLASSES.contains(&class) {
            return;
        }
        let model = match (source, base.get("_class_name").and_then(Value::as_str)) {
            (ModelSource::Analytic, _) => "the analytic model is".to_string(),
            (_, Some(c)) if EDM_CLASSES.contains(&c) => return,
            (_, Some(c)) => format!("the model's scheduler config is {c}'s, so the model is"),
            (_, None) => {
                "no scheduler config says the model is EDM-trained, so it is taken to be".into()
            }
        };
        let message = format!(
            "{class} is for EDM-trained models; {model} a variance-preserving one, on which its samples are meaningless"
        );
        self.warn(
            Some(i),
            s.name.span(),
            &format!("sampler[{i}].name"),
            message,
        );
    }

    /// `steps`: each from 1 to the schedule's training steps.
    fn steps(
        &self,
        i: usize,
        s: &SamplerSection,
        resolved: &Resolved,
    ) -> Result<Vec<usize>, ExperimentError> {
        let steps = match s.steps.get_ref() {
            Steps::One(n) => vec![*n],
            Steps::Many(list) => list.clone(),
        };
        let train_steps = resolved.config.schedule().num_train_timesteps;
        if steps.is_empty() || steps.iter().any(|&n| n == 0 || n > train_steps) {
            return Err(self.error(
                s.steps.span(),
                &format!("sampler[{i}].steps"),
                format!("each step count must be from 1 to {train_steps} (the model's num_train_timesteps)"),
            ));
        }
        for &n in &steps {
            self.no_repeated_timestep(resolved, n, s.steps.span(), &format!("sampler[{i}].steps"))?;
        }
        Ok(steps)
    }

    /// A step count whose schedule stands still (a sigma, or for samplers without sigmas a timestep, visited
    /// twice in a row) is an error: the step between is zero. The advice names a step count that works.
    fn no_repeated_timestep(
        &self,
        resolved: &Resolved,
        steps: usize,
        span: Range<usize>,
        key: &str,
    ) -> Result<(), ExperimentError> {
        let config = &resolved.config;
        let Some(repeat) = config.repeated_step(steps) else {
            return Ok(());
        };
        let what = match repeat.sigma {
            Some(sigma) => format!("sigma {sigma} (timestep {}) twice", repeat.timestep),
            None => format!("timestep {} twice", repeat.timestep),
        };
        let fewer = (1..steps)
            .rev()
            .find(|&n| config.repeated_step(n).is_none())
            .map(|n| format!("; {n} steps do not"))
            .unwrap_or_default();
        Err(self.error(
            span,
            key,
            format!(
                "{} with {steps} steps visits {what} (its spacing rounds that many steps onto fewer \
                 timesteps), so one step is zero and the solver divides by it, as diffusers' does{fewer}",
                config.class_name(),
            ),
        ))
    }

    /// `guidance` (default 1: none) and `guidance_rescale` (default 0). Guidance on the analytic
    /// model, which takes no conditioning, changes nothing: a warning.
    fn guidance(
        &mut self,
        i: usize,
        s: &SamplerSection,
        source: &ModelSource,
    ) -> Result<(Vec<f64>, f64), ExperimentError> {
        let key = |k: &str| format!("sampler[{i}].{k}");
        let scales = match s.guidance.as_ref().map(Spanned::get_ref) {
            None => vec![1.0],
            Some(Guidance::One(g)) => vec![*g],
            Some(Guidance::Many(list)) => list.clone(),
        };
        if let Some(g) = &s.guidance {
            if scales.is_empty() {
                let message = "list at least one guidance scale (1 = no guidance)";
                return Err(self.error(g.span(), &key("guidance"), message));
            }
            if scales.iter().any(|g| !(g.is_finite() && *g >= 0.0)) {
                let message = "guidance must be a finite number ≥ 0 (1 = no guidance)";
                return Err(self.error(g.span(), &key("guidance"), message));
            }
            if *source == ModelSource::Analytic && scales.iter().any(|&g| g != 1.0) {
                let message = "the analytic model takes no conditioning; guidance changes nothing";
                self.warn(Some(i), g.span(), &key("guidance"), message.into());
            }
        }
        let rescale = s.guidance_rescale.as_ref().map_or(Ok(0.0), |r| {
            let v = *r.get_ref();
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                let message = "guidance_rescale must be from 0 to 1 (0 = no rescaling)";
                Err(self.error(r.span(), &key("guidance_rescale"), message))
            }
        })?;
        Ok((scales, rescale))
    }

    /// `true_cfg_scale`: FLUX's classifier-free guidance on top of the guidance it embeds, as FluxPipeline runs it
    /// (a finite scale ≥ 1, with a negative prompt, on a FLUX pipeline folder).
    fn true_cfg_scale(&self, i: usize, s: &SamplerSection) -> Result<f64, ExperimentError> {
        let Some(t) = &s.true_cfg_scale else {
            return Ok(1.0);
        };
        let key = format!("sampler[{i}].true_cfg_scale");
        let problem = if !self.flux {
            Some(
                "true_cfg_scale is FLUX's classifier-free guidance beside the guidance it embeds; on this model \
                  `guidance` is classifier-free guidance",
            )
        } else if !(t.get_ref().is_finite() && *t.get_ref() >= 1.0) {
            Some("true_cfg_scale must be a finite number ≥ 1 (1 = off)")
        } else if *t.get_ref() > 1.0 && !self.has_negative_prompt {
            Some(
                "true_cfg_scale needs [conditioning] negative_prompt: FluxPipeline runs true CFG only with one",
            )
        } else {
            None
        };
        match problem {
            Some(message) => Err(self.error(t.span(), &key, message)),
            None => Ok(*t.get_ref()),
        }
    }

    /// A sampler that does not resolve: the error at its settings or its name.
    fn sampler_error(&self, i: usize, s: &SamplerSection, e: ConfigError) -> ExperimentError {
        let name = (s.name.span(), format!("sampler[{i}].name"));
        let settings = s
            .settings
            .as_ref()
            .map(|t| (t.span(), format!("sampler[{i}].settings")));
        self.resolve_error(e, name, settings)
    }

    /// A sampler that does not resolve, located: a wrong setting at the settings (span, key) when they were
    /// given, anything else at the name (an unknown name's error says what was meant).
    fn resolve_error(
        &self,
        e: ConfigError,
        name: (Range<usize>, String),
        settings: Option<(Range<usize>, String)>,
    ) -> ExperimentError {
        let settings_error = matches!(
            e,
            ConfigError::InvalidValue { .. } | ConfigError::Unsupported { .. }
        );
        match settings {
            Some((span, key)) if settings_error => self.error(span, &key, e.to_string()),
            _ => self.error(name.0, &name.1, e.to_string()),
        }
    }

    /// A per-cell sample count for quality: at least 2 (FID needs a covariance), at most
    /// [`MAX_SAMPLES`]; fewer than the preview seeds is allowed but every seed still runs.
    fn check_samples(
        &mut self,
        n: &Spanned<usize>,
        key: &str,
        seeds: usize,
    ) -> Result<(), ExperimentError> {
        let v = *n.get_ref();
        if !(2..=MAX_SAMPLES).contains(&v) {
            return Err(self.error(
                n.span(),
                key,
                format!("must be from 2 to {MAX_SAMPLES} samples per cell"),
            ));
        }
        if v < seeds {
            self.warn(
                None,
                n.span(),
                key,
                format!(
                    "{v} samples is fewer than the {seeds} seeds; each cell still draws every seed"
                ),
            );
        }
        Ok(())
    }
}

/// The scheduler classes of EDM-trained models (Karras et al.), whose inputs and outputs are preconditioned.
const EDM_CLASSES: [&str; 2] = ["EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"];

/// The `schedule` names of a sampler table and the diffusers setting (key, JSON value) each stands for.
/// SGM Uniform is trailing timestep spacing, as diffusers documents it.
const SCHEDULES: [(&str, &str, &str); 4] = [
    ("karras", "use_karras_sigmas", "true"),
    ("exponential", "use_exponential_sigmas", "true"),
    ("beta", "use_beta_sigmas", "true"),
    ("sgm_uniform", "timestep_spacing", "\"trailing\""),
];

/// The setting a schedule name stands for; case, spaces, `-` and `_` do not matter ("SGM Uniform"). The four
/// names diffusers has flags for keep them; the web UIs' other schedules are difflab's `sigma_schedule`.
pub fn schedule_setting(name: &str) -> Option<(&'static str, Value)> {
    let norm = crate::sampler::registry::normalize;
    let diffusers = SCHEDULES
        .iter()
        .find(|(n, _, _)| norm(n) == norm(name))
        .map(|&(_, k, v)| (k, serde_json::from_str(v).unwrap_or(Value::Null)));
    diffusers.or_else(|| {
        SigmaSchedule::NAMES
            .iter()
            .find(|n| norm(n) == norm(name))
            .and_then(|n| SigmaSchedule::from_name(n))
            .or_else(|| SigmaSchedule::from_name(&name.trim().to_lowercase()))
            .map(|s| ("sigma_schedule", Value::String(s.name().into())))
    })
}

/// Every name `schedule` takes, for messages.
pub fn schedule_names() -> String {
    let diffusers: Vec<&str> = SCHEDULES.iter().map(|(n, _, _)| *n).collect();
    let others = SigmaSchedule::NAMES
        .iter()
        .filter(|n| !diffusers.contains(n));
    let names: Vec<&str> = diffusers.iter().chain(others).copied().collect();
    names
        .join(", ")
        .replace("align_your_steps", "align_your_steps (ays)")
}
