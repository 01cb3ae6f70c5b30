//! Sampler configuration: diffusers' `scheduler_config.json` (same keys, same defaults, `_class_name`
//! picks the scheduler) and the short names users know from the web UIs (`dpm++2m-karras`, ...).
//!
//! A config is resolved in layers: the class defaults, then a base config (the model's own
//! scheduler_config.json: only the keys this class knows are taken, quietly, as diffusers'
//! `from_config` does), then the short name's preset, then the user's keys (unknown ones are reported
//! as warnings and ignored; invalid values are errors naming the key and what is allowed).

use std::any::Any;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::ddim::DdimConfig;
use super::ddpm::{DdpmConfig, DdpmVariance};
use super::dpm_solver::{DpmAlgorithm, DpmSolverConfig, FinalSigma, SolverType};
use super::prediction::X0Clip;
use super::registry;
use super::schedule::{BetaSchedule, ScheduleConfig};
use super::sigmas::SigmaRamp;
use super::spacing::TimestepSpacing;
use super::{PredictionType, Scheduler};

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ConfigError {
    #[error("cannot read scheduler config {path}: {message}")]
    Io { path: String, message: String },
    #[error("{source_name} is not valid JSON: {message}")]
    Json {
        source_name: String,
        message: String,
    },
    #[error("{source_name} must be a JSON object of scheduler settings")]
    NotAnObject { source_name: String },
    #[error(
        "{source_name}: scheduler class {name:?} {}",
        unknown_class_advice(name)
    )]
    UnknownClass { name: String, source_name: String },
    #[error("{source_name} has no \"_class_name\"; set it to one of {}", registry::class_names().join(", "))]
    MissingClass { source_name: String },
    #[error("unknown sampler {name:?}{}", unknown_sampler_advice(name))]
    UnknownSampler { name: String },
    #[error("scheduler setting `{key}`: got {got}, expected {expected}")]
    InvalidValue {
        key: String,
        got: String,
        expected: String,
    },
    #[error("scheduler setting `{key}` = {got} is not supported by difflab: {reason}")]
    Unsupported {
        key: String,
        got: String,
        reason: String,
    },
    #[error("{steps} inference steps cannot be used: {reason}")]
    Steps { steps: usize, reason: String },
}

/// Why a class cannot be used and what to do: flow-matching models (SD3, Flux) need a sampler of their own.
fn unknown_class_advice(name: &str) -> String {
    if name.starts_with("FlowMatch") {
        return "is a flow-matching scheduler (SD3 and Flux ship one); flow-matching schedulers are not \
                implemented in difflab yet, and its samplers would give such a model wrong results"
            .into();
    }
    format!(
        "is not supported; use one of {}",
        registry::class_names().join(", ")
    )
}

/// What to use instead of an unknown sampler name: the implemented one nearest to an A1111 sampler difflab
/// lacks, the name a typo was meant to be, or else every name.
fn unknown_sampler_advice(name: &str) -> String {
    if let Some(advice) = registry::not_implemented(name) {
        return format!(": {advice}");
    }
    let names: Vec<String> = short_names().iter().map(|n| n.to_string()).collect();
    match crate::experiment::closest(&registry::normalize(name), &names) {
        Some(best) => format!("; did you mean `{best}`?"),
        None => format!(
            "; use one of {} or the path of a scheduler_config.json",
            names.join(", ")
        ),
    }
}

/// difflab's short sampler names, in registry order.
pub fn short_names() -> Vec<&'static str> {
    registry::names()
        .filter(|(n, _)| n.ui.contains(&registry::Ui::Difflab))
        .map(|(n, _)| n.name)
        .collect()
}

/// A fully resolved sampler: its diffusers class and that family's settings.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    class: &'static str,
    family: Arc<dyn FamilyConfig>,
}

