//! Defaults and settings parsers of the k-diffusion style classes (Euler, Euler a, Heun, LMS), as
//! the registry lists them. Keys and defaults are diffusers 0.42.1's; `s_churn`, `s_tmin`, `s_tmax`,
//! `s_noise` (Euler) and `order` (LMS) are diffusers' `step()` keywords, settable here too.

use serde_json::{Value, json};

use super::PredictionType;
use std::sync::Arc;

use super::dpm_sde::DpmSdeConfig;
use super::edm::{EdmConfig, EdmDpmConfig, EdmEulerConfig, EdmSchedule};
use super::euler::{Churn, EulerConfig};
use super::euler_ancestral::EulerAncestralConfig;
use super::family::{Common, ConfigError, Parsed, Reader, read_clip, read_thresholding};
use super::heun::HeunConfig;
use super::kdiff::{KConfig, unsupported_prediction};
use super::kdpm2::Kdpm2Config;
use super::lms::LmsConfig;
use super::prediction::X0Clip;
use super::settings::{FinalSigma, SolverType};
use super::sigmas::SigmaRamp;

fn sigma_keys() -> Value {
    json!({
        "use_karras_sigmas": false,
        "use_exponential_sigmas": false,
        "use_beta_sigmas": false,
        "timestep_spacing": "linspace",
    })
}

fn merged(a: Value, b: Value) -> Value {
    let (Value::Object(mut a), Value::Object(b)) = (a, b) else {
        unreachable!("literal objects")
    };
    a.extend(b);
    Value::Object(a)
}

pub(super) fn euler_defaults() -> Value {
    merged(
        sigma_keys(),
        json!({
            "interpolation_type": "linear",
            "sigma_min": null,
            "sigma_max": null,
            "timestep_type": "discrete",
            "rescale_betas_zero_snr": false,
            "final_sigmas_type": "zero",
            "s_churn": 0.0,
            "s_tmin": 0.0,
            "s_tmax": "inf",
            "s_noise": 1.0,
        }),
    )
}

pub(super) fn euler_ancestral_defaults() -> Value {
    json!({"timestep_spacing": "linspace", "rescale_betas_zero_snr": false})
}

pub(super) fn heun_defaults() -> Value {
    merged(
        sigma_keys(),
        json!({"beta_start": 0.00085, "beta_end": 0.012, "clip_sample": false, "clip_sample_range": 1.0}),
    )
}

