//! What every sampler family shares, and nothing family-specific: the settings trait a family implements,
//! the typed reader of resolved settings, the settings every class reads (training schedule, prediction
//! type, spacing), the clip and thresholding keys, and the error. Each family's defaults and parser live in
//! its own file; the registry is the one place that lists them.

use std::any::Any;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::prediction::X0Clip;
use super::schedule::{BetaSchedule, ScheduleConfig, VeSigmas};
use super::settings::DdpmVariance;
use super::sigma_schedule::SigmaSchedule;
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
    /// `advice`: why the class cannot be used and what to use instead.
    #[error("{source_name}: scheduler class {name:?} {advice}")]
    UnknownClass {
        name: String,
        source_name: String,
        advice: String,
    },
    /// `known`: the classes there are, listed.
    #[error("{source_name} has no \"_class_name\"; set it to one of {known}")]
    MissingClass { source_name: String, known: String },
    /// `advice`: the name meant, or every name.
    #[error("unknown sampler {name:?}{advice}")]
    UnknownSampler { name: String, advice: String },
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
    #[error(
        "`{name}` has no flow-matching form, and the model is a flow-matching one; use one of {names}"
    )]
    NoFlowForm { name: String, names: String },
    #[error(
        "`{name}` ({class}) has no form for a variance-exploding score model, and the model is one; use \
         score_sde_ve (its predictor-corrector sampler) or a σ-space sampler such as euler, heun or dpm++2m"
    )]
    NoVeForm { name: String, class: String },
    #[error("{steps} inference steps cannot be used: {reason}")]
    Steps { steps: usize, reason: String },
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

pub(super) fn with_vp(specific: Value) -> Value {
    let mut map = vp_defaults();
    if let Value::Object(extra) = specific {
        map.extend(extra);
    }
    Value::Object(map)
}

