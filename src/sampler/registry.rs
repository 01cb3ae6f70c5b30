//! Every sampler family in one table: its diffusers class, config defaults, settings parser and the
//! names users type for it (difflab's short names, A1111's, ComfyUI's). The config reader,
//! `difflab schedule`, the tests and the README's sampler table read it from here.

use serde_json::{Map, Value, json};

use super::family::{Common, Parsed, Reader};
use super::{
    ddim, ddpm, deis, dpm_sde, dpm_singlestep, dpm_solver, edm, euler, euler_ancestral, flow_euler,
    flow_heun, heun, k_sampler, kdpm2, lcm, lms, pndm, score_sde_ve, unipc,
};

/// Where a name comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ui {
    /// difflab's own short name.
    Difflab,
    /// AUTOMATIC1111's web UI.
    A1111,
    /// ComfyUI's sampler (and scheduler) names.
    ComfyUi,
}

/// A name for a class with some settings.
#[derive(Debug, Clone, Copy)]
pub struct Name {
    pub name: &'static str,
    pub ui: &'static [Ui],
    /// The settings the name stands for, as diffusers keys (a JSON object).
    pub preset: &'static str,
}

/// One scheduler family.
pub struct Family {
    pub class: &'static str,
    /// The class-specific defaults (the keys every class shares are added by [`defaults`]).
    pub defaults: fn() -> Value,
    /// Reads the class's settings (all present, defaults filled in).
    pub parse: fn(&mut Reader, Common, &mut Vec<String>) -> Parsed,
    pub names: &'static [Name],
}

const D: &[Ui] = &[Ui::Difflab];
const ALL: &[Ui] = &[Ui::Difflab, Ui::A1111, Ui::ComfyUi];
const COMFY: &[Ui] = &[Ui::ComfyUi];
const DC: &[Ui] = &[Ui::Difflab, Ui::ComfyUi];
const KARRAS: &str = r#"{"use_karras_sigmas": true}"#;