/// What a family's resolved settings give the lab. A new sampler is its file (the scheduler, its
/// settings type implementing this, its defaults and parser) and its line in the registry.
pub trait FamilyConfig: DynEq + std::fmt::Debug + Send + Sync {
    /// A ready-to-run scheduler (call `set_steps` next).
    fn build(&self) -> Box<dyn Scheduler>;
    fn schedule(&self) -> &ScheduleConfig;
    fn prediction_type(&self) -> PredictionType;
}

/// What a family's settings parser gives.
pub type Parsed = Result<Arc<dyn FamilyConfig>, ConfigError>;

/// Equality between settings of any family (false across families).
pub trait DynEq: Any {
    fn as_any(&self) -> &dyn Any;
    fn dyn_eq(&self, other: &dyn Any) -> bool;
}

impl<T: PartialEq + Any> DynEq for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn dyn_eq(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>() == Some(self)
    }
}

impl PartialEq for SamplerConfig {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class && self.family.as_ref().dyn_eq(other.family.as_ref().as_any())
    }
}

/// A resolved config with what was noticed on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub config: SamplerConfig,
    /// Every setting after resolution, with diffusers' key names (for display and hashing).
    pub settings: Map<String, Value>,
    /// Unknown keys and other things worth telling the user.
    pub warnings: Vec<String>,
}

/// Where a schedule stands still: the timestep (and sigma, for samplers that step between sigmas) it visits
/// twice in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepeatedStep {
    pub timestep: f64,
    pub sigma: Option<f32>,
}

impl SamplerConfig {
    /// Where a one-call-per-step schedule of `steps` steps stands still, if it does: two consecutive sigmas
    /// (for samplers that step between sigmas) or timesteps (for the rest) are equal, so the step between is
    /// zero and the multistep solvers divide by it (diffusers' linspace spacing rounds 1000 steps of 1000
    /// onto 999 distinct timesteps). Karras, exponential and beta sigmas stay distinct even where their
    /// rounded timesteps repeat, as in diffusers: the model sees one timestep twice, the solver two sigmas.
    pub fn repeated_step(&self, steps: usize) -> Option<RepeatedStep> {
        let mut scheduler = self.build();
        scheduler.set_steps(steps).ok()?;
        let t = scheduler.timesteps();
        if t.len() != steps {
            // Samplers that call the model twice a step revisit timesteps by design.
            return None;
        }
        let at = match scheduler.sigmas() {
            Some(sigmas) => sigmas[..steps.min(sigmas.len())]
                .windows(2)
                .position(|w| w[0] == w[1]),
            None => t.windows(2).position(|w| w[0] == w[1]),
        }?;
        Some(RepeatedStep {
            timestep: t[at],
            sigma: scheduler.sigmas().map(|s| s[at]),
        })
    }

    /// The timestep the first step of `steps` starts from: "leading" spacing starts each step count at
    /// a different time, so solves with different counts do not share an initial condition.
    pub fn first_timestep(&self, steps: usize) -> Option<f64> {
        let mut scheduler = self.build();
        scheduler.set_steps(steps).ok()?;
        scheduler.timesteps().first().copied()
    }

    /// Builds a ready-to-run scheduler (call `set_steps` next).
    pub fn build(&self) -> Box<dyn Scheduler> {
        self.family.build()
    }

