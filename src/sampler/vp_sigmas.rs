//! The schedule UniPC and DEIS share (diffusers' VP multistep family): integer timesteps with the
//! DPM-Solver spacing, the f32 training sigmas at them (or a Karras / exponential / beta ramp between
//! the training extremes), and the final sigma each class appends.

use super::family::{Common, Reader, read_ramp_or_schedule, read_sigma_list};
use super::flow_shift::{FlowSigmas, truncated_timesteps};
use super::prediction::X0Clip;
use super::schedule::{NoiseSchedule, ScheduleConfig};
use super::sigmas::{SigmaRamp, log_sigmas_f32, nearest_timestep, ramp_or_list, sigma_to_t};
use super::spacing::{TimestepSpacing, dpm_timesteps};
use super::step_checks::{check_step_count, check_timesteps};
use super::{ConfigError, PredictionType};

pub use super::settings::FinalSigma;
use serde_json::{Value, json};

/// The settings the schedule reads.
#[derive(Debug, Clone, PartialEq)]
pub struct VpSchedule {
    pub schedule: ScheduleConfig,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub ramp: SigmaRamp,
    /// `sigmas`: the user's own, one per step.
    pub sigmas: Option<Vec<f64>>,
    /// Zero-SNR tables set ᾱ_T = 2^-24 so sigma_max is finite (UniPC does, DEIS has no such key).
    pub nudge_zero_snr: bool,
    /// `use_flow_sigmas`: a flow-matching model's sigmas instead of the training schedule's.
    pub flow: Option<FlowSigmas>,
}

/// One run: `steps` timesteps and `steps + 1` f32 sigmas.
pub struct VpSteps {
    pub timesteps: Vec<i64>,
    pub sigmas: Vec<f32>,
}

impl VpSchedule {
    pub fn steps(&self, steps: usize, last: FinalSigma) -> Result<VpSteps, ConfigError> {
        let mut alphas_cumprod = NoiseSchedule::new(&self.schedule).alphas_cumprod().to_vec();
        let n = alphas_cumprod.len();
        check_step_count(steps, n)?;
        if self.nudge_zero_snr
            && self.schedule.rescale_betas_zero_snr
            && let Some(last) = alphas_cumprod.last_mut()
        {
            *last = 2f32.powi(-24);
        }
        if let Some(flow) = &self.flow {
            return Ok(flow_steps(flow, n, steps, last));
        }
        let train = NoiseSchedule::from_alphas_cumprod(alphas_cumprod).train_sigmas();
        let list = self.sigmas.as_deref();
        let (timesteps, mut sigmas) = match ramp_or_list(self.ramp, list, &train, steps)? {
            Some(ramp) => {
                let log_sigmas = log_sigmas_f32(&train);
                // Karras timesteps are rounded; the others are truncated by diffusers' int64 cast.
                // A web UI's schedule calls the model at the nearest timestep, as ComfyUI does.
                let karras = nearest_timestep(self.ramp, list.is_some());
                let timesteps = ramp
                    .iter()
                    .map(|&s| {
                        let t = sigma_to_t(s, &log_sigmas);
                        (if karras {
                            t.round_ties_even()
                        } else {
                            t.trunc()
                        }) as i64
                    })
                    .collect();
                let sigmas: Vec<f32> = ramp.iter().map(|&s| s as f32).collect();
                (timesteps, sigmas)
            }
            None => {
                let timesteps =
                    dpm_timesteps(self.timestep_spacing, n, n, steps, self.steps_offset);
                check_timesteps(&timesteps, n, steps)?;
                let sigmas = timesteps.iter().map(|&t| train[t as usize]).collect();
                (timesteps, sigmas)
            }
        };
        check_timesteps(&timesteps, n, steps)?;
        let repeat = self.ramp != SigmaRamp::Interpolated || self.sigmas.is_some();
        sigmas.push(match last {
            FinalSigma::Zero => 0.0,
            FinalSigma::SigmaMin if repeat => sigmas[sigmas.len() - 1],
            FinalSigma::SigmaMin => train[0],
        });
        Ok(VpSteps { timesteps, sigmas })
    }
}

