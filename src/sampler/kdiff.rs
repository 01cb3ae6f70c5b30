//! The schedule the k-diffusion style samplers of diffusers share (Euler, Euler a, Heun, LMS, KDPM2):
//! spaced fractional timesteps, the training sigmas interpolated there (optionally replaced by a
//! Karras or exponential ramp), and the sigma-space helpers of their steps. f32 where diffusers is f32.

use serde_json::Value;

use super::family::{Common, Reader};
use super::schedule::{NoiseSchedule, ScheduleConfig};
use super::sigma_schedule::SigmaSchedule;
use super::sigmas::{SigmaRamp, interp, log_sigmas_f32, sigma_to_t, web_ui_sigmas};
use super::spacing::{TimestepSpacing, arange, linspace};
use super::step_checks::check_step_count;
use super::{ConfigError, NoiseSource, PredictionType};

/// The settings every k-diffusion style class reads.
#[derive(Debug, Clone, PartialEq)]
pub struct KConfig {
    pub schedule: ScheduleConfig,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub ramp: SigmaRamp,
    /// A web-UI schedule (`sigma_schedule`, ComfyUI's names) in place of the interpolated sigmas.
    pub sigma_schedule: Option<SigmaSchedule>,
    /// The user's own sigmas (`sigmas`, as ComfyUI's custom SIGMAS input), one per step.
    pub sigmas: Option<Vec<f64>>,
}

/// One run's schedule before the final sigma is appended.
pub struct KSchedule {
    /// `steps` sigmas, f64 (each class casts them to f32).
    pub sigmas: Vec<f64>,
    /// `steps` fractional timesteps, f64 (each class decides the dtype diffusers gives them).
    pub timesteps: Vec<f64>,
    /// The training sigmas `sqrt((1 - ᾱ)/ᾱ)` in f32.
    pub train_sigmas: Vec<f32>,
    /// f32 `log` of `train_sigmas` (sigma → t).
    pub log_sigmas: Vec<f64>,
}

impl KConfig {
    /// The schedule for `steps` steps. `nudge_zero_snr`: Euler's and Euler a's zero-SNR tables set
    /// ᾱ_T = 2^-24 so sigma_max is finite.
    /// `log_linear`: Euler's `interpolation_type = "log_linear"` (n + 1 sigmas uniform in log sigma over
    /// the whole training range).
    pub fn schedule(
        &self,
        steps: usize,
        nudge_zero_snr: bool,
        log_linear: bool,
    ) -> Result<KSchedule, ConfigError> {
        self.schedule_with(steps, nudge_zero_snr, log_linear, true)
    }

    /// As [`Self::schedule`]; `f32_timesteps` false keeps the spaced timesteps in f64 before the sigmas
    /// are interpolated there (DPMSolverSDE keeps them in an f64 array).
    pub fn schedule_with(
        &self,
        steps: usize,
        nudge_zero_snr: bool,
        log_linear: bool,
        f32_timesteps: bool,
    ) -> Result<KSchedule, ConfigError> {
        let mut alphas_cumprod = NoiseSchedule::new(&self.schedule).alphas_cumprod().to_vec();
        let n_train = alphas_cumprod.len();
        check_step_count(steps, n_train)?;
        if nudge_zero_snr
            && self.schedule.rescale_betas_zero_snr
            && let Some(last) = alphas_cumprod.last_mut()
        {
            *last = 2f32.powi(-24);
        }
        let train_sigmas = NoiseSchedule::from_alphas_cumprod(alphas_cumprod).train_sigmas();
        let log_sigmas = log_sigmas_f32(&train_sigmas);
        let timesteps: Vec<f64> = spaced_timesteps(self, n_train, steps)
            .into_iter()
            .map(|t| if f32_timesteps { f32_round(t) } else { t })
            .collect();
        let sigmas: Vec<f64> = if log_linear {
            let (lo, hi) = (log_sigmas[n_train - 1], log_sigmas[0]);
            linspace(lo, hi, steps + 1)
                .into_iter()
                .map(f64::exp)
                .collect()
        } else {
            timesteps
                .iter()
                .map(|&t| interp(t, &train_sigmas))
                .collect()
        };
        let mut s = KSchedule {
            sigmas,
            timesteps,
            train_sigmas,
            log_sigmas,
        };
        let (smin, smax) = (s.sigmas[s.sigmas.len() - 1], s.sigmas[0]);
        if let Some(ramp) = self.ramp.ramp(smin, smax, steps) {
            s.timesteps = ramp.iter().map(|&x| sigma_to_t(x, &s.log_sigmas)).collect();
            s.sigmas = ramp;
        }
        let replaced = match (&self.sigmas, self.sigma_schedule) {
            (Some(list), _) => Some(custom_sigmas(list, steps)?),
            (None, Some(schedule)) => Some(web_ui_sigmas(schedule, steps, &s.train_sigmas)?),
            (None, None) => None,
        };
        if let Some(sigmas) = replaced {
            s.timesteps = sigmas
                .iter()
                .map(|&x| sigma_to_t(x, &s.log_sigmas))
                .collect();
            s.sigmas = sigmas;
        }
        Ok(s)
    }
}

