//! Defaults and settings parsers of UniPC, DEIS and PNDM, as the registry lists them. Keys and defaults
//! are diffusers 0.42.1's.

use serde_json::{Value, json};

use super::PredictionType;
use std::sync::Arc;

use super::deis::DeisConfig;
use super::family::{Common, ConfigError, Parsed, Reader, read_thresholding};
use super::kdiff::unsupported_prediction;
use super::kfamilies::read_ramp;
use super::pndm::PndmConfig;
use super::unipc::{UniPcConfig, Variant};
use super::vp_sigmas::{FinalSigma, VpSchedule};

/// The keys UniPC and DEIS share.
fn vp_multistep_keys() -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "thresholding": false,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "solver_order": 2,
        "lower_order_final": true,
        "use_karras_sigmas": false,
        "use_exponential_sigmas": false,
        "use_beta_sigmas": false,
        "use_flow_sigmas": false,
        "flow_shift": 1.0,
        "timestep_spacing": "linspace",
        "use_dynamic_shifting": false,
        "time_shift_type": "exponential",
    }) else {
        unreachable!("a literal object")
    };
    map
}

pub(super) fn unipc_defaults() -> Value {
    let mut map = vp_multistep_keys();
    let Value::Object(own) = json!({
        "predict_x0": true,
        "solver_type": "bh2",
        "disable_corrector": [],
        "solver_p": null,
        "final_sigmas_type": "zero",
        "rescale_betas_zero_snr": false,
        "sigma_min": null,
        "sigma_max": null,
        "shift_terminal": null,
    }) else {
        unreachable!("a literal object")
    };
    map.extend(own);
    Value::Object(map)
}

pub(super) fn deis_defaults() -> Value {
    let mut map = vp_multistep_keys();
    map.insert("algorithm_type".into(), json!("deis"));
    map.insert("solver_type".into(), json!("logrho"));
    Value::Object(map)
}

pub(super) fn pndm_defaults() -> Value {
    json!({"skip_prk_steps": false, "set_alpha_to_one": false, "timestep_spacing": "leading"})
}

/// Rejects the flow-matching and dynamic-shifting switches, and settings that must stay null.
fn reject_flow(r: &mut Reader, nulls: &[&str]) -> Result<(), ConfigError> {
    for key in ["use_flow_sigmas", "use_dynamic_shifting"] {
        if r.bool(key)? {
            return Err(ConfigError::Unsupported {
                key: key.into(),
                got: "true".into(),
                reason: "difflab implements the VP (DDPM-trained) schedules".into(),
            });
        }
    }
    for &key in nulls {
        if !r.value(key).is_null() {
            return Err(ConfigError::Unsupported {
                key: key.into(),
                got: r.value(key).to_string(),
                reason: "use null".into(),
            });
        }
    }
    Ok(())
}

fn solver_order(r: &mut Reader) -> Result<usize, ConfigError> {
    let order = r.count("solver_order", 1)?;
    if order > 3 {
        return Err(ConfigError::InvalidValue {
            key: "solver_order".into(),
            got: order.to_string(),
            expected: "1, 2 or 3".into(),
        });
    }
    Ok(order)
}

/// A string setting whose `replaced` values diffusers quietly rewrites to `value` (warned here).
fn one_of(
    r: &mut Reader,
    key: &str,
    values: &[&str],
    replaced: &[&str],
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let expected = format!("one of {}", values.join(", "));
    let got = r
        .value(key)
        .as_str()
        .ok_or_else(|| r.invalid(key, &expected))?
        .to_string();
    if values.contains(&got.as_str()) {
        return Ok(got);
    }
    if replaced.contains(&got.as_str()) {
        let value = values[values.len() - 1];
        warnings.push(format!(
            "{key} {got:?} is replaced by {value:?}, as diffusers does"
        ));
        return Ok(value.to_string());
    }
    Err(r.invalid(key, &expected))
}

fn vp_schedule(
    r: &mut Reader,
    c: &Common,
    nudge_zero_snr: bool,
) -> Result<VpSchedule, ConfigError> {
    Ok(VpSchedule {
        schedule: c.schedule.clone(),
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
        ramp: read_ramp(r)?,
        nudge_zero_snr,
    })
}

/// `disable_corrector`: a list of step indices.
fn step_list(r: &mut Reader, key: &str) -> Result<Vec<usize>, ConfigError> {
    let expected = "a list of step indices (integers from 0)";
    match r.value(key) {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_u64().map(|i| i as usize))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| r.invalid(key, expected)),
        _ => Err(r.invalid(key, expected)),
    }
}