pub const FAMILIES: &[Family] = &[
    Family {
        class: "DDPMScheduler",
        defaults: ddpm::ddpm_defaults,
        parse: ddpm::parse_ddpm,
        names: &[Name {
            name: "ddpm",
            ui: D,
            preset: "{}",
        }],
    },
    Family {
        class: "DDIMScheduler",
        defaults: ddim::ddim_defaults,
        parse: ddim::parse_ddim,
        names: &[Name {
            name: "ddim",
            ui: ALL,
            preset: "{}",
        }],
    },
    Family {
        class: "DPMSolverMultistepScheduler",
        defaults: dpm_solver::dpm_defaults,
        parse: dpm_solver::parse_dpm,
        names: &[
            Name {
                name: "dpm++2m",
                ui: ALL,
                preset: r#"{"solver_order": 2, "algorithm_type": "dpmsolver++", "use_karras_sigmas": false}"#,
            },
            Name {
                name: "dpm++2m-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: r#"{"solver_order": 2, "algorithm_type": "dpmsolver++", "use_karras_sigmas": true}"#,
            },
            Name {
                name: "dpm++3m",
                ui: D,
                preset: r#"{"solver_order": 3, "algorithm_type": "dpmsolver++", "use_karras_sigmas": false}"#,
            },
            Name {
                name: "dpm++2m-sde",
                ui: ALL,
                preset: r#"{"solver_order": 2, "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": false}"#,
            },
            Name {
                name: "dpm++2m-sde-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: r#"{"solver_order": 2, "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": true}"#,
            },
            Name {
                name: "dpm++2m-sde-heun",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: r#"{"solver_order": 2, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun", "use_karras_sigmas": false}"#,
            },
            Name {
                name: "dpm++2m-sde-heun-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: r#"{"solver_order": 2, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun", "use_karras_sigmas": true}"#,
            },
        ],
    },
    Family {
        class: "EulerDiscreteScheduler",
        defaults: euler::euler_defaults,
        parse: euler::parse_euler,
        names: &[
            Name {
                name: "euler",
                ui: ALL,
                preset: "{}",
            },
            Name {
                name: "euler-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: KARRAS,
            },
        ],
    },
    Family {
        class: "EulerAncestralDiscreteScheduler",
        defaults: euler_ancestral::euler_ancestral_defaults,
        parse: euler_ancestral::parse_euler_ancestral,
        names: &[
            Name {
                name: "euler-a",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: "{}",
            },
            Name {
                name: "euler_ancestral",
                ui: COMFY,
                preset: "{}",
            },
        ],
    },
    Family {
        class: "HeunDiscreteScheduler",
        defaults: heun::heun_defaults,
        parse: heun::parse_heun,
        names: &[
            Name {
                name: "heun",
                ui: ALL,
                preset: "{}",
            },
            Name {
                name: "heun-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: KARRAS,
            },
        ],
    },
    Family {
        class: "LMSDiscreteScheduler",
        defaults: lms::lms_defaults,
        parse: lms::parse_lms,
        names: &[
            Name {
                name: "lms",
                ui: ALL,
                preset: "{}",
            },
            Name {
                name: "lms-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: KARRAS,
            },
        ],
    },
    Family {
        class: "KDPM2DiscreteScheduler",
        defaults: kdpm2::kdpm2_defaults,
        parse: kdpm2::parse_kdpm2,
        names: &[
            Name {
                name: "dpm2",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: "{}",
            },
            Name {
                name: "dpm2-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: KARRAS,
            },
            Name {
                name: "dpm_2",
                ui: COMFY,
                preset: "{}",
            },
        ],
    },
    Family {
        class: "KDPM2AncestralDiscreteScheduler",
        defaults: kdpm2::kdpm2_defaults,
        parse: kdpm2::parse_kdpm2_ancestral,
        names: &[
            Name {
                name: "dpm2-a",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: "{}",
            },
            Name {
                name: "dpm2-a-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: KARRAS,
            },
            Name {
                name: "dpm_2_ancestral",
                ui: COMFY,
                preset: "{}",
            },
        ],
    },
    Family {
        class: "UniPCMultistepScheduler",
        defaults: unipc::unipc_defaults,
        parse: unipc::parse_unipc,
        names: &[
            // A1111's UniPC runs bh1 at order 3 by default (its "UniPC variant" and "UniPC order"
            // options), as ComfyUI's uni_pc does; the difflab name keeps diffusers' defaults.
            Name {
                name: "unipc",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: "{}",
            },
            Name {
                name: "uni_pc",
                ui: COMFY,
                preset: r#"{"solver_type": "bh1", "solver_order": 3}"#,
            },
            Name {
                name: "uni_pc_bh2",
                ui: COMFY,
                preset: r#"{"solver_type": "bh2", "solver_order": 3}"#,
            },
        ],
    },
    Family {
        class: "DEISMultistepScheduler",
        defaults: deis::deis_defaults,
        parse: deis::parse_deis,
        names: &[Name {
            name: "deis",
            ui: &[Ui::Difflab, Ui::ComfyUi],
            preset: "{}",
        }],
    },
    Family {
        class: "PNDMScheduler",
        defaults: pndm::pndm_defaults,
        parse: pndm::parse_pndm,
        names: &[
            Name {
                name: "plms",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: r#"{"skip_prk_steps": true}"#,
            },
            Name {
                name: "pndm",
                ui: D,
                preset: "{}",
            },
        ],
    },
    Family {
        class: "DPMSolverSinglestepScheduler",
        defaults: dpm_singlestep::singlestep_defaults,
        parse: dpm_singlestep::parse_singlestep,
        names: &[
            Name {
                name: "dpm++2s",
                ui: D,
                preset: r#"{"solver_order": 2, "algorithm_type": "dpmsolver++", "use_karras_sigmas": false}"#,
            },
            Name {
                name: "dpm++2s-karras",
                ui: D,
                preset: r#"{"solver_order": 2, "algorithm_type": "dpmsolver++", "use_karras_sigmas": true}"#,
            },
            Name {
                name: "dpm++3s",
                ui: D,
                preset: r#"{"solver_order": 3, "algorithm_type": "dpmsolver++", "use_karras_sigmas": false}"#,
            },
            Name {
                name: "dpm++3s-karras",
                ui: D,
                preset: r#"{"solver_order": 3, "algorithm_type": "dpmsolver++", "use_karras_sigmas": true}"#,
            },
        ],
    },
    Family {
        class: "LCMScheduler",
        defaults: lcm::lcm_defaults,
        parse: lcm::parse_lcm,
        names: &[Name {
            name: "lcm",
            ui: ALL,
            preset: "{}",
        }],
    },
    Family {
        class: "EDMEulerScheduler",
        defaults: edm::edm_euler_defaults,
        parse: edm::parse_edm_euler,
        names: &[Name {
            name: "edm-euler",
            ui: D,
            preset: "{}",
        }],
    },
    Family {
        class: "EDMDPMSolverMultistepScheduler",
        defaults: edm::edm_dpm_defaults,
        parse: edm::parse_edm_dpm,
        names: &[Name {
            name: "edm-dpm++2m",
            ui: D,
            preset: r#"{"solver_order": 2, "algorithm_type": "dpmsolver++"}"#,
        }],
    },
    Family {
        class: "DPMSolverSDEScheduler",
        defaults: dpm_sde::dpm_sde_defaults,
        parse: dpm_sde::parse_dpm_sde,
        names: &[
            Name {
                name: "dpm++sde",
                ui: ALL,
                preset: "{}",
            },
            Name {
                name: "dpm++sde-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: KARRAS,
            },
        ],
    },
    Family {
        class: "FlowMatchEulerDiscreteScheduler",
        defaults: flow_euler::flow_euler_defaults,
        parse: flow_euler::parse_flow_euler,
        names: &[
            Name {
                name: "flow-euler",
                ui: D,
                preset: "{}",
            },
            Name {
                name: "flow-euler-karras",
                ui: D,
                preset: KARRAS,
            },
        ],
    },
    Family {
        class: "FlowMatchHeunDiscreteScheduler",
        defaults: flow_heun::flow_heun_defaults,
        parse: flow_heun::parse_flow_heun,
        names: &[Name {
            name: "flow-heun",
            ui: D,
            preset: "{}",
        }],
    },
    Family {
        class: score_sde_ve::CLASS,
        defaults: score_sde_ve::score_sde_ve_defaults,
        parse: score_sde_ve::parse_score_sde_ve,
        names: &[Name {
            name: "score_sde_ve",
            ui: D,
            preset: "{}",
        }],
    },
    Family {
        class: k_sampler::CLASS,
        defaults: k_sampler::k_sampler_defaults,
        parse: k_sampler::parse_k_sampler,
        names: &[
            Name {
                name: "dpm++2s-a",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: r#"{"sampler": "dpmpp_2s_ancestral"}"#,
            },
            Name {
                name: "dpm++2s-a-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: r#"{"sampler": "dpmpp_2s_ancestral", "use_karras_sigmas": true}"#,
            },
            Name {
                name: "dpmpp_2s_ancestral",
                ui: COMFY,
                preset: r#"{"sampler": "dpmpp_2s_ancestral"}"#,
            },
            Name {
                name: "dpm++3m-sde",
                ui: ALL,
                preset: r#"{"sampler": "dpmpp_3m_sde"}"#,
            },
            Name {
                name: "dpm++3m-sde-karras",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: r#"{"sampler": "dpmpp_3m_sde", "use_karras_sigmas": true}"#,
            },
            Name {
                name: "dpm++3m-sde-exponential",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: r#"{"sampler": "dpmpp_3m_sde", "use_exponential_sigmas": true}"#,
            },
            Name {
                name: "dpmpp_3m_sde_gpu",
                ui: COMFY,
                preset: r#"{"sampler": "dpmpp_3m_sde"}"#,
            },
            Name {
                name: "dpmpp_2m_sde_gpu",
                ui: COMFY,
                preset: r#"{"sampler": "dpmpp_2m_sde"}"#,
            },
            Name {
                name: "dpmpp_2m_sde_heun_gpu",
                ui: COMFY,
                preset: r#"{"sampler": "dpmpp_2m_sde", "solver_type": "heun"}"#,
            },
            Name {
                name: "dpm-fast",
                ui: ALL,
                preset: r#"{"sampler": "dpm_fast"}"#,
            },
            Name {
                name: "dpm-adaptive",
                ui: ALL,
                preset: r#"{"sampler": "dpm_adaptive"}"#,
            },
            Name {
                name: "restart",
                ui: &[Ui::Difflab, Ui::A1111],
                preset: r#"{"sampler": "restart"}"#,
            },
            Name {
                name: "ipndm",
                ui: DC,
                preset: r#"{"sampler": "ipndm"}"#,
            },
            Name {
                name: "ipndm_v",
                ui: DC,
                preset: r#"{"sampler": "ipndm_v"}"#,
            },
            Name {
                name: "res_multistep",
                ui: DC,
                preset: r#"{"sampler": "res_multistep"}"#,
            },
            Name {
                name: "res_multistep_ancestral",
                ui: DC,
                preset: r#"{"sampler": "res_multistep_ancestral"}"#,
            },
            Name {
                name: "res_multistep_cfg_pp",
                ui: DC,
                preset: r#"{"sampler": "res_multistep_cfg_pp"}"#,
            },
            Name {
                name: "res_multistep_ancestral_cfg_pp",
                ui: DC,
                preset: r#"{"sampler": "res_multistep_ancestral_cfg_pp"}"#,
            },
            Name {
                name: "er_sde",
                ui: DC,
                preset: r#"{"sampler": "er_sde"}"#,
            },
            Name {
                name: "seeds_2",
                ui: DC,
                preset: r#"{"sampler": "seeds_2"}"#,
            },
            Name {
                name: "seeds_3",
                ui: DC,
                preset: r#"{"sampler": "seeds_3"}"#,
            },
            Name {
                name: "sa_solver",
                ui: DC,
                preset: r#"{"sampler": "sa_solver"}"#,
            },
            Name {
                name: "sa_solver_pece",
                ui: DC,
                preset: r#"{"sampler": "sa_solver_pece"}"#,
            },
            Name {
                name: "gradient_estimation",
                ui: DC,
                preset: r#"{"sampler": "gradient_estimation"}"#,
            },
            Name {
                name: "gradient_estimation_cfg_pp",
                ui: DC,
                preset: r#"{"sampler": "gradient_estimation_cfg_pp"}"#,
            },
            Name {
                name: "heunpp2",
                ui: DC,
                preset: r#"{"sampler": "heunpp2"}"#,
            },
            Name {
                name: "euler_cfg_pp",
                ui: DC,
                preset: r#"{"sampler": "euler_cfg_pp"}"#,
            },
            Name {
                name: "euler_ancestral_cfg_pp",
                ui: DC,
                preset: r#"{"sampler": "euler_ancestral_cfg_pp"}"#,
            },
            Name {
                name: "dpmpp_2m_cfg_pp",
                ui: DC,
                preset: r#"{"sampler": "dpmpp_2m_cfg_pp"}"#,
            },
            Name {
                name: "dpmpp_2s_ancestral_cfg_pp",
                ui: DC,
                preset: r#"{"sampler": "dpmpp_2s_ancestral_cfg_pp"}"#,
            },
        ],
    },
];

/// Names users know for samplers difflab does not implement, and what to use instead.
pub struct NotImplemented {
    /// As typed in the web UIs (compared by [`normalize`]).
    pub names: &'static [&'static str],
    pub advice: &'static str,
}

