//! Noise schedules: betas and the cumulative product of alphas (`alphas_cumprod`, written ᾱ).
//!
//! diffusers keeps these tables in float32 (torch), and every scheduler reads its coefficients from
//! them; they are built here the same way, value for value, so the f64 coefficient arithmetic starts
//! from exactly the numbers diffusers uses.

use serde::{Deserialize, Serialize};

/// diffusers' `beta_schedule`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredcosCapV2,
    Sigmoid,
}

impl BetaSchedule {
    /// Every name, as diffusers' configs spell them.
    pub const NAMES: &'static [&'static str] = <Self as strum::VariantNames>::VARIANTS;

    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}

/// The training noise schedule, as diffusers' config keys describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Overrides `beta_schedule` when present.
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: bool,
    /// A variance-exploding model's σ range (diffusers' ScoreSdeVeScheduler): the table is then
    /// `num_train_timesteps` sigmas spaced evenly in log σ, with ᾱ = 1 / (1 + σ²) (x_VE = x / √ᾱ), and the
    /// betas are unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ve_sigmas: Option<VeSigmas>,
}

/// The σ range of a variance-exploding model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VeSigmas {
    pub sigma_min: f64,
    pub sigma_max: f64,
}

impl VeSigmas {
    /// `n` sigmas from `sigma_min` to `sigma_max`, even in log σ, as diffusers' `discrete_sigmas` (float32
    /// `exp(linspace(log σ_min, log σ_max, n))`).
    pub fn table(self, n: usize) -> Vec<f32> {
        let (lo, hi) = (self.sigma_min.ln() as f32, self.sigma_max.ln() as f32);
        torch_linspace_f32(lo, hi, n)
            .into_iter()
            .map(f32::exp)
            .collect()
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            rescale_betas_zero_snr: false,
            ve_sigmas: None,
        }
    }
}

/// `alphas_cumprod` for every training timestep, as float32 like diffusers.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f32>,
    /// A variance-exploding table's sigmas, kept exact: ᾱ near 1 in f32 would lose the small ones.
    ve_sigmas: Option<Vec<f32>>,
}

impl NoiseSchedule {
    /// Builds the table. The config must already be validated (non-empty, betas in (0, 1)).
    pub fn new(config: &ScheduleConfig) -> Self {
        let n = config.num_train_timesteps;
        if let Some(ve) = config.ve_sigmas {
            let sigmas = ve.table(n);
            return Self {
                alphas_cumprod: sigmas.iter().map(|&s| 1.0 / (1.0 + s * s)).collect(),
                ve_sigmas: Some(sigmas),
            };
        }
        let mut betas: Vec<f32> = match (&config.trained_betas, config.beta_schedule) {
            (Some(trained), _) => trained.iter().map(|&b| b as f32).collect(),
            (None, BetaSchedule::Linear) => {
                torch_linspace_f32(config.beta_start as f32, config.beta_end as f32, n)
            }
            (None, BetaSchedule::ScaledLinear) => torch_linspace_f32(
                config.beta_start.sqrt() as f32,
                config.beta_end.sqrt() as f32,
                n,
            )
            .into_iter()
            .map(|b| b * b)
            .collect(),
            (None, BetaSchedule::SquaredcosCapV2) => cosine_betas(n),
            (None, BetaSchedule::Sigmoid) => torch_linspace_f32(-6.0, 6.0, n)
                .into_iter()
                .map(|x| {
                    let s = 1.0 / (1.0 + (-x).exp());
                    s * (config.beta_end - config.beta_start) as f32 + config.beta_start as f32
                })
                .collect(),
        };
        if config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        Self {
            alphas_cumprod: cumprod(betas.iter().map(|&b| 1.0 - b)),
            ve_sigmas: None,
        }
    }

    /// Builds a schedule from an explicit table (for tests and for models that ship one).
    pub fn from_alphas_cumprod(alphas_cumprod: Vec<f32>) -> Self {
        Self {
            alphas_cumprod,
            ve_sigmas: None,
        }
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// ᾱ at an integer training timestep, widened to f64.
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alphas_cumprod[t] as f64
    }

    /// ᾱ at a possibly fractional timestep: exact at training steps; between them log σ is linear in t,
    /// the inverse of the sigma-space samplers' σ → t map (diffusers' `_sigma_to_t`, with its f32 log
    /// table), so a model sees the σ the sampler meant. Where σ is 0 or infinite (ᾱ of 1 or 0),
    /// ᾱ itself is interpolated.
    pub fn alpha_bar_at(&self, t: f64) -> f64 {
        let last = self.alphas_cumprod.len() - 1;
        let t = t.clamp(0.0, last as f64);
        let lo = t.floor() as usize;
        let w = t - lo as f64;
        if let Some(sigmas) = &self.ve_sigmas
            && w == 0.0
        {
            return 1.0 / (1.0 + (sigmas[lo] as f64).powi(2));
        }
        if w == 0.0 {
            return self.alpha_bar(lo);
        }
        let hi = (lo + 1).min(last);
        let log_sigma = |k: usize| (self.train_sigma(k) as f64).ln() as f32 as f64;
        let (l0, l1) = (log_sigma(lo), log_sigma(hi));
        if !(l0.is_finite() && l1.is_finite()) {
            return self.alpha_bar(lo) * (1.0 - w) + self.alpha_bar(hi) * w;
        }
        let sigma = ((1.0 - w) * l0 + w * l1).exp();
        1.0 / (1.0 + sigma * sigma)
    }