pub(super) fn lms_defaults() -> Value {
    merged(sigma_keys(), json!({"order": 4}))
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

fn k_config(c: Common, ramp: SigmaRamp) -> KConfig {
    KConfig {
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
        ramp,
    }
}

/// A number setting that may be the string "inf".
fn number_or_inf(r: &mut Reader, key: &str) -> Result<f64, ConfigError> {
    match r.value(key) {
        Value::String(s) if s == "inf" => Ok(f64::INFINITY),
        _ => r.non_negative(key),
    }
}

pub(super) fn parse_euler(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    for key in ["sigma_min", "sigma_max"] {
        if !r.value(key).is_null() {
            return Err(ConfigError::Unsupported {
                key: key.into(),
                got: r.value(key).to_string(),
                reason: "difflab takes the sigma range from the training schedule; use null".into(),
            });
        }
    }
    let ramp = read_ramp(r)?;
    let log_linear = r.choice(
        "interpolation_type",
        &["linear", "log_linear"],
        |s| match s {
            "linear" => Some(false),
            "log_linear" => Some(true),
            _ => None,
        },
    )?;
    let continuous = r.choice("timestep_type", &["discrete", "continuous"], |s| match s {
        "discrete" => Some(false),
        "continuous" => Some(true),
        _ => None,
    })?;
    let final_sigma_min = r.pick::<FinalSigma>("final_sigmas_type")? == FinalSigma::SigmaMin;
    let churn = Churn {
        s_churn: r.non_negative("s_churn")?,
        s_tmin: r.non_negative("s_tmin")?,
        s_tmax: number_or_inf(r, "s_tmax")?,
        s_noise: r.non_negative("s_noise")?,
    };
    Ok(Arc::new(EulerConfig {
        k: k_config(c, ramp),
        log_linear,
        final_sigma_min,
        continuous,
        churn,
    }))
}

pub(super) fn parse_euler_ancestral(
    _r: &mut Reader,
    c: Common,
    _warnings: &mut Vec<String>,
) -> Parsed {
    if c.prediction_type == PredictionType::Sample {
        return Err(unsupported_prediction(
            "EulerAncestralDiscreteScheduler",
            c.prediction_type,
        ));
    }
    Ok(Arc::new(EulerAncestralConfig(k_config(
        c,
        SigmaRamp::Interpolated,
    ))))
}

pub(super) fn parse_heun(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let ramp = read_ramp(r)?;
    let clip = read_clip(r, X0Clip::None)?;
    Ok(Arc::new(HeunConfig {
        k: k_config(c, ramp),
        clip,
    }))
}

pub(super) fn parse_lms(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let ramp = read_ramp(r)?;
    let order = r.count("order", 1)?;
    if order > 4 {
        return Err(ConfigError::InvalidValue {
            key: "order".into(),
            got: order.to_string(),
            expected: "1, 2, 3 or 4".into(),
        });
    }
    Ok(Arc::new(LmsConfig {
        k: k_config(c, ramp),
        order,
    }))
}

pub(super) fn kdpm2_defaults() -> Value {
    merged(
        sigma_keys(),
        json!({"beta_start": 0.00085, "beta_end": 0.012}),
    )
}

/// KDPM2 and KDPM2 a: no `sample` prediction (diffusers raises there).
fn kdpm2_config(r: &mut Reader, c: Common, class: &str) -> Result<KConfig, ConfigError> {
    if c.prediction_type == PredictionType::Sample {
        return Err(unsupported_prediction(class, c.prediction_type));
    }
    let ramp = read_ramp(r)?;
    Ok(k_config(c, ramp))
}

pub(super) fn parse_kdpm2(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    Ok(Arc::new(Kdpm2Config {
        k: kdpm2_config(r, c, "KDPM2DiscreteScheduler")?,
        ancestral: false,
    }))
}

pub(super) fn parse_kdpm2_ancestral(
    r: &mut Reader,
    c: Common,
    _warnings: &mut Vec<String>,
) -> Parsed {
    Ok(Arc::new(Kdpm2Config {
        k: kdpm2_config(r, c, "KDPM2AncestralDiscreteScheduler")?,
        ancestral: true,
    }))
}

pub(super) fn dpm_sde_defaults() -> Value {
    merged(
        sigma_keys(),
        json!({"beta_start": 0.00085, "beta_end": 0.012, "noise_sampler_seed": null, "s_noise": 1.0}),
    )
}

pub(super) fn parse_dpm_sde(r: &mut Reader, c: Common, warnings: &mut Vec<String>) -> Parsed {
    if c.prediction_type == PredictionType::Sample {
        return Err(unsupported_prediction(
            "DPMSolverSDEScheduler",
            c.prediction_type,
        ));
    }
    if !r.value("noise_sampler_seed").is_null() {
        warnings.push("noise_sampler_seed is ignored: difflab draws each sample's Brownian noise from that sample's own seed".into());
    }
    let ramp = read_ramp(r)?;
    Ok(Arc::new(DpmSdeConfig {
        k: k_config(c, ramp),
        s_noise: r.non_negative("s_noise")?,
    }))
}

fn edm_keys() -> Value {
    json!({
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "sigma_data": 0.5,
        "sigma_schedule": "karras",
        "rho": 7.0,
        "final_sigmas_type": "zero",
    })
}

pub(super) fn edm_euler_defaults() -> Value {
    merged(
        edm_keys(),
        json!({"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": "inf", "s_noise": 1.0}),
    )
}

pub(super) fn edm_dpm_defaults() -> Value {
    merged(
        edm_keys(),
        json!({
            "solver_order": 2,
            "thresholding": false,
            "dynamic_thresholding_ratio": 0.995,
            "sample_max_value": 1.0,
            "algorithm_type": "dpmsolver++",
            "solver_type": "midpoint",
            "lower_order_final": true,
            "euler_at_final": false,
        }),
    )
}

/// The settings both EDM classes read; `sample` prediction is refused as diffusers does.
fn edm_config(r: &mut Reader, c: &Common, class: &str) -> Result<EdmConfig, ConfigError> {
    if c.prediction_type == PredictionType::Sample {
        return Err(unsupported_prediction(class, c.prediction_type));
    }
    let sigma_min = r.positive("sigma_min")?;
    let sigma_max = r.positive("sigma_max")?;
    if sigma_max <= sigma_min {
        return Err(r.invalid("sigma_max", "a number above sigma_min"));
    }
    Ok(EdmConfig {
        sigma_min,
        sigma_max,
        sigma_data: r.positive("sigma_data")?,
        rho: r.positive("rho")?,
        sigma_schedule: r.choice("sigma_schedule", &["karras", "exponential"], |s| match s {
            "karras" => Some(EdmSchedule::Karras),
            "exponential" => Some(EdmSchedule::Exponential),
            _ => None,
        })?,
        prediction_type: c.prediction_type,
        schedule: c.schedule.clone(),
        final_sigma_min: r.pick::<FinalSigma>("final_sigmas_type")? == FinalSigma::SigmaMin,
    })
}

pub(super) fn parse_edm_euler(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let edm = edm_config(r, &c, "EDMEulerScheduler")?;
    let churn = Churn {
        s_churn: r.non_negative("s_churn")?,
        s_tmin: r.non_negative("s_tmin")?,
        s_tmax: number_or_inf(r, "s_tmax")?,
        s_noise: r.non_negative("s_noise")?,
    };
    Ok(Arc::new(EdmEulerConfig { edm, churn }))
}

pub(super) fn parse_edm_dpm(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let edm = edm_config(r, &c, "EDMDPMSolverMultistepScheduler")?;
    let solver_order = r.count("solver_order", 1)?;
    if solver_order > 3 {
        return Err(r.invalid("solver_order", "1, 2 or 3"));
    }
    let sde = r.choice(
        "algorithm_type",
        &["dpmsolver++", "sde-dpmsolver++"],
        |s| match s {
            "dpmsolver++" => Some(false),
            "sde-dpmsolver++" => Some(true),
            _ => None,
        },
    )?;
    if sde && solver_order == 3 {
        return Err(ConfigError::Unsupported {
            key: "solver_order".into(),
            got: "3".into(),
            reason: "diffusers' EDM third-order update exists for \"dpmsolver++\" only".into(),
        });
    }
    let heun = r.pick::<SolverType>("solver_type")? == SolverType::Heun;
    Ok(Arc::new(EdmDpmConfig {
        edm,
        thresholding: read_thresholding(r)?,
        solver_order,
        sde,
        heun,
        lower_order_final: r.bool("lower_order_final")?,
        euler_at_final: r.bool("euler_at_final")?,
    }))
}
