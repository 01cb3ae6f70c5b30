//! Sampler configuration: diffusers' `scheduler_config.json` (same keys, same defaults, `_class_name`
//! picks the scheduler) and the short names users know from the web UIs (`dpm++2m-karras`, ...).
//!
//! A config is resolved in layers: the class defaults, then a base config (the model's own
//! scheduler_config.json: only the keys this class knows are taken, quietly, as diffusers'
//! `from_config` does), then the short name's preset, then the user's keys (unknown ones are reported
//! as warnings and ignored; invalid values are errors naming the key and what is allowed).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::family::{ConfigError, FamilyConfig, Reader, read_common};
use super::schedule::{ScheduleConfig, VeSigmas};
use super::{PredictionType, Scheduler, flow_names, registry, score_sde_ve, ve_form};

/// What to use instead of a class difflab does not implement.
fn unknown_class_advice() -> String {
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

    /// The sigma the first step of `steps` starts from, where the scheduler has sigmas.
    pub fn first_sigma(&self, steps: usize) -> Option<f64> {
        let mut scheduler = self.build();
        scheduler.set_steps(steps).ok()?;
        scheduler.sigmas()?.first().map(|&s| s as f64)
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
        resolve(family, None, &Map::new(), &base, None)
    }

    /// Reads a scheduler config from JSON text (`source_name` names it in errors).
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Resolved, ConfigError> {
        let map = parse_json_object(text, source_name)?;
        let family = class_of(&map, source_name)?;
        resolve(family, None, &Map::new(), &map, None)
    }

    /// Resolves a sampler given by short name (`dpm++2m-karras`) or by the path of a
    /// scheduler_config.json, on top of a model's base config, with the user's overrides.
    pub fn resolve(
        spec: &str,
        base: Option<&Map<String, Value>>,
        overrides: &Map<String, Value>,
    ) -> Result<Resolved, ConfigError> {
        if let Some(ve) = base.and_then(score_sde_ve::ve_sigmas_of) {
            return resolve_on_ve(spec, base, overrides, ve?);
        }
        if let Some(found) = base
            .filter(|b| flow_names::is_flow_base(b))
            .and_then(|b| flow_names::flow_form(spec, b))
        {
            let (family, preset) = found?;
            return resolve(family, base, &preset, overrides, None);
        }
        let (family, user) = named(spec, overrides)?;
        if family.class == score_sde_ve::CLASS {
            return Err(ConfigError::Unsupported {
                key: "_class_name".into(),
                got: format!("{:?}", family.class),
                reason:
                    "the predictor-corrector sampler needs a variance-exploding score model, whose \
                    scheduler_config.json is a ScoreSdeVeScheduler; this model's is not"
                        .into(),
            });
        }
        resolve(family, base, &Map::new(), &user, None)
    }
}

/// The family a short name or a scheduler_config.json path stands for, with the settings it sets (a name's
/// preset or the file's keys, then `overrides`).
fn named(
    spec: &str,
    overrides: &Map<String, Value>,
) -> Result<(&'static registry::Family, Map<String, Value>), ConfigError> {
    if let Some((family, preset)) = registry::lookup(spec) {
        // Presets are constants, checked by a test; a broken one reads as no preset.
        let mut user: Map<String, Value> = serde_json::from_str(preset).unwrap_or_default();
        user.extend(overrides.clone());
        return Ok((family, user));
    }
    let path = Path::new(spec);
    if spec.ends_with(".json") || path.is_file() {
        let mut file = read_json_object(path)?;
        let family = class_of(&file, spec)?;
        file.extend(overrides.clone());
        return Ok((family, file));
    }
    Err(ConfigError::UnknownSampler {
        name: spec.to_string(),
        advice: unknown_sampler_advice(spec),
    })
}

/// The keys of a training schedule, which a VE model's σ range replaces.
const SCHEDULE_KEYS: &[&str] = &[
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "rescale_betas_zero_snr",
    "prediction_type",
];