    /// The training sigmas `sqrt((1 - ᾱ) / ᾱ)` in float32, as DPM-Solver computes them.
    pub fn train_sigmas(&self) -> Vec<f32> {
        (0..self.alphas_cumprod.len())
            .map(|k| self.train_sigma(k))
            .collect()
    }

    fn train_sigma(&self, k: usize) -> f32 {
        match &self.ve_sigmas {
            Some(sigmas) => sigmas[k],
            None => {
                let a = self.alphas_cumprod[k];
                ((1.0 - a) / a).sqrt()
            }
        }
    }
}

/// `torch.linspace(start, end, steps, dtype=float32)` on CPU: float32 fused multiply-adds from both
/// ends towards the middle (this reproduces torch's tables bit for bit).
pub(crate) fn torch_linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// `betas_for_alpha_bar` with the cosine transform (Nichol & Dhariwal), in f64 then stored as f32.
fn cosine_betas(n: usize) -> Vec<f32> {
    let f = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - f(t2) / f(t1)).min(0.999) as f32
        })
        .collect()
}

/// `torch.cumprod` on CPU accumulates float32 inputs in double and rounds each output to float32.
fn cumprod(alphas: impl Iterator<Item = f32>) -> Vec<f32> {
    let mut acc = 1.0f64;
    alphas
        .map(|a| {
            acc *= a as f64;
            acc as f32
        })
        .collect()
}

/// Lin et al. 2023, Algorithm 1: shift and scale sqrt(ᾱ) so the last timestep has zero SNR.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let cumprod = cumprod(betas.iter().map(|&b| 1.0 - b));
    let mut sqrt: Vec<f32> = cumprod.iter().map(|a| a.sqrt()).collect();
    let first = sqrt[0];
    let last = sqrt[sqrt.len() - 1];
    let scale = first / (first - last);
    for s in &mut sqrt {
        *s -= last;
        *s *= scale;
    }
    let bar: Vec<f32> = sqrt.iter().map(|s| s * s).collect();
    let mut alphas = Vec::with_capacity(bar.len());
    alphas.push(bar[0]);
    alphas.extend(bar.windows(2).map(|w| w[1] / w[0]));
    alphas.into_iter().map(|a| 1.0 - a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::sigmas::{log_sigmas_f32, sigma_to_t};

    #[test]
    fn fractional_timesteps_invert_sigma_to_t() {
        let s = NoiseSchedule::new(&ScheduleConfig::default());
        let logs = log_sigmas_f32(&s.train_sigmas());
        assert_eq!(s.alpha_bar_at(500.0), s.alpha_bar(500));
        for sigma in [0.05, 0.7, 3.0, 60.0] {
            let t = sigma_to_t(sigma, &logs);
            assert!(t.fract() != 0.0, "{t}");
            let a = s.alpha_bar_at(t);
            let back = ((1.0 - a) / a).sqrt();
            assert!((back / sigma - 1.0).abs() < 1e-9, "{sigma}: {back}");
        }
    }
}

#[cfg(test)]
mod name_tests {
    use crate::sampler::PredictionType;
    use crate::sampler::settings::DdpmVariance;
    use crate::sampler::spacing::TimestepSpacing;

    use super::BetaSchedule;

    /// The names are diffusers' config values, which users' files hold: derived from the variants, they
    /// must stay exactly these.
    #[test]
    fn config_names_are_diffusers_spellings_and_round_trip() {
        assert_eq!(
            BetaSchedule::NAMES,
            ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]
        );
        // "score" is difflab's (`[model] prediction_type`): diffusers names a VE model by its scheduler class.
        assert_eq!(
            PredictionType::NAMES,
            [
                "epsilon",
                "v_prediction",
                "sample",
                "flow_prediction",
                "score"
            ]
        );
        assert_eq!(TimestepSpacing::NAMES, ["leading", "trailing", "linspace"]);
        assert_eq!(
            DdpmVariance::NAMES,
            [
                "fixed_small",
                "fixed_small_log",
                "fixed_large",
                "fixed_large_log"
            ]
        );
        for name in BetaSchedule::NAMES {
            let b = BetaSchedule::from_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(b.name(), *name);
            assert_eq!(serde_json::to_value(b).ok(), Some(serde_json::json!(name)));
        }
        for name in PredictionType::NAMES {
            let p = PredictionType::from_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(p.to_string(), *name);
            assert_eq!(serde_json::to_value(p).ok(), Some(serde_json::json!(name)));
        }
        for name in TimestepSpacing::NAMES {
            let t = TimestepSpacing::from_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(serde_json::to_value(t).ok(), Some(serde_json::json!(name)));
        }
        for name in DdpmVariance::NAMES {
            assert!(DdpmVariance::from_name(name).is_some(), "{name}");
        }
        assert_eq!(PredictionType::from_name("Epsilon"), None);
    }
}