/// The flow grid's truncated timesteps and f32 sigmas, ending at 0 or at the last sigma repeated.
fn flow_steps(flow: &FlowSigmas, train_steps: usize, steps: usize, last: FinalSigma) -> VpSteps {
    let wide = flow.sigmas(steps, train_steps);
    let timesteps = truncated_timesteps(&wide, train_steps);
    let mut sigmas: Vec<f32> = wide.iter().map(|&s| s as f32).collect();
    sigmas.push(match last {
        FinalSigma::Zero => 0.0,
        FinalSigma::SigmaMin => sigmas[sigmas.len() - 1],
    });
    VpSteps { timesteps, sigmas }
}

/// The x0 prediction of a model output at (alpha, sigma), thresholded when configured, in f64 (written
/// to `x0` as f32 too): only a thresholded x0 goes through f32.
#[allow(
    clippy::too_many_arguments,
    reason = "the step's buffers and coefficients"
)]
pub fn data_prediction(
    prediction: PredictionType,
    clip: X0Clip,
    model_output: &[f32],
    sample: &[f32],
    alpha: f64,
    sigma: f64,
    x0: &mut [f32],
    batch: usize,
) -> Vec<f64> {
    let mut wide: Vec<f64> = model_output
        .iter()
        .zip(sample)
        .map(|(&out, &x)| prediction.x0_eps(out as f64, x as f64, alpha, sigma).0)
        .collect();
    for (x0, &v) in x0.iter_mut().zip(&wide) {
        *x0 = v as f32;
    }
    if clip != X0Clip::None {
        clip.apply(x0, batch);
        for (v, &x0) in wide.iter_mut().zip(x0.iter()) {
            *v = x0 as f64;
        }
    }
    wide
}

// Settings: the class's defaults and parser.

/// The keys UniPC and DEIS share.
pub(super) fn vp_multistep_keys() -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "thresholding": false,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "solver_order": 2,
        "lower_order_final": true,
        "use_karras_sigmas": false,
        "use_exponential_sigmas": false,
        "use_beta_sigmas": false,
        "sigma_schedule": null,
        "sigmas": null,
        "use_flow_sigmas": false,
        "flow_shift": 1.0,
        "timestep_spacing": "linspace",
        "use_dynamic_shifting": false,
        "time_shift_type": "exponential",
        // set_timesteps' argument: the image size's shift under use_dynamic_shifting.
        "mu": null,
    }) else {
        unreachable!("a literal object")
    };
    map
}

/// Rejects settings that must stay null.
pub(super) fn require_null(r: &mut Reader, nulls: &[&str]) -> Result<(), ConfigError> {
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

/// A string setting whose `replaced` values diffusers quietly rewrites to `value` (warned here).
pub(super) fn one_of(
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

pub(super) fn vp_schedule(
    r: &mut Reader,
    c: &Common,
    nudge_zero_snr: bool,
    flow: Option<FlowSigmas>,
) -> Result<VpSchedule, ConfigError> {
    let ramp = read_ramp_or_schedule(r)?;
    Ok(VpSchedule {
        schedule: c.schedule.clone(),
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
        ramp,
        sigmas: read_sigma_list(r, ramp, flow.is_some())?,
        nudge_zero_snr,
        flow,
    })
}

/// `disable_corrector`: a list of step indices.
pub(super) fn step_list(r: &mut Reader, key: &str) -> Result<Vec<usize>, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::schedule::BetaSchedule;

    fn sd(ramp: SigmaRamp) -> VpSchedule {
        VpSchedule {
            schedule: ScheduleConfig {
                beta_start: 0.00085,
                beta_end: 0.012,
                beta_schedule: BetaSchedule::ScaledLinear,
                ..ScheduleConfig::default()
            },
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            ramp,
            sigmas: None,
            nudge_zero_snr: true,
            flow: None,
        }
    }

    #[test]
    fn linspace_drops_the_last_of_n_plus_one_points() {
        let s = sd(SigmaRamp::Interpolated)
            .steps(10, FinalSigma::Zero)
            .unwrap();
        assert_eq!(
            s.timesteps,
            [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
        );
        assert_eq!(s.sigmas.len(), 11);
        assert_eq!(s.sigmas[10], 0.0);
    }

    #[test]
    fn ramps_repeat_their_last_sigma_for_sigma_min() {
        let s = sd(SigmaRamp::Karras)
            .steps(12, FinalSigma::SigmaMin)
            .unwrap();
        assert_eq!(s.timesteps[..4], [999, 933, 854, 761]);
        assert_eq!(s.sigmas[11], s.sigmas[12]);
    }
}

#[cfg(test)]
mod multistep_settings_tests {
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
