//! Short names on a flow-matching model (SD3, Flux, Sana): `euler` is flow Euler there and `heun` flow Heun,
//! as in ComfyUI and Forge; DPM-Solver++, UniPC, DEIS and the web UIs' deterministic loops (ipndm,
//! res_multistep, …) run in their flow mode (`use_flow_sigmas`) with the model's shift; the other samplers
//! have no flow form and are refused by name.

use serde_json::{Map, Value, json};

use super::ConfigError;
use super::registry::{self, Family};

/// Whether a model's scheduler config describes a flow-matching model: a FlowMatch class, flow sigmas, or
/// flow prediction.
pub fn is_flow_base(base: &Map<String, Value>) -> bool {
    let class = base.get("_class_name").and_then(Value::as_str);
    class.is_some_and(registry::is_flow_match)
        || base.get("use_flow_sigmas") == Some(&Value::Bool(true))
        || base.get("prediction_type").and_then(Value::as_str) == Some("flow_prediction")
}

/// The class a name's family runs as on a flow model, if it has a flow form.
fn flow_class(class: &str) -> Option<&'static str> {
    Some(match class {
        "EulerDiscreteScheduler" | "FlowMatchEulerDiscreteScheduler" => {
            "FlowMatchEulerDiscreteScheduler"
        }
        "HeunDiscreteScheduler" | "FlowMatchHeunDiscreteScheduler" => {
            "FlowMatchHeunDiscreteScheduler"
        }
        "DPMSolverMultistepScheduler" => "DPMSolverMultistepScheduler",
        "UniPCMultistepScheduler" => "UniPCMultistepScheduler",
        "DEISMultistepScheduler" => "DEISMultistepScheduler",
        super::k_sampler::CLASS => super::k_sampler::CLASS,
        _ => return None,
    })
}

/// The names that run on a flow model, in registry order.
pub fn flow_names() -> Vec<&'static str> {
    registry::names()
        .filter(|(n, _)| n.ui.contains(&registry::Ui::Difflab) && target_of(n.name).is_some())
        .map(|(n, _)| n.name)
        .collect()
}

/// The class a short name runs as on a flow model, if it has a flow form.
pub fn flow_class_of(name: &str) -> Option<&'static str> {
    target_of(name).map(|(f, _)| f.class)
}

/// The flow family a short name runs as and the name's preset, if the name has a flow form.
fn target_of(name: &str) -> Option<(&'static Family, Map<String, Value>)> {
    let (family, preset) = registry::lookup(name)?;
    let preset: Map<String, Value> = serde_json::from_str(preset).unwrap_or_default();
    let karras = preset.get("use_karras_sigmas") == Some(&Value::Bool(true));
    let target = flow_class(family.class)?;
    // Only flow Euler has Karras sigmas on flow models.
    if karras && target != "FlowMatchEulerDiscreteScheduler" {
        return None;
    }
    let web_ui_loop = preset.get("sampler").and_then(Value::as_str);
    if web_ui_loop.is_some_and(|l| !super::k_sampler::FLOW_LOOPS.contains(&l)) {
        return None;
    }
    Some((registry::family(target)?, preset))
}

/// The model's shift settings, written for `class`: `shift` for the FlowMatch classes, `flow_shift` with the
/// flow switches for the multistep ones.
fn flow_settings(class: &str, base: &Map<String, Value>) -> Map<String, Value> {
    let shift = base
        .get("shift")
        .or_else(|| base.get("flow_shift"))
        .cloned()
        .unwrap_or(json!(1.0));
    let mut out = Map::new();
    let mut copy = |key: &str| {
        if let Some(v) = base.get(key) {
            out.insert(key.into(), v.clone());
        }
    };
    match class {
        "FlowMatchHeunDiscreteScheduler" => {}
        "FlowMatchEulerDiscreteScheduler" => {
            for key in ["use_dynamic_shifting", "time_shift_type", "shift_terminal"] {
                copy(key);
            }
        }
        _ => {
            for key in ["use_dynamic_shifting", "time_shift_type"] {
                copy(key);
            }
            if class == "UniPCMultistepScheduler" {
                copy("shift_terminal");
            }
            out.insert("use_flow_sigmas".into(), json!(true));
            out.insert("prediction_type".into(), json!("flow_prediction"));
        }
    }
    let shift_key = if registry::is_flow_match(class) {
        "shift"
    } else {
        "flow_shift"
    };
    out.insert(shift_key.into(), shift);
    out
}

/// A family and the preset to resolve it with.
pub type FlowForm = (&'static Family, Map<String, Value>);

/// The family and preset a short name stands for on a flow model whose scheduler config is `base`; `None`
/// when `name` is not a short name (a scheduler_config.json path is taken as written).
pub fn flow_form(name: &str, base: &Map<String, Value>) -> Option<Result<FlowForm, ConfigError>> {
    registry::lookup(name)?;
    let Some((family, mut preset)) = target_of(name) else {
        return Some(Err(ConfigError::NoFlowForm {
            name: name.to_string(),
            names: flow_names().join(", "),
        }));
    };
    let known = registry::defaults(family);
    preset.retain(|k, _| known.contains_key(k));
    preset.extend(flow_settings(family.class, base));
    Some(Ok((family, preset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd3() -> Map<String, Value> {
        json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn euler_on_a_flow_model_is_flow_euler_with_its_shift() {
        let Some(Ok((family, preset))) = flow_form("euler", &sd3()) else {
            panic!("euler has a flow form")
        };
        assert_eq!(family.class, "FlowMatchEulerDiscreteScheduler");
        assert_eq!(preset["shift"], json!(3.0));
    }

    #[test]
    fn dpm_runs_with_flow_sigmas_and_the_model_shift() {
        let Some(Ok((family, preset))) = flow_form("DPM++ 2M", &sd3()) else {
            panic!("dpm++2m has a flow form")
        };
        assert_eq!(family.class, "DPMSolverMultistepScheduler");
        assert_eq!(preset["flow_shift"], json!(3.0));
        assert_eq!(preset["use_flow_sigmas"], json!(true));
        assert_eq!(preset["prediction_type"], json!("flow_prediction"));
    }

    #[test]
    fn samplers_without_a_flow_form_are_refused_by_name() {
        for name in [
            "ddim",
            "euler-a",
            "dpm++2m-karras",
            "lms",
            "DPM++ 2S a",
            "dpmpp_3m_sde",
            "restart",
        ] {
            let Some(Err(e)) = flow_form(name, &sd3()) else {
                panic!("{name} has no flow form")
            };
            assert!(e.to_string().contains("flow-matching"), "{e}");
            assert!(e.to_string().contains("euler"), "{e}");
        }
        assert!(flow_form("my_scheduler.json", &sd3()).is_none());
    }

    #[test]
    fn the_web_uis_deterministic_loops_run_in_flow_mode() {
        for name in [
            "res_multistep",
            "ipndm",
            "ipndm_v",
            "gradient_estimation",
            "heunpp2",
            "dpm-fast",
        ] {
            let Some(Ok((family, preset))) = flow_form(name, &sd3()) else {
                panic!("{name} has a flow form")
            };
            assert_eq!(family.class, super::super::k_sampler::CLASS);
            assert_eq!(preset["use_flow_sigmas"], json!(true));
            assert_eq!(preset["flow_shift"], json!(3.0));
        }
    }
}