    pub fn class_name(&self) -> &'static str {
        self.class
    }

    pub fn prediction_type(&self) -> PredictionType {
        self.family.prediction_type()
    }

    pub fn schedule(&self) -> &ScheduleConfig {
        self.family.schedule()
    }

    /// The family's own settings, when they are of type `T`.
    pub fn family<T: 'static>(&self) -> Option<&T> {
        self.family.as_ref().as_any().downcast_ref()
    }

    /// Reads a diffusers scheduler_config.json.
    pub fn from_file(path: &Path) -> Result<Resolved, ConfigError> {
        let base = read_json_object(path)?;
        let source_name = path.display().to_string();
        let family = class_of(&base, &source_name)?;
        resolve(family, None, &Map::new(), &base)
    }

    /// Reads a scheduler config from JSON text (`source_name` names it in errors).
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Resolved, ConfigError> {
        let map = parse_json_object(text, source_name)?;
        let family = class_of(&map, source_name)?;
        resolve(family, None, &Map::new(), &map)
    }

    /// Resolves a sampler given by short name (`dpm++2m-karras`) or by the path of a
    /// scheduler_config.json, on top of a model's base config, with the user's overrides.
    pub fn resolve(
        spec: &str,
        base: Option<&Map<String, Value>>,
        overrides: &Map<String, Value>,
    ) -> Result<Resolved, ConfigError> {
        if let Some((family, preset)) = registry::lookup(spec) {
            // Presets are constants, checked by a test; a broken one reads as no preset.
            let preset: Map<String, Value> = serde_json::from_str(preset).unwrap_or_default();
            let mut user = preset;
            user.extend(overrides.clone());
            return resolve(family, base, &Map::new(), &user);
        }
        let path = Path::new(spec);
        if spec.ends_with(".json") || path.is_file() {
            let mut file = read_json_object(path)?;
            let family = class_of(&file, spec)?;
            file.extend(overrides.clone());
            return resolve(family, base, &Map::new(), &file);
        }
        Err(ConfigError::UnknownSampler {
            name: spec.to_string(),
        })
    }
}

/// Reads a JSON object from a file.
pub fn read_json_object(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
        path: path.display().to_string(),
        message: crate::path_error::reason(path, &e),
    })?;
    parse_json_object(&text, &path.display().to_string())
}

fn parse_json_object(text: &str, source_name: &str) -> Result<Map<String, Value>, ConfigError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ConfigError::NotAnObject {
            source_name: source_name.to_string(),
        }),
        Err(e) => Err(ConfigError::Json {
            source_name: source_name.to_string(),
            message: e.to_string(),
        }),
    }
}

/// Reads a model's own scheduler_config.json, the training schedule samplers start from. A class difflab
/// does not implement is an error: its keys (a flow-matching shift, say) would be dropped without a word
/// and the samplers would run on the default betas.
pub fn read_training_schedule(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let map = read_json_object(path)?;
    if map.contains_key("_class_name") {
        class_of(&map, &path.display().to_string())?;
    }
    Ok(map)
}

fn class_of(
    map: &Map<String, Value>,
    source_name: &str,
) -> Result<&'static registry::Family, ConfigError> {
    match map.get("_class_name") {
        Some(Value::String(name)) => {
            registry::family(name).ok_or_else(|| ConfigError::UnknownClass {
                name: name.clone(),
                source_name: source_name.to_string(),
            })
        }
        Some(other) => Err(ConfigError::InvalidValue {
            key: "_class_name".into(),
            got: other.to_string(),
            expected: format!("one of {}", registry::class_names().join(", ")),
        }),
        None => Err(ConfigError::MissingClass {
            source_name: source_name.to_string(),
        }),
    }
}

/// The settings DDPM, DDIM and DPM-Solver share beyond the training schedule.
fn vp_defaults() -> Map<String, Value> {
    let Value::Object(map) = json!({
        "thresholding": false,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "rescale_betas_zero_snr": false,
    }) else {
        unreachable!("a literal object")
    };
    map
}

fn with_vp(specific: Value) -> Value {
    let mut map = vp_defaults();
    if let Value::Object(extra) = specific {
        map.extend(extra);
    }
    Value::Object(map)
}

pub(super) fn ddpm_defaults() -> Value {
    with_vp(json!({
        "variance_type": "fixed_small",
        "clip_sample": true,
        "clip_sample_range": 1.0,
        "timestep_spacing": "leading",
    }))
}

pub(super) fn ddim_defaults() -> Value {
    with_vp(json!({
        "clip_sample": true,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": true,
        "timestep_spacing": "leading",
        "eta": 0.0,
        "use_clipped_model_output": false,
    }))
}

