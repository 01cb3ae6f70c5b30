//! Defaults and settings parsers of DPMSolverSinglestepScheduler and LCMScheduler, as the registry
//! lists them. Keys and defaults are diffusers 0.42.1's.

use serde_json::{Value, json};

use std::sync::Arc;

use super::dpm_singlestep::{SinglestepAlgorithm, SinglestepConfig};
use super::family::{Common, ConfigError, Parsed, Reader, read_clip, read_thresholding};
use super::kfamilies::read_ramp;
use super::lcm::LcmConfig;
use super::settings::{FinalSigma, SolverType};
use super::sigmas::SigmaRamp;

pub(super) fn singlestep_defaults() -> Value {
    json!({
        "solver_order": 2,
        "thresholding": false,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": false,
        "use_karras_sigmas": false,
        "use_exponential_sigmas": false,
        "use_beta_sigmas": false,
        "use_flow_sigmas": false,
        "flow_shift": 1.0,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": "-inf",
        "variance_type": null,
        "use_dynamic_shifting": false,
        "time_shift_type": "exponential",
    })
}

/// Rejects a `true` for settings difflab does not implement.
fn refuse_true(r: &mut Reader, keys: &[&str], reason: &str) -> Result<(), ConfigError> {
    for &key in keys {
        if r.bool(key)? {
            return Err(ConfigError::Unsupported {
                key: key.into(),
                got: "true".into(),
                reason: reason.into(),
            });
        }
    }
    Ok(())
}

/// `final_sigmas_type`: true for "sigma_min", false for "zero".
fn read_final_sigma_min(r: &mut Reader) -> Result<bool, ConfigError> {
    Ok(r.pick::<FinalSigma>("final_sigmas_type")? == FinalSigma::SigmaMin)
}

pub(super) fn parse_singlestep(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    refuse_true(
        r,
        &["use_flow_sigmas", "use_dynamic_shifting"],
        "difflab implements the VP sigmas (default, Karras, exponential, beta)",
    )?;
    if let Some(v @ ("learned" | "learned_range")) = r.value("variance_type").as_str() {
        return Err(ConfigError::Unsupported {
            key: "variance_type".into(),
            got: format!("{v:?}"),
            reason: "learned variances need a model that predicts them; use null".into(),
        });
    }
    let thresholding = read_thresholding(r)?;
    let solver_order = r.count("solver_order", 1)?;
    if solver_order > 3 {
        return Err(ConfigError::InvalidValue {
            key: "solver_order".into(),
            got: solver_order.to_string(),
            expected: "1, 2 or 3".into(),
        });
    }
    let algorithm = r.choice(
        "algorithm_type",
        &SinglestepAlgorithm::NAMES,
        SinglestepAlgorithm::from_name,
    )?;
    let solver_type = r.pick::<SolverType>("solver_type")?;
    let final_sigma_min = read_final_sigma_min(r)?;
    if algorithm == SinglestepAlgorithm::DpmSolver && !final_sigma_min {
        // diffusers refuses this pair: the noise-prediction step to sigma 0 divides by zero.
        return Err(ConfigError::InvalidValue {
            key: "final_sigmas_type".into(),
            got: "\"zero\"".into(),
            expected: "\"sigma_min\" with algorithm_type \"dpmsolver\"".into(),
        });
    }
    let ramp = read_ramp(r)?;
    if ramp != SigmaRamp::Interpolated && c.schedule.num_train_timesteps < 2 {
        return Err(ConfigError::Unsupported {
            key: "use_karras_sigmas".into(),
            got: "true".into(),
            reason: "sigma ramps convert back to training timesteps, so num_train_timesteps must be at least 2".into(),
        });
    }
    Ok(Arc::new(SinglestepConfig {
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        thresholding,
        solver_order,
        algorithm,
        solver_type,
        lower_order_final: r.bool("lower_order_final")?,
        ramp,
        final_sigma_min,
        lambda_min_clipped: r.lambda("lambda_min_clipped")?,
    }))
}

pub(super) fn lcm_defaults() -> Value {
    json!({
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "original_inference_steps": 50,
        "clip_sample": false,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": true,
        "thresholding": false,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",
        "timestep_scaling": 10.0,
        "rescale_betas_zero_snr": false,
    })
}

/// LCM reads `set_alpha_to_one`, `timestep_spacing` and `steps_offset` but never uses them (its last
/// step stays at its own timestep); they are checked, not reported.
pub(super) fn parse_lcm(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    r.bool("set_alpha_to_one")?;
    let thresholding = read_thresholding(r)?;
    Ok(Arc::new(LcmConfig {
        clip: read_clip(r, thresholding)?,
        original_inference_steps: r.count("original_inference_steps", 1)?,
        timestep_scaling: r.positive("timestep_scaling")?,
        schedule: c.schedule,
        prediction_type: c.prediction_type,
    }))
}