/// What every class reads: the training schedule, the prediction type and the timestep spacing.
#[derive(Debug, Clone)]
pub struct Common {
    pub schedule: ScheduleConfig,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

/// `ve`: the σ range of the variance-exploding model a σ-space sampler runs on ([`super::ve_form`]); the
/// table is then that model's, and the sampler itself predicts noise (its VE form turns the score into it).
pub(super) fn read_common(
    r: &mut Reader,
    warnings: &mut Vec<String>,
    ve: Option<VeSigmas>,
) -> Result<Common, ConfigError> {
    if let Some(ve) = ve {
        return Ok(Common {
            schedule: ScheduleConfig {
                num_train_timesteps: r.count("num_train_timesteps", 2)?,
                ve_sigmas: Some(ve),
                ..ScheduleConfig::default()
            },
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: read_spacing(r)?,
            steps_offset: r.count("steps_offset", 0)? as i64,
        });
    }
    // Flow-matching classes have no betas: only the number of training steps.
    if r.value("beta_schedule").is_null() {
        return Ok(Common {
            schedule: ScheduleConfig {
                num_train_timesteps: r.count("num_train_timesteps", 1)?,
                ..ScheduleConfig::default()
            },
            prediction_type: PredictionType::FlowPrediction,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        });
    }
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
        ve_sigmas: None,
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
    let prediction_type = r.choice(
        "prediction_type",
        PredictionType::NAMES,
        PredictionType::from_name,
    )?;
    if prediction_type == PredictionType::Score {
        return Err(ConfigError::Unsupported {
            key: "prediction_type".into(),
            got: "\"score\"".into(),
            reason: "a score model is a variance-exploding one: give its ScoreSdeVeScheduler config (sigma_min, \
                     sigma_max) as the model's scheduler_config.json, and every sampler runs on its σ range"
                .into(),
        });
    }
    Ok(Common {
        schedule,
        prediction_type,
        timestep_spacing: read_spacing(r)?,
        steps_offset: r.count("steps_offset", 0)? as i64,
    })
}

/// `timestep_spacing`; classes without the key (DPMSolverSinglestep, the EDM classes) space their own way.
fn read_spacing(r: &mut Reader) -> Result<TimestepSpacing, ConfigError> {
    if r.value("timestep_spacing").is_null() {
        return Ok(TimestepSpacing::Linspace);
    }
    r.choice(
        "timestep_spacing",
        TimestepSpacing::NAMES,
        TimestepSpacing::from_name,
    )
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

/// Typed access to resolved settings with errors that name the key.
pub struct Reader<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Reader<'a> {
    /// A reader of the resolved settings `map`.
    pub(super) fn new(map: &'a Map<String, Value>) -> Self {
        Self { map }
    }

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
}

// Settings: the class's defaults and parser.

pub(super) fn sigma_keys() -> Value {
    json!({
        "use_karras_sigmas": false,
        "use_exponential_sigmas": false,
        "use_beta_sigmas": false,
        "timestep_spacing": "linspace",
        "sigma_schedule": null,
        "sigmas": null,
    })
}

pub(super) fn merged(a: Value, b: Value) -> Value {
    let (Value::Object(mut a), Value::Object(b)) = (a, b) else {
        unreachable!("literal objects")
    };
    a.extend(b);
    Value::Object(a)
}

/// The sigma ramp chosen by `use_karras_sigmas` / `use_exponential_sigmas` / `use_beta_sigmas`.
pub(super) fn read_ramp(r: &mut Reader) -> Result<SigmaRamp, ConfigError> {
    let ramps = [
        ("use_karras_sigmas", SigmaRamp::Karras),
        ("use_exponential_sigmas", SigmaRamp::Exponential),
        ("use_beta_sigmas", SigmaRamp::Beta),
    ];
    let mut chosen = SigmaRamp::Interpolated;
    for (key, ramp) in ramps {
        if r.bool(key)? {
            if chosen != SigmaRamp::Interpolated {
                return Err(ConfigError::InvalidValue {
                    key: key.into(),
                    got: "true".into(),
                    expected: "false: only one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas can be true".into(),
                });
            }
            chosen = ramp;
        }
    }
    Ok(chosen)
}

/// The ramp, or a web UI's schedule by ComfyUI's name (`sigma_schedule`), which replaces a ramp rather than
/// combining with one (the multistep and singlestep solvers, which step between sigmas on the training table).
pub(super) fn read_ramp_or_schedule(r: &mut Reader) -> Result<SigmaRamp, ConfigError> {
    let ramp = read_ramp(r)?;
    let schedule = match r.value("sigma_schedule") {
        Value::Null => return Ok(ramp),
        Value::String(name) => SigmaSchedule::from_name(name).ok_or_else(|| {
            r.invalid(
                "sigma_schedule",
                &format!("one of {}", SigmaSchedule::NAMES.join(", ")),
            )
        })?,
        _ => return Err(r.invalid("sigma_schedule", "a schedule's name, e.g. \"kl_optimal\"")),
    };
    if ramp != SigmaRamp::Interpolated {
        return Err(ConfigError::InvalidValue {
            key: "sigma_schedule".into(),
            got: format!("{:?}", schedule.name()),
            expected:
                "null when use_karras_sigmas, use_exponential_sigmas or use_beta_sigmas is true"
                    .into(),
        });
    }
    Ok(SigmaRamp::Schedule(schedule))
}

/// `sigmas`, the user's own list, for the solvers that step on the training table; it replaces a ramp or a
/// web UI's schedule rather than combining with one, and is not for flow sigmas (flow Euler's `sigmas` is).
pub(super) fn read_sigma_list(
    r: &mut Reader,
    ramp: SigmaRamp,
    flow: bool,
) -> Result<Option<Vec<f64>>, ConfigError> {
    let list = super::kdiff::read_sigmas(r)?;
    if list.is_some() && flow {
        return Err(ConfigError::InvalidValue {
            key: "sigmas".into(),
            got: "a list".into(),
            expected: "null with use_flow_sigmas: on a flow model flow-euler (euler) takes a list"
                .into(),
        });
    }
    if list.is_some() && ramp != SigmaRamp::Interpolated {
        return Err(ConfigError::InvalidValue {
            key: "sigmas".into(),
            got: "a list".into(),
            expected: "null when a sigma ramp or sigma_schedule is set: the list is the schedule"
                .into(),
        });
    }
    Ok(list)
}

/// `variance_type` for the DPM-Solvers, which only learned variances would change: null, or a DDPM value
/// carried over from a DDPM config (ignored there, as in diffusers); learned variances and anything else
/// are errors.
pub(super) fn check_unused_variance_type(r: &mut Reader) -> Result<(), ConfigError> {
    match r.value("variance_type") {
        Value::Null => Ok(()),
        Value::String(v) if DdpmVariance::from_name(v).is_some() => Ok(()),
        Value::String(v) if v == "learned" || v == "learned_range" => {
            Err(ConfigError::Unsupported {
                key: "variance_type".into(),
                got: format!("{v:?}"),
                reason: "learned variances need a model that predicts them; use null".into(),
            })
        }
        _ => {
            let known = DdpmVariance::NAMES.join(", ");
            Err(r.invalid("variance_type", &format!("null (or one of DDPM's {known})")))
        }
    }
}

/// `time_shift_type` of the flow-matching shifts difflab refuses (`use_dynamic_shifting`): still one of
/// diffusers' two values, so a typo is named rather than ignored.
pub(super) fn check_time_shift_type(r: &mut Reader) -> Result<(), ConfigError> {
    if r.value("time_shift_type").is_null() {
        return Ok(());
    }
    r.choice("time_shift_type", &["exponential", "linear"], |s| {
        matches!(s, "exponential" | "linear").then_some(())
    })
}

/// `solver_order`: 1, 2 or 3, as every multistep and singlestep solver takes it.
pub(super) fn read_solver_order(r: &mut Reader) -> Result<usize, ConfigError> {
    let order = r.count("solver_order", 1)?;
    if order > 3 {
        return Err(r.invalid("solver_order", "1, 2 or 3"));
    }
    Ok(order)
}

/// The sigma ramp, which converts back to training timesteps and so needs at least two of them.
pub(super) fn read_ramp_for(
    r: &mut Reader,
    schedule: &ScheduleConfig,
) -> Result<SigmaRamp, ConfigError> {
    let ramp = read_ramp_or_schedule(r)?;
    if ramp != SigmaRamp::Interpolated && schedule.num_train_timesteps < 2 {
        return Err(ConfigError::Unsupported {
            key: "use_karras_sigmas".into(),
            got: "true".into(),
            reason: "sigma ramps convert back to training timesteps, so num_train_timesteps must be at least 2"
                .into(),
        });
    }
    Ok(ramp)
}
