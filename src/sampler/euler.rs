//! EulerDiscreteScheduler: the first-order step in sigma space (A1111 "Euler", ComfyUI `euler`), with
//! diffusers' optional churn (noise added after the model call, so not Karras' Algorithm 2).

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader, merged, read_ramp, sigma_keys};
use super::kdiff::Churn;
use super::kdiff::{
    KConfig, denoised, f32_round, init_noise_sigma, input_divisor, k_config, number_or_inf,
};
use super::schedule::ScheduleConfig;
use super::settings::FinalSigma;
use super::start::call_sigma;
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

impl Default for Churn {
    fn default() -> Self {
        Self {
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EulerConfig {
    pub k: KConfig,
    /// `interpolation_type = "log_linear"`.
    pub log_linear: bool,
    /// `final_sigmas_type = "sigma_min"`: the last step lands on the smallest training sigma, not 0.
    pub final_sigma_min: bool,
    /// `timestep_type = "continuous"` (used with v_prediction): the model sees 0.25·log(sigma).
    pub continuous: bool,
    pub churn: Churn,
}

pub struct Euler {
    config: EulerConfig,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    index: usize,
    noise: Vec<f32>,
}

impl Euler {
    pub fn new(config: EulerConfig) -> Self {
        Self {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            init_noise_sigma: 1.0,
            index: 0,
            noise: Vec::new(),
        }
    }

    /// Churn's gamma at sigma `s`.
    fn gamma(&self, s: f64) -> f64 {
        self.config.churn.gamma(s, self.sigmas.len() - 1)
    }
}

impl Scheduler for Euler {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let c = &self.config;
        let s = c.k.schedule(steps, true, c.log_linear)?;
        let mut sigmas: Vec<f32> = s.sigmas.iter().map(|&x| x as f32).collect();
        sigmas.push(if c.final_sigma_min {
            s.train_sigmas[0]
        } else {
            0.0
        });
        self.timesteps = if c.continuous && c.k.prediction_type == PredictionType::VPrediction {
            sigmas[..steps]
                .iter()
                .map(|&x| f32_round(0.25 * (x as f64).ln()))
                .collect()
        } else {
            s.timesteps.into_iter().map(f32_round).collect()
        };
        self.init_noise_sigma = init_noise_sigma(&sigmas, c.k.timestep_spacing);
        self.sigmas = sigmas;
        self.index = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    fn model_input_divisor(&self) -> f32 {
        self.sigmas
            .get(self.index)
            .map_or(1.0, |&s| input_divisor(s))
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        call_sigma(&self.sigmas, self.timesteps.len(), call).map(Noising::sigma)
    }

    fn start_at(&mut self, call: usize) -> Option<Noising> {
        let noising = self.noising_at(call)?;
        self.index = call;
        Some(noising)
    }

    fn is_stochastic(&self) -> bool {
        self.config.churn.s_churn > 0.0
    }

    fn draws_noise_at(&self, i: usize) -> bool {
        self.sigmas
            .get(i)
            .is_some_and(|&s| self.gamma(s as f64) > 0.0)
    }

    fn step(
        &mut self,
        model_output: &[f32],
        sample: &mut [f32],
        x0: &mut [f32],
        batch: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<(), StepError> {
        let i = self.index;
        check_step(i, self.timesteps.len(), model_output, sample, x0, batch)?;
        let s = self.sigmas[i];
        let gamma = self.gamma(s as f64);
        let sigma_hat = self
            .config
            .churn
            .add_noise(i, s, gamma, sample, &mut self.noise, noise);
        // v-prediction uses sigma, not sigma_hat, as diffusers does.
        let prediction = self.config.k.prediction_type;
        let x0_sigma = match prediction {
            PredictionType::Epsilon => sigma_hat,
            _ => s,
        };
        // dt is an f32 tensor difference in diffusers: with sigma_max ~ 2e4 that rounding matters.
        let dt = (self.sigmas[i + 1] - sigma_hat) as f64;
        for ((x, d), &out) in sample.iter_mut().zip(x0.iter_mut()).zip(model_output) {
            let xv = *x as f64;
            let den = denoised(prediction, out as f64, xv, x0_sigma as f64);
            *d = den as f32;
            *x = (xv + (xv - den) / sigma_hat as f64 * dt) as f32;
        }
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for EulerConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(Euler::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.k.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.k.prediction_type
    }
}

// Settings: the class's defaults and parser.

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
        k: k_config(c, ramp, r)?,
        log_linear,
        final_sigma_min,
        continuous,
        churn,
    }))
}