pub(super) fn parse_unipc(r: &mut Reader, c: Common, warnings: &mut Vec<String>) -> Parsed {
    let thresholding = read_thresholding(r)?;
    reject_flow(r, &["solver_p", "sigma_min", "sigma_max", "shift_terminal"])?;
    let solver_order = solver_order(r)?;
    let variant = match one_of(
        r,
        "solver_type",
        &["bh1", "bh2"],
        &["midpoint", "heun", "logrho"],
        warnings,
    )?
    .as_str()
    {
        "bh1" => Variant::Bh1,
        _ => Variant::Bh2,
    };
    let final_sigmas_type = r.pick::<FinalSigma>("final_sigmas_type")?;
    let lower_order_final = r.bool("lower_order_final")?;
    if !lower_order_final && solver_order > 1 && final_sigmas_type == FinalSigma::Zero {
        warnings.push("UniPC with lower_order_final false and final_sigmas_type \"zero\": diffusers' last step is infinite there; difflab takes it first order".into());
    }
    Ok(Arc::new(UniPcConfig {
        vp: vp_schedule(r, &c, true)?,
        prediction_type: c.prediction_type,
        thresholding,
        solver_order,
        predict_x0: r.bool("predict_x0")?,
        variant,
        lower_order_final,
        disable_corrector: step_list(r, "disable_corrector")?,
        final_sigmas_type,
    }))
}

pub(super) fn parse_deis(r: &mut Reader, c: Common, warnings: &mut Vec<String>) -> Parsed {
    let thresholding = read_thresholding(r)?;
    reject_flow(r, &[])?;
    let solver_order = solver_order(r)?;
    one_of(
        r,
        "algorithm_type",
        &["deis"],
        &["dpmsolver", "dpmsolver++"],
        warnings,
    )?;
    one_of(
        r,
        "solver_type",
        &["logrho"],
        &["midpoint", "heun", "bh1", "bh2"],
        warnings,
    )?;
    Ok(Arc::new(DeisConfig {
        vp: vp_schedule(r, &c, false)?,
        prediction_type: c.prediction_type,
        thresholding,
        solver_order,
        lower_order_final: r.bool("lower_order_final")?,
    }))
}

pub(super) fn parse_pndm(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    if c.prediction_type == PredictionType::Sample {
        return Err(unsupported_prediction("PNDMScheduler", c.prediction_type));
    }
    Ok(Arc::new(PndmConfig {
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
        skip_prk_steps: r.bool("skip_prk_steps")?,
        set_alpha_to_one: r.bool("set_alpha_to_one")?,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;
    use crate::sampler::SamplerConfig;

    fn resolve(name: &str, settings: Value) -> Result<SamplerConfig, ConfigError> {
        let settings: Map<String, Value> = settings.as_object().cloned().unwrap_or_default();
        SamplerConfig::resolve(name, None, &settings).map(|r| r.config)
    }

    #[test]
    fn bad_settings_are_errors_naming_the_key() {
        for (name, settings, key) in [
            ("unipc", json!({"solver_order": 4}), "`solver_order`"),
            ("unipc", json!({"solver_type": "bh3"}), "`solver_type`"),
            (
                "unipc",
                json!({"disable_corrector": [-1]}),
                "`disable_corrector`",
            ),
            ("unipc", json!({"solver_p": {}}), "`solver_p`"),
            (
                "unipc",
                json!({"use_flow_sigmas": true}),
                "`use_flow_sigmas`",
            ),
            (
                "deis",
                json!({"algorithm_type": "unipc"}),
                "`algorithm_type`",
            ),
            ("deis", json!({"final_sigmas_type": "zero"}), ""),
            (
                "plms",
                json!({"prediction_type": "sample"}),
                "`prediction_type`",
            ),
        ] {
            match resolve(name, settings.clone()) {
                Err(e) => assert!(e.to_string().contains(key), "{name} {settings}: {e}"),
                // DEIS has no final_sigmas_type: an unknown key is a warning, not an error.
                Ok(_) => assert!(key.is_empty(), "{name} {settings} accepted"),
            }
        }
    }

    #[test]
    fn rewritten_values_warn() {
        let settings = json!({"solver_type": "midpoint"});
        let r = SamplerConfig::resolve("unipc", None, settings.as_object().unwrap()).unwrap();
        assert!(r.warnings[0].contains("\"bh2\""), "{:?}", r.warnings);
    }
}
