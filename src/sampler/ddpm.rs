//! DDPMScheduler: ancestral sampling (Ho et al. 2020), with diffusers' strided posterior.

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{
    Common, ConfigError, FamilyConfig, Parsed, Reader, read_clip, read_thresholding, with_vp,
};
use super::prediction::X0Clip;
use super::schedule::{NoiseSchedule, ScheduleConfig};
use super::spacing::TimestepSpacing;
use super::step_checks::checked_timesteps;
use super::{NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

pub use super::settings::DdpmVariance;

#[derive(Debug, Clone, PartialEq)]
pub struct DdpmConfig {
    pub schedule: ScheduleConfig,
    pub prediction_type: PredictionType,
    pub clip: X0Clip,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub variance_type: DdpmVariance,
}

pub struct Ddpm {
    config: DdpmConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<i64>,
    /// `timesteps` as the model sees them.
    model_timesteps: Vec<f64>,
    index: usize,
    noise: Vec<f32>,
}

impl Ddpm {
    pub fn new(config: DdpmConfig) -> Self {
        let schedule = NoiseSchedule::new(&config.schedule);
        Self {
            config,
            schedule,
            timesteps: Vec::new(),
            model_timesteps: Vec::new(),
            index: 0,
            noise: Vec::new(),
        }
    }

    /// Coefficients of the step from timestep `t` to `prev` (−1 for the clean sample):
    /// (sqrt ᾱ_t, sqrt(1 − ᾱ_t), mean coefficient of x0, mean coefficient of x_t, noise std).
    fn coefficients(&self, t: i64, prev: i64) -> (f64, f64, f64, f64, f64) {
        let a_t = self.schedule.alpha_bar(t as usize);
        let a_p = if prev >= 0 {
            self.schedule.alpha_bar(prev as usize)
        } else {
            1.0
        };
        let (b_t, b_p) = (1.0 - a_t, 1.0 - a_p);
        let cur_a = a_t / a_p;
        let cur_b = 1.0 - cur_a;
        let c_x0 = a_p.sqrt() * cur_b / b_t;
        let c_x = cur_a.sqrt() * b_p / b_t;
        // The posterior variance is clamped as in diffusers so the log variants stay finite.
        let var = (b_p / b_t * cur_b).max(1e-20);
        let std = match self.config.variance_type {
            DdpmVariance::FixedSmall => var.sqrt(),
            DdpmVariance::FixedSmallLog => (0.5 * var.ln()).exp(),
            DdpmVariance::FixedLarge => cur_b.sqrt(),
            // diffusers takes the square root of log(beta) here and returns NaN; exp(0.5 log beta) is
            // what the name means.
            DdpmVariance::FixedLargeLog => (0.5 * cur_b.ln()).exp(),
        };
        (a_t.sqrt(), b_t.sqrt(), c_x0, c_x, std)
    }
}

impl Scheduler for Ddpm {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        self.timesteps = checked_timesteps(
            self.config.timestep_spacing,
            self.schedule.num_train_timesteps(),
            steps,
            self.config.steps_offset,
        )?;
        self.model_timesteps = self.timesteps.iter().map(|&t| t as f64).collect();
        self.index = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.model_timesteps
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        let t = *self.timesteps.get(call)?;
        Some(Noising::alpha_bar(
            self.schedule.alphas_cumprod()[t as usize],
        ))
    }

    fn start_at(&mut self, call: usize) -> Option<Noising> {
        let noising = self.noising_at(call)?;
        self.index = call;
        Some(noising)
    }

    fn is_stochastic(&self) -> bool {
        true
    }

    fn draws_noise_at(&self, i: usize) -> bool {
        self.timesteps.get(i).is_some_and(|&t| t > 0)
    }

    fn step(
        &mut self,
        model_output: &[f32],
        sample: &mut [f32],
        x0: &mut [f32],
        batch: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<(), StepError> {
        check_step(
            self.index,
            self.timesteps.len(),
            model_output,
            sample,
            x0,
            batch,
        )?;
        let t = self.timesteps[self.index];
        // DDPM's previous timestep is the next entry of the array (diffusers' previous_timestep()).
        let prev = self.timesteps.get(self.index + 1).copied().unwrap_or(-1);
        let (alpha, sigma, c_x0, c_x, std) = self.coefficients(t, prev);
        let prediction = self.config.prediction_type;
        for ((x0, &out), &x) in x0.iter_mut().zip(model_output).zip(sample.iter()) {
            *x0 = prediction.x0_eps(out as f64, x as f64, alpha, sigma).0 as f32;
        }
        self.config.clip.apply(x0, batch);
        // Noise is drawn when the timestep value is above zero, not by position.
        let noisy = t > 0;
        if noisy {
            self.noise.resize(sample.len(), 0.0);
            noise.fill(self.index, &mut self.noise);
        }
        for (i, (x, &x0)) in sample.iter_mut().zip(x0.iter()).enumerate() {
            let mean = c_x0 * x0 as f64 + c_x * *x as f64;
            let z = if noisy { self.noise[i] as f64 } else { 0.0 };
            *x = (mean + std * z) as f32;
        }
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for DdpmConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(Ddpm::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
}

/// diffusers' defaults for DDPMScheduler.
pub(super) fn ddpm_defaults() -> Value {
    with_vp(json!({
        "variance_type": "fixed_small",
        "clip_sample": true,
        "clip_sample_range": 1.0,
        "timestep_spacing": "leading",
    }))
}

pub(super) fn parse_ddpm(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let thresholding = read_thresholding(r)?;
    Ok(Arc::new(DdpmConfig {
        clip: read_clip(r, thresholding)?,
        variance_type: read_variance_type(r)?,
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
    }))
}

/// diffusers' `variance_type`; the learned kinds need a model that predicts variances.
fn read_variance_type(r: &mut Reader) -> Result<DdpmVariance, ConfigError> {
    let key = "variance_type";
    match r.value(key).as_str() {
        Some(s @ ("learned" | "learned_range")) => Err(ConfigError::Unsupported {
            key: key.into(),
            got: format!("{s:?}"),
            reason: format!(
                "learned variances need a model that predicts them; use one of {}",
                DdpmVariance::NAMES.join(", ")
            ),
        }),
        Some(s) => DdpmVariance::from_name(s)
            .ok_or_else(|| r.invalid(key, &format!("one of {}", DdpmVariance::NAMES.join(", ")))),
        None => Err(r.invalid(key, &format!("one of {}", DdpmVariance::NAMES.join(", ")))),
    }
}