pub const NOT_IMPLEMENTED: &[NotImplemented] = &[];

/// What to use instead of a known sampler name that difflab does not implement.
pub fn not_implemented(name: &str) -> Option<&'static str> {
    let norm = normalize(name);
    NOT_IMPLEMENTED
        .iter()
        .find(|n| n.names.iter().any(|m| normalize(m) == norm))
        .map(|n| n.advice)
}

/// The family of a diffusers class name.
pub fn family(class: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.class == class)
}

/// Every class name, in registry order.
pub fn class_names() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.class).collect()
}

/// Every name with its family.
pub fn names() -> impl Iterator<Item = (&'static Name, &'static Family)> {
    FAMILIES
        .iter()
        .flat_map(|f| f.names.iter().map(move |n| (n, f)))
}

/// A name as compared: case, spaces, `_` and `-` and the `dpmpp` spelling do not matter, so
/// "DPM++ 2M Karras", "dpmpp_2m_karras" and "dpm++2m-karras" are one name, as are "Euler a" and "euler-a".
pub fn normalize(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .replace("dpmpp", "dpm++")
        .replace([' ', '_'], "-")
        .replace("dpm++-", "dpm++")
}

/// The family and preset a typed name stands for.
pub fn lookup(name: &str) -> Option<(&'static Family, &'static str)> {
    let norm = normalize(name);
    names()
        .find(|(n, _)| normalize(n.name) == norm)
        .map(|(n, f)| (f, n.preset))
}