/// The user's sigmas for `steps` steps: one per step, a final 0 allowed (the class appends its own).
fn custom_sigmas(list: &[f64], steps: usize) -> Result<Vec<f64>, ConfigError> {
    let body = match list.last() {
        Some(0.0) => &list[..list.len() - 1],
        _ => list,
    };
    if body.len() != steps {
        return Err(ConfigError::InvalidValue {
            key: "sigmas".into(),
            got: format!("{} sigmas", body.len()),
            expected: format!("{steps}, one per step (and a final 0 if you like), as `steps` says"),
        });
    }
    Ok(body.to_vec())
}

/// The k-diffusion family's spacing: `steps` descending timesteps (fractional for linspace).
fn spaced_timesteps(c: &KConfig, n_train: usize, steps: usize) -> Vec<f64> {
    match c.timestep_spacing {
        TimestepSpacing::Linspace => linspace(0.0, (n_train - 1) as f64, steps)
            .into_iter()
            .rev()
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = (n_train / steps) as f64;
            (0..steps)
                .rev()
                .map(|i| (i as f64 * ratio).round_ties_even() + c.steps_offset as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let n = n_train as f64;
            arange(n, 0.0, -n / steps as f64)
                .into_iter()
                .map(|t| t.round_ties_even() - 1.0)
                .collect()
        }
    }
}

/// A value stored in an f32 tensor, widened back.
pub fn f32_round(v: f64) -> f64 {
    v as f32 as f64
}

/// diffusers' `init_noise_sigma` of the family: sigma_max, or sqrt(sigma_max² + 1) for leading spacing.
pub fn init_noise_sigma(sigmas: &[f32], spacing: TimestepSpacing) -> f32 {
    let max = sigmas.iter().copied().fold(0.0f32, f32::max);
    match spacing {
        TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        _ => max,
    }
}

/// `scale_model_input`'s divisor at sigma `s`: sqrt(s² + 1) in f32.
pub fn input_divisor(s: f32) -> f32 {
    (s * s + 1.0).sqrt()
}

/// The denoised prediction (x0) from a model output at sigma `s`, as the k-diffusion classes form it.
pub fn denoised(prediction: PredictionType, out: f64, x: f64, s: f64) -> f64 {
    match prediction {
        PredictionType::Epsilon => x - s * out,
        PredictionType::VPrediction => out * (-s / (s * s + 1.0).sqrt()) + x / (s * s + 1.0),
        PredictionType::Sample => out,
        // Refused for these classes when their settings are read; the flow form at s, for completeness.
        PredictionType::FlowPrediction => x - s * out,
        // A VE model's sample is x itself: Tweedie's formula.
        PredictionType::Score => x + s * s * out,
    }
}

/// An error for a prediction type a class does not implement (diffusers raises there too).
pub fn unsupported_prediction(class: &str, prediction: PredictionType) -> ConfigError {
    ConfigError::Unsupported {
        key: "prediction_type".into(),
        got: format!("{:?}", prediction.to_string()),
        reason: format!("{class} implements \"epsilon\" and \"v_prediction\""),
    }
}

// Settings: the class's defaults and parser.