pub(super) fn dpm_defaults() -> Value {
    with_vp(json!({
        "solver_order": 2,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": true,
        "euler_at_final": false,
        "use_karras_sigmas": false,
        "use_exponential_sigmas": false,
        "use_beta_sigmas": false,
        "use_lu_lambdas": false,
        "use_flow_sigmas": false,
        "flow_shift": 1.0,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": "-inf",
        "variance_type": null,
        "timestep_spacing": "linspace",
        "use_dynamic_shifting": false,
        "time_shift_type": "exponential",
    }))
}

/// What every class reads: the training schedule, the prediction type and the timestep spacing.
#[derive(Debug, Clone)]
pub struct Common {
    pub schedule: ScheduleConfig,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

/// Resolves `family` from its defaults, the quiet `base`, then `preset` and the reported `user` keys.
fn resolve(
    family: &'static registry::Family,
    base: Option<&Map<String, Value>>,
    preset: &Map<String, Value>,
    user: &Map<String, Value>,
) -> Result<Resolved, ConfigError> {
    let class = family.class;
    let mut settings = registry::defaults(family);
    let known: BTreeSet<String> = settings.keys().cloned().collect();
    let mut warnings = Vec::new();
    for (k, v) in base.into_iter().flatten() {
        if known.contains(k) {
            settings.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in preset.iter().chain(user) {
        if known.contains(k) {
            settings.insert(k.clone(), v.clone());
        } else if !k.starts_with('_') {
            warnings.push(format!(
                "unknown key `{k}` ignored ({class} does not use it)"
            ));
        }
    }
    let mut r = Reader { map: &settings };
    let common = read_common(&mut r, &mut warnings)?;
    let config = SamplerConfig {
        class: family.class,
        family: (family.parse)(&mut r, common, &mut warnings)?,
    };
    let zero_snr_eps = config.schedule().rescale_betas_zero_snr
        && config.prediction_type() == PredictionType::Epsilon
        && !matches!(
            family.class,
            "DPMSolverMultistepScheduler" | "UniPCMultistepScheduler"
        );
    if zero_snr_eps {
        warnings.push("rescale_betas_zero_snr with prediction_type \"epsilon\" divides by sqrt(alpha_bar) = 0 at the last training step; zero-SNR models use \"v_prediction\"".into());
    }
    settings.insert("_class_name".into(), Value::String(class.into()));
    Ok(Resolved {
        config,
        settings,
        warnings,
    })
}

fn read_common(r: &mut Reader, warnings: &mut Vec<String>) -> Result<Common, ConfigError> {
    let mut schedule = ScheduleConfig {
        num_train_timesteps: r.count("num_train_timesteps", 1)?,
        beta_start: r.unit("beta_start")?,
        beta_end: r.unit("beta_end")?,
        beta_schedule: r.choice(
            "beta_schedule",
            BetaSchedule::NAMES,
            BetaSchedule::from_name,
        )?,
        trained_betas: r.betas("trained_betas")?,
        // Classes without the key (LMS, Heun) never rescale.
        rescale_betas_zero_snr: if r.value("rescale_betas_zero_snr").is_null() {
            false
        } else {
            r.bool("rescale_betas_zero_snr")?
        },
    };
    if let Some(betas) = &schedule.trained_betas
        && betas.len() != schedule.num_train_timesteps
    {
        warnings.push(format!(
            "trained_betas has {} values; num_train_timesteps {} is replaced by that",
            betas.len(),
            schedule.num_train_timesteps
        ));
        schedule.num_train_timesteps = betas.len();
    }
    Ok(Common {
        schedule,
        prediction_type: r.choice(
            "prediction_type",
            PredictionType::NAMES,
            PredictionType::from_name,
        )?,
        // Classes without the key (DPMSolverSinglestep, the EDM classes) space their own way.
        timestep_spacing: if r.value("timestep_spacing").is_null() {
            TimestepSpacing::Linspace
        } else {
            r.choice(
                "timestep_spacing",
                TimestepSpacing::NAMES,
                TimestepSpacing::from_name,
            )?
        },
        steps_offset: r.count("steps_offset", 0)? as i64,
    })
}

/// Dynamic thresholding, when on (DDPM, DDIM, DPM-Solver).
pub(super) fn read_thresholding(r: &mut Reader) -> Result<X0Clip, ConfigError> {
    Ok(if r.bool("thresholding")? {
        X0Clip::Threshold {
            ratio: r.in_range("dynamic_thresholding_ratio", 0.0, 1.0)?,
            max: r.positive("sample_max_value")?,
        }
    } else {
        X0Clip::None
    })
}

/// `clip_sample`, unless thresholding is on (thresholding wins, as in diffusers).
pub(super) fn read_clip(r: &mut Reader, thresholding: X0Clip) -> Result<X0Clip, ConfigError> {
    Ok(if thresholding != X0Clip::None {
        thresholding
    } else if r.bool("clip_sample")? {
        X0Clip::Clip {
            range: r.positive("clip_sample_range")?,
        }
    } else {
        X0Clip::None
    })
}

pub(super) fn parse_ddpm(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let thresholding = read_thresholding(r)?;
    Ok(Arc::new(DdpmConfig {
        clip: read_clip(r, thresholding)?,
        variance_type: r.variance_type()?,
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
    }))
}

pub(super) fn parse_ddim(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let thresholding = read_thresholding(r)?;
    Ok(Arc::new(DdimConfig {
        clip: read_clip(r, thresholding)?,
        set_alpha_to_one: r.bool("set_alpha_to_one")?,
        eta: r.non_negative("eta")?,
        use_clipped_model_output: r.bool("use_clipped_model_output")?,
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
    }))
}

pub(super) fn parse_dpm(r: &mut Reader, c: Common, warnings: &mut Vec<String>) -> Parsed {
    let thresholding = read_thresholding(r)?;
    for key in ["use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"] {
        if r.bool(key)? {
            return Err(ConfigError::Unsupported {
                key: key.into(),
                got: "true".into(),
                reason: "difflab implements the default, Karras, exponential and beta sigmas"
                    .into(),
            });
        }
    }
    // Only the learned variances change what DPM-Solver does (a DDPM config's
    // "fixed_small" carried over by from_config is ignored there, as in diffusers).
    if let Some(v @ ("learned" | "learned_range")) = r.value("variance_type").as_str() {
        return Err(ConfigError::Unsupported {
            key: "variance_type".into(),
            got: format!("{v:?}"),
            reason: "learned variances need a model that predicts them; use null".into(),
        });
    }
    let solver_order = r.count("solver_order", 1)?;
    if solver_order > 3 {
        return Err(ConfigError::InvalidValue {
            key: "solver_order".into(),
            got: solver_order.to_string(),
            expected: "1, 2 or 3".into(),
        });
    }
    let algorithm = match r.string("algorithm_type")? {
        "dpmsolver++" => DpmAlgorithm::DpmSolverPlusPlus,
        "sde-dpmsolver++" => DpmAlgorithm::SdeDpmSolverPlusPlus,
        other @ ("dpmsolver" | "sde-dpmsolver") => {
            return Err(ConfigError::Unsupported {
                key: "algorithm_type".into(),
                got: format!("{other:?}"),
                reason: "the deprecated noise-prediction solvers are not implemented; use \"dpmsolver++\" or \"sde-dpmsolver++\"".into(),
            });
        }
        other => {
            return Err(ConfigError::InvalidValue {
                key: "algorithm_type".into(),
                got: format!("{other:?}"),
                expected: format!("one of {}", DpmAlgorithm::NAMES.join(", ")),
            });
        }
    };
    let solver_type = r.pick::<SolverType>("solver_type")?;
    let final_sigmas_type = r.pick::<FinalSigma>("final_sigmas_type")?;
    if algorithm == DpmAlgorithm::SdeDpmSolverPlusPlus && solver_order == 3 {
        warnings.push(
            "sde-dpmsolver++ with solver_order 3 follows diffusers, whose third-order SDE term has the opposite sign of k-diffusion's DPM++ 3M SDE".into(),
        );
    }
    let ramp = super::kfamilies::read_ramp(r)?;
    if ramp != SigmaRamp::Interpolated && c.schedule.num_train_timesteps < 2 {
        return Err(ConfigError::Unsupported {
            key: "use_karras_sigmas".into(),
            got: "true".into(),
            reason: "sigma ramps convert back to training timesteps, so num_train_timesteps must be at least 2".into(),
        });
    }
    Ok(Arc::new(DpmSolverConfig {
        thresholding,
        solver_order,
        algorithm,
        solver_type,
        lower_order_final: r.bool("lower_order_final")?,
        euler_at_final: r.bool("euler_at_final")?,
        ramp,
        final_sigmas_type,
        lambda_min_clipped: r.lambda("lambda_min_clipped")?,
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
    }))
}

/// Typed access to resolved settings with errors that name the key.
pub struct Reader<'a> {
    map: &'a Map<String, Value>,
}

impl Reader<'_> {
    // Read by the families in the registry.

    /// The setting `key`; null when the class has no such key (every read key is in its defaults).
    pub(super) fn value(&self, key: &str) -> &Value {
        self.map.get(key).unwrap_or(&Value::Null)
    }

    pub(super) fn invalid(&self, key: &str, expected: &str) -> ConfigError {
        ConfigError::InvalidValue {
            key: key.to_string(),
            got: self.value(key).to_string(),
            expected: expected.to_string(),
        }
    }

    pub(super) fn bool(&mut self, key: &str) -> Result<bool, ConfigError> {
        self.value(key)
            .as_bool()
            .ok_or_else(|| self.invalid(key, "true or false"))
    }

    pub(super) fn string(&mut self, key: &str) -> Result<&str, ConfigError> {
        let map = self.map;
        map[key]
            .as_str()
            .ok_or_else(|| self.invalid(key, "a string"))
    }

    pub(super) fn choice<T>(
        &mut self,
        key: &str,
        names: &[&str],
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let expected = format!("one of {}", names.join(", "));
        self.value(key)
            .as_str()
            .and_then(parse)
            .ok_or_else(|| self.invalid(key, &expected))
    }

    /// A setting whose values are an enum's variants, by their config names.
    pub(super) fn pick<T: std::str::FromStr + strum::VariantNames>(
        &mut self,
        key: &str,
    ) -> Result<T, ConfigError> {
        self.choice(key, T::VARIANTS, |s| s.parse().ok())
    }

    pub(super) fn number(&self, key: &str) -> Option<f64> {
        self.value(key).as_f64().filter(|v| v.is_finite())
    }

    /// A whole number in `min..=1_000_000` (larger values are mistakes and would exhaust memory).
    pub(super) fn count(&mut self, key: &str, min: u64) -> Result<usize, ConfigError> {
        const MAX: u64 = 1_000_000;
        let v = self.value(key);
        let n = v.as_u64().or_else(|| {
            // 1000.0 is accepted as 1000.
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        });
        match n {
            Some(n) if (min..=MAX).contains(&n) => Ok(n as usize),
            _ => Err(self.invalid(key, &format!("an integer from {min} to {MAX}"))),
        }
    }

    pub(super) fn unit(&mut self, key: &str) -> Result<f64, ConfigError> {
        match self.number(key) {
            Some(v) if v > 0.0 && v < 1.0 => Ok(v),
            _ => Err(self.invalid(key, "a number between 0 and 1 (exclusive)")),
        }
    }

    pub(super) fn in_range(&mut self, key: &str, lo: f64, hi: f64) -> Result<f64, ConfigError> {
        match self.number(key) {
            Some(v) if v > lo && v <= hi => Ok(v),
            _ => Err(self.invalid(key, &format!("a number in ({lo}, {hi}]"))),
        }
    }

    pub(super) fn positive(&mut self, key: &str) -> Result<f64, ConfigError> {
        match self.number(key) {
            Some(v) if v > 0.0 => Ok(v),
            _ => Err(self.invalid(key, "a positive number")),
        }
    }

    pub(super) fn non_negative(&mut self, key: &str) -> Result<f64, ConfigError> {
        match self.number(key) {
            Some(v) if v >= 0.0 => Ok(v),
            _ => Err(self.invalid(key, "a number of at least 0")),
        }
    }

    pub(super) fn lambda(&mut self, key: &str) -> Result<f64, ConfigError> {
        match self.value(key) {
            Value::String(s) if s == "-inf" => Ok(f64::NEG_INFINITY),
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| self.invalid(key, "a number or \"-inf\"")),
            _ => Err(self.invalid(key, "a number or \"-inf\"")),
        }
    }

