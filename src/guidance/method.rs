//! The guidance methods an experiment names (`[[sampler]] guidance_method`, its `guidance_settings` and
//! `guidance_interval`): which [`Guide`] makes a lane's guided prediction, with what parameters, and in which
//! space it works. ComfyUI's nodes guide the denoised prediction (x0); diffusers' guiders the model's output.

use serde_json::{Map, Value};

use super::{
    ApgComfy, ApgDiffusers, Cfg, CfgNorm, CfgZeroStarComfy, CfgZeroStarDiffusers, Guide, Interval,
    PerpNeg, RescaleCfg, Window,
};

/// A method by its experiment name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "kebab-case")]
pub enum MethodName {
    /// Classifier-free guidance, `uncond + g·(cond − uncond)`.
    Cfg,
    /// ComfyUI's APG node (adaptive projected guidance on x0: `cond + g·g∥⊥`).
    Apg,
    /// diffusers' AdaptiveProjectedGuidance (on the model output: `uncond + g·g∥⊥`).
    ApgDiffusers,
    /// ComfyUI's CFGZeroStar node.
    CfgZeroStar,
    /// diffusers' ClassifierFreeZeroStarGuidance (zeros for the first `zero_init_steps`).
    CfgZeroStarDiffusers,
    /// ComfyUI's CFGNorm node.
    CfgNorm,
    /// ComfyUI's RescaleCFG node.
    RescaleCfg,
    /// ComfyUI's PerpNegGuider: the negative prompt's direction, less its part along the positive one, with
    /// the empty prompt's prediction as the base (a third model call a step).
    PerpNeg,
}

impl MethodName {
    pub const NAMES: &'static [&'static str] = <Self as strum::VariantNames>::VARIANTS;

    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The parameters and their defaults (the nodes' and guiders' own).
    fn defaults(self) -> &'static str {
        match self {
            Self::Cfg => "{}",
            Self::Apg => r#"{"eta": 1.0, "norm_threshold": 5.0, "momentum": 0.0}"#,
            Self::ApgDiffusers => r#"{"eta": 1.0, "norm_threshold": 15.0, "momentum": 0.0}"#,
            Self::CfgZeroStar => "{}",
            Self::CfgZeroStarDiffusers => r#"{"zero_init_steps": 1}"#,
            Self::CfgNorm => r#"{"strength": 1.0}"#,
            Self::RescaleCfg => r#"{"multiplier": 0.7}"#,
            Self::PerpNeg => r#"{"neg_scale": 1.0}"#,
        }
    }

    /// Whether the method has the parameter `key`.
    pub fn has_setting(self, key: &str) -> bool {
        serde_json::from_str::<Value>(self.defaults()).is_ok_and(|d| d.get(key).is_some())
    }

    /// Whether the method needs the empty prompt's prediction beside the conditional and unconditional ones.
    pub fn needs_empty(self) -> bool {
        self == Self::PerpNeg
    }

    /// Whether the method guides the denoised prediction (ComfyUI's nodes) rather than the model's output.
    pub fn on_denoised(self) -> bool {
        !matches!(
            self,
            Self::Cfg | Self::ApgDiffusers | Self::CfgZeroStarDiffusers
        )
    }
}

/// A method with its parameters and window, as an experiment gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuidanceMethod {
    pub name: MethodName,
    /// Every parameter, defaults filled in.
    pub params: Map<String, Value>,
    pub window: Option<Window>,
}

impl Default for GuidanceMethod {
    fn default() -> Self {
        Self {
            name: MethodName::Cfg,
            params: Map::new(),
            window: None,
        }
    }
}

impl GuidanceMethod {
    /// `name` with `given` parameters over its defaults; an unknown parameter or a non-number is refused with
    /// the parameters it has.
    pub fn new(
        name: MethodName,
        given: &Map<String, Value>,
        window: Option<Window>,
    ) -> Result<Self, String> {
        let Ok(Value::Object(mut params)) = serde_json::from_str::<Value>(name.defaults()) else {
            unreachable!("defaults are a JSON object")
        };
        for (key, value) in given {
            if !params.contains_key(key) {
                let known: Vec<&str> = params.keys().map(String::as_str).collect();
                return Err(match known.is_empty() {
                    true => format!("{} takes no settings, not {key:?}", name.name()),
                    false => format!(
                        "{} has no setting {key:?}; it has {}",
                        name.name(),
                        known.join(", ")
                    ),
                });
            }
            if !value.as_f64().is_some_and(f64::is_finite) {
                return Err(format!(
                    "{} setting {key} must be a number, not {value}",
                    name.name()
                ));
            }
            params.insert(key.clone(), value.clone());
        }
        Ok(Self {
            name,
            params,
            window,
        })
    }

    /// Plain CFG everywhere: the lab's own guidance does it without the f64 round trip.
    pub fn is_plain(&self) -> bool {
        self.name == MethodName::Cfg && self.window.is_none()
    }

    fn num(&self, key: &str) -> f64 {
        self.params.get(key).and_then(Value::as_f64).unwrap_or(0.0)
    }

    /// A fresh guide (new state) for one sampling run.
    pub fn build(&self) -> Box<dyn Guide + Send> {
        let n = |k: &str| self.num(k);
        let inner: Box<dyn Guide + Send> = match self.name {
            MethodName::Cfg => Box::new(Cfg {
                original_formulation: false,
                rescale: 0.0,
            }),
            MethodName::Apg => {
                Box::new(ApgComfy::new(n("eta"), n("norm_threshold"), n("momentum")))
            }
            MethodName::ApgDiffusers => Box::new(ApgDiffusers::new(
                n("eta"),
                n("norm_threshold"),
                n("momentum"),
            )),
            MethodName::CfgZeroStar => Box::new(CfgZeroStarComfy),
            MethodName::CfgZeroStarDiffusers => Box::new(CfgZeroStarDiffusers {
                zero_init_steps: n("zero_init_steps").max(0.0) as usize,
            }),
            MethodName::CfgNorm => Box::new(CfgNorm {
                strength: n("strength"),
            }),
            MethodName::RescaleCfg => Box::new(RescaleCfg {
                multiplier: n("multiplier"),
            }),
            MethodName::PerpNeg => Box::new(PerpNeg {
                neg_scale: n("neg_scale"),
                per_item: true,
            }),
        };
        match self.window {
            Some(window) => Box::new(Interval { window, inner }),
            None => inner,
        }
    }

    /// How a cell names it: the method, its parameters that differ from the defaults, and its window.
    pub fn label(&self) -> String {
        let mut out = self.name.name().to_string();
        if let Ok(Value::Object(defaults)) = serde_json::from_str::<Value>(self.name.defaults()) {
            for (k, v) in &self.params {
                if defaults.get(k) != Some(v) {
                    out.push_str(&format!(" {k}={v}"));
                }
            }
        }
        match self.window {
            Some(Window::Sigma { lo, hi }) => out.push_str(&format!(" σ∈[{lo},{hi}]")),
            Some(Window::Steps { start, stop }) => out.push_str(&format!(" steps {start}–{stop}")),
            None => {}
        }
        out
    }
}