/// The family's settings, with `sigma_schedule` (difflab's key: a web-UI schedule by ComfyUI's name), which
/// replaces a diffusers ramp rather than combining with one.
pub(super) fn k_config(c: Common, ramp: SigmaRamp, r: &mut Reader) -> Result<KConfig, ConfigError> {
    let sigma_schedule = match r.value("sigma_schedule") {
        Value::Null => None,
        Value::String(name) => Some(SigmaSchedule::from_name(name).ok_or_else(|| {
            r.invalid(
                "sigma_schedule",
                &format!("one of {}", SigmaSchedule::NAMES.join(", ")),
            )
        })?),
        _ => return Err(r.invalid("sigma_schedule", "a schedule's name, e.g. \"kl_optimal\"")),
    };
    let sigmas = read_sigmas(r)?;
    if sigmas.is_some() && sigma_schedule.is_some() {
        return Err(ConfigError::InvalidValue {
            key: "sigmas".into(),
            got: "a list".into(),
            expected: "null when sigma_schedule is set: the list is the schedule".into(),
        });
    }
    if (sigma_schedule.is_some() || sigmas.is_some()) && ramp != SigmaRamp::Interpolated {
        let (key, got) = match sigma_schedule {
            Some(schedule) => ("sigma_schedule", format!("{:?}", schedule.name())),
            None => ("sigmas", "a list".to_string()),
        };
        return Err(ConfigError::InvalidValue {
            key: key.into(),
            got,
            expected:
                "null when use_karras_sigmas, use_exponential_sigmas or use_beta_sigmas is true"
                    .into(),
        });
    }
    Ok(KConfig {
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
        ramp,
        sigma_schedule,
        sigmas,
    })
}

/// `sigmas`: null, or positive finite sigmas that never rise, a final 0 allowed.
pub(super) fn read_sigmas(r: &Reader) -> Result<Option<Vec<f64>>, ConfigError> {
    let expected = "null or a list of sigmas from high to low, each positive (a final 0 allowed)";
    let items = match r.value("sigmas") {
        Value::Null => return Ok(None),
        Value::Array(items) if !items.is_empty() => items,
        _ => return Err(r.invalid("sigmas", expected)),
    };
    let list: Option<Vec<f64>> = items.iter().map(Value::as_f64).collect();
    let list = list.ok_or_else(|| r.invalid("sigmas", expected))?;
    let last = list.len() - 1;
    let valid = list
        .iter()
        .enumerate()
        .all(|(i, &s)| s.is_finite() && (s > 0.0 || (i == last && s == 0.0)))
        && list.windows(2).all(|w| w[1] <= w[0]);
    match valid {
        true => Ok(Some(list)),
        false => Err(r.invalid("sigmas", expected)),
    }
}

/// A number setting that may be the string "inf".
pub(super) fn number_or_inf(r: &mut Reader, key: &str) -> Result<f64, ConfigError> {
    match r.value(key) {
        Value::String(s) if s == "inf" => Ok(f64::INFINITY),
        _ => r.non_negative(key),
    }
}

/// diffusers' step keywords `s_churn`, `s_tmin`, `s_tmax`, `s_noise`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    pub s_churn: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
    pub s_noise: f64,
}

impl Churn {
    /// diffusers' churn factor at sigma `s` for a run of `steps` steps (0 outside [s_tmin, s_tmax]).
    pub fn gamma(&self, s: f64, steps: usize) -> f64 {
        if self.s_tmin <= s && s <= self.s_tmax {
            (self.s_churn / steps as f64).min(2f64.sqrt() - 1.0)
        } else {
            0.0
        }
    }

    /// Raises `sample` from sigma `s` to `sigma_hat = s·(gamma + 1)` with fresh noise of step `step` (none
    /// when gamma is 0), and returns sigma_hat. `buf` holds the noise between calls.
    pub fn add_noise(
        &self,
        step: usize,
        s: f32,
        gamma: f64,
        sample: &mut [f32],
        buf: &mut Vec<f32>,
        noise: &mut dyn NoiseSource,
    ) -> f32 {
        let sigma_hat = (s as f64 * (gamma + 1.0)) as f32;
        if gamma > 0.0 {
            buf.resize(sample.len(), 0.0);
            noise.fill(step, buf);
            let eps = (sigma_hat * sigma_hat - s * s).sqrt() as f64 * self.s_noise;
            for (x, &z) in sample.iter_mut().zip(buf.iter()) {
                *x = (*x as f64 + z as f64 * eps) as f32;
            }
        }
        sigma_hat
    }
}