    pub(super) fn betas(&mut self, key: &str) -> Result<Option<Vec<f64>>, ConfigError> {
        let expected = "null or a non-empty list of numbers between 0 and 1";
        match self.value(key) {
            Value::Null => Ok(None),
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|v| v.as_f64().filter(|b| *b > 0.0 && *b < 1.0))
                .collect::<Option<Vec<f64>>>()
                .map(Some)
                .ok_or_else(|| self.invalid(key, expected)),
            _ => Err(self.invalid(key, expected)),
        }
    }

    pub(super) fn variance_type(&mut self) -> Result<DdpmVariance, ConfigError> {
        let key = "variance_type";
        match self.value(key).as_str() {
            Some(s @ ("learned" | "learned_range")) => Err(ConfigError::Unsupported {
                key: key.into(),
                got: format!("{s:?}"),
                reason: format!(
                    "learned variances need a model that predicts them; use one of {}",
                    DdpmVariance::NAMES.join(", ")
                ),
            }),
            Some(s) => DdpmVariance::from_name(s).ok_or_else(|| {
                self.invalid(key, &format!("one of {}", DdpmVariance::NAMES.join(", ")))
            }),
            None => Err(self.invalid(key, &format!("one of {}", DdpmVariance::NAMES.join(", ")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn short_names_resolve_to_presets() {
        let r = SamplerConfig::resolve("DPM++ 2M Karras", None, &Map::new()).unwrap();
        let c: &DpmSolverConfig = r.config.family().expect("DPM-Solver");
        assert_eq!(c.ramp, SigmaRamp::Karras);
        assert_eq!(c.solver_order, 2);
        assert_eq!(r.warnings, Vec::<String>::new());
    }

    #[test]
    fn base_keys_are_taken_quietly_and_user_keys_reported() {
        let base = user(
            json!({"_class_name": "DDPMScheduler", "beta_schedule": "scaled_linear",
            "variance_type": "fixed_small", "clip_sample": false, "prediction_type": "v_prediction"}),
        );
        let r =
            SamplerConfig::resolve("ddim", Some(&base), &user(json!({"eta": 0.5, "colour": 1})))
                .unwrap();
        let c: &DdimConfig = r.config.family().expect("DDIM");
        assert_eq!(c.schedule.beta_schedule, BetaSchedule::ScaledLinear);
        assert_eq!(c.prediction_type, PredictionType::VPrediction);
        assert_eq!(c.clip, X0Clip::None);
        assert_eq!(c.eta, 0.5);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("colour"));
    }

    #[test]
    fn invalid_values_name_the_key_and_the_allowed_values() {
        let e =
            SamplerConfig::resolve("dpm++2m", None, &user(json!({"solver_order": 4}))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "scheduler setting `solver_order`: got 4, expected 1, 2 or 3"
        );
        let e = SamplerConfig::resolve("ddpm", None, &user(json!({"beta_schedule": "cosine"})))
            .unwrap_err();
        assert!(e.to_string().contains("`beta_schedule`"), "{e}");
        assert!(e.to_string().contains("squaredcos_cap_v2"), "{e}");
    }
}