/// The settings every class has, with diffusers' defaults, plus the family's own.
pub fn defaults(family: &Family) -> Map<String, Value> {
    if is_flow_match(family.class) || family.class == score_sde_ve::CLASS {
        // No betas and no prediction type: these classes only know the velocity of a flow, or a VE score.
        let Value::Object(map) = (family.defaults)() else {
            unreachable!("a literal object")
        };
        return map;
    }
    let common = json!({
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "trained_betas": null,
        "prediction_type": "epsilon",
        "steps_offset": 0,
    });
    let (Value::Object(mut map), Value::Object(extra)) = (common, (family.defaults)()) else {
        unreachable!("literal objects")
    };
    map.extend(extra);
    map
}

/// diffusers' flow-matching classes (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler).
pub fn is_flow_match(class: &str) -> bool {
    class.starts_with("FlowMatch")
}

/// The README's table of names: each name, where users know it from, and the class and settings it
/// stands for (README.md carries exactly this text; a test checks it).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| name | known in | diffusers class | settings | on a flow model | on a VE model |\n|---|---|---|---|---|---|\n",
    );
    for (n, f) in names() {
        let ui: Vec<&str> =
            n.ui.iter()
                .map(|u| match u {
                    Ui::Difflab => "difflab",
                    Ui::A1111 => "A1111",
                    Ui::ComfyUi => "ComfyUI",
                })
                .collect();
        let preset = n.preset.trim_matches(|c| c == '{' || c == '}').trim();
        let preset = if preset.is_empty() {
            "defaults".to_string()
        } else {
            format!("`{preset}`")
        };
        let flow = match super::flow_names::flow_class_of(n.name) {
            Some(c) if c == f.class => "as is",
            Some("FlowMatchEulerDiscreteScheduler") => "flow Euler",
            Some("FlowMatchHeunDiscreteScheduler") => "flow Heun",
            Some(_) => "flow sigmas",
            None => "—",
        };
        let ve = match f.class {
            score_sde_ve::CLASS => "as is",
            class if super::ve_form::runs_on_ve(class) => "VE σ",
            _ => "—",
        };
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {preset} | {flow} | {ve} |\n",
            n.name,
            ui.join(", "),
            f.class
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_presets_parse() {
        let mut seen = std::collections::BTreeSet::new();
        for (n, f) in names() {
            assert!(seen.insert(normalize(n.name)), "{} twice", n.name);
            let preset: Value = serde_json::from_str(n.preset).unwrap_or(Value::Null);
            let preset = preset
                .as_object()
                .unwrap_or_else(|| panic!("{} preset", n.name));
            let known = defaults(f);
            for k in preset.keys() {
                assert!(
                    known.contains_key(k),
                    "{}: {k} is not a {} key",
                    n.name,
                    f.class
                );
            }
        }
    }

    #[test]
    fn readme_table_is_the_registry() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README.md's sampler table differs from the registry; replace it with:\n{}",
            markdown_table()
        );
    }

    #[test]
    fn names_not_implemented_are_not_names_of_a_sampler() {
        for n in NOT_IMPLEMENTED {
            for name in n.names {
                assert!(lookup(name).is_none(), "{name} is implemented");
                assert_eq!(not_implemented(name), Some(n.advice));
            }
        }
        assert_eq!(not_implemented("dpm++2s"), None);
    }

    #[test]
    fn ui_spellings_find_their_class() {
        for (typed, class) in [
            ("Euler a", "EulerAncestralDiscreteScheduler"),
            ("euler_ancestral", "EulerAncestralDiscreteScheduler"),
            ("LMS Karras", "LMSDiscreteScheduler"),
            ("dpmpp_2m", "DPMSolverMultistepScheduler"),
            ("DPM++ 2M Karras", "DPMSolverMultistepScheduler"),
            ("DDIM", "DDIMScheduler"),
            ("Heun", "HeunDiscreteScheduler"),
            ("DPM2 a", "KDPM2AncestralDiscreteScheduler"),
            ("DPM2 Karras", "KDPM2DiscreteScheduler"),
            ("dpm_2", "KDPM2DiscreteScheduler"),
            ("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler"),
            ("DPM++ 2M SDE Heun Karras", "DPMSolverMultistepScheduler"),
            ("DPM++ 2S Karras", "DPMSolverSinglestepScheduler"),
            ("dpm++3s", "DPMSolverSinglestepScheduler"),
            ("LCM", "LCMScheduler"),
            ("lcm", "LCMScheduler"),
            ("DPM++ SDE", "DPMSolverSDEScheduler"),
            ("DPM++ SDE Karras", "DPMSolverSDEScheduler"),
            ("dpmpp_sde", "DPMSolverSDEScheduler"),
            ("EDM Euler", "EDMEulerScheduler"),
            ("edm_dpmpp_2m", "EDMDPMSolverMultistepScheduler"),
            ("UniPC", "UniPCMultistepScheduler"),
            ("uni_pc", "UniPCMultistepScheduler"),
            ("uni_pc_bh2", "UniPCMultistepScheduler"),
            ("deis", "DEISMultistepScheduler"),
            ("PLMS", "PNDMScheduler"),
            ("pndm", "PNDMScheduler"),
        ] {
            assert_eq!(lookup(typed).map(|(f, _)| f.class), Some(class), "{typed}");
        }
    }
}