/// A sampler on a variance-exploding score model (`ve`: its σ range): the predictor-corrector sampler as it
/// is, any other that predicts noise on a training table in its VE form ([`ve_form`]) on the model's σ table.
fn resolve_on_ve(
    spec: &str,
    base: Option<&Map<String, Value>>,
    overrides: &Map<String, Value>,
    ve: (VeSigmas, usize),
) -> Result<Resolved, ConfigError> {
    let (family, user) = named(spec, overrides)?;
    if family.class == score_sde_ve::CLASS {
        return resolve(family, base, &Map::new(), &user, None);
    }
    if !ve_form::runs_on_ve(family.class) {
        return Err(ConfigError::NoVeForm {
            name: spec.to_string(),
            class: family.class.to_string(),
        });
    }
    if let Some(key) = SCHEDULE_KEYS.iter().find(|k| user.contains_key(**k)) {
        return Err(ConfigError::Unsupported {
            key: key.to_string(),
            got: user[*key].to_string(),
            reason: "the model is a variance-exploding score model: its σ range (scheduler_config.json's \
                sigma_min and sigma_max) is the schedule, and it predicts the score; remove the key"
                .into(),
        });
    }
    let (sigmas, steps) = ve;
    let table = Map::from_iter([("num_train_timesteps".to_string(), Value::from(steps))]);
    let mut resolved = resolve(family, Some(&table), &Map::new(), &user, Some(sigmas))?;
    resolved.config = SamplerConfig {
        class: family.class,
        family: Arc::new(ve_form::VeFormConfig {
            inner: resolved.config.family,
        }),
    };
    let range = serde_json::json!([sigmas.sigma_min, sigmas.sigma_max]);
    resolved.settings.insert("_ve_sigma_range".into(), range);
    Ok(resolved)
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
                advice: unknown_class_advice(),
            })
        }
        Some(other) => Err(ConfigError::InvalidValue {
            key: "_class_name".into(),
            got: other.to_string(),
            expected: format!("one of {}", registry::class_names().join(", ")),
        }),
        None => Err(ConfigError::MissingClass {
            source_name: source_name.to_string(),
            known: registry::class_names().join(", "),
        }),
    }
}

/// Resolves `family` from its defaults, the quiet `base`, then `preset` and the reported `user` keys; `ve`: on
/// a VE model's σ table.
fn resolve(
    family: &'static registry::Family,
    base: Option<&Map<String, Value>>,
    preset: &Map<String, Value>,
    user: &Map<String, Value>,
    ve: Option<VeSigmas>,
) -> Result<Resolved, ConfigError> {
    let class = family.class;
    let defaults = registry::defaults(family);
    let mut settings = defaults.clone();
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
    check_kinds(&settings, &defaults)?;
    let mut r = Reader::new(&settings);
    let common = read_common(&mut r, &mut warnings, ve)?;
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

/// Every setting is of its default's kind (a number, a flag, a name, a list), so a value the class reads only
/// in some configurations (a thresholding ratio while thresholding is off) is still never a silent mistake.
/// Numbers may be written as strings ("inf"), and names as numbers where the default is a string of one
/// ("-inf"); a key whose default is null takes what its parser allows.
fn check_kinds(
    settings: &Map<String, Value>,
    defaults: &Map<String, Value>,
) -> Result<(), ConfigError> {
    for (key, value) in settings {
        let Some(default) = defaults.get(key) else {
            continue;
        };
        let fits = match (default, value) {
            (Value::Null, _) => true,
            (_, Value::Null) => true,
            (Value::Number(_), Value::Number(_)) => true,
            (Value::Number(_), Value::String(s)) => s.trim().parse::<f64>().is_ok(),
            (Value::String(d), Value::Number(_)) => d.trim().parse::<f64>().is_ok(),
            (Value::Bool(_), Value::Bool(_))
            | (Value::String(_), Value::String(_))
            | (Value::Array(_), Value::Array(_)) => true,
            _ => false,
        };
        if !fits {
            let kind = match default {
                Value::Number(_) => "a number",
                Value::Bool(_) => "true or false",
                Value::String(_) => "a string",
                Value::Array(_) => "a list",
                _ => "a value",
            };
            return Err(ConfigError::InvalidValue {
                key: key.clone(),
                got: value.to_string(),
                expected: kind.into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::ddim::DdimConfig;
    use super::super::dpm_solver::DpmSolverConfig;
    use super::super::prediction::X0Clip;
    use super::super::schedule::BetaSchedule;
    use super::super::sigmas::SigmaRamp;
    use super::*;

    /// `sigmas = [...]` steps the solvers on the training table through one's own sigmas, the model called
    /// at the nearest timestep; a list of another length, or one beside a ramp, is refused.
    #[test]
    fn solvers_on_the_training_table_take_their_own_sigmas() {
        let list = [14.6, 5.0, 2.0, 0.8, 0.1];
        for name in ["dpm++2m", "dpm++2s", "unipc", "deis"] {
            let resolved =
                SamplerConfig::resolve(name, None, &user(json!({"sigmas": list}))).unwrap();
            let mut s = resolved.config.build();
            s.set_steps(5).unwrap();
            let sigmas: Vec<f64> = s.sigmas().unwrap()[..5]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            for (got, want) in sigmas.iter().zip(list) {
                assert!((got - want).abs() < 1e-5 * want, "{name}: {sigmas:?}");
            }
            let e = s.set_steps(4).unwrap_err();
            assert!(e.to_string().contains("`sigmas` list has 5"), "{name}: {e}");
            let e = SamplerConfig::resolve(
                name,
                None,
                &user(json!({"sigmas": list, "use_karras_sigmas": true})),
            );
            assert!(e.is_err(), "{name}: a list beside a Karras ramp");
        }
    }

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
