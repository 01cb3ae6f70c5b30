//! EulerAncestralDiscreteScheduler (A1111 "Euler a", ComfyUI `euler_ancestral`): an Euler step down to
//! sigma_down, then fresh noise of std sigma_up, at every step (sigma_up is 0 at the last).

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader};
use super::kdiff::{
    KConfig, denoised, f32_round, init_noise_sigma, input_divisor, k_config, unsupported_prediction,
};
use super::schedule::ScheduleConfig;
use super::sigmas::SigmaRamp;
use super::sigmas::ancestral_sigmas;
use super::start::call_sigma;
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

/// Euler a's settings: the k-diffusion ones, nothing of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct EulerAncestralConfig(pub KConfig);

pub struct EulerAncestral {
    config: KConfig,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    index: usize,
    noise: Vec<f32>,
}

impl EulerAncestral {
    pub fn new(config: KConfig) -> Self {
        Self {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            init_noise_sigma: 1.0,
            index: 0,
            noise: Vec::new(),
        }
    }
}

impl Scheduler for EulerAncestral {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let s = self.config.schedule(steps, true, false)?;
        let mut sigmas: Vec<f32> = s.sigmas.iter().map(|&x| x as f32).collect();
        sigmas.push(0.0);
        self.timesteps = s.timesteps.into_iter().map(f32_round).collect();
        self.init_noise_sigma = init_noise_sigma(&sigmas, self.config.timestep_spacing);
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
        true
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
        let (s, next) = (self.sigmas[i], self.sigmas[i + 1]);
        let (up, down) = ancestral_sigmas(s, next);
        let dt = (down - s) as f64;
        // diffusers draws at every step, the last (sigma_up = 0) included.
        self.noise.resize(sample.len(), 0.0);
        noise.fill(i, &mut self.noise);
        let prediction = self.config.prediction_type;
        for (((x, d), &out), &z) in sample
            .iter_mut()
            .zip(x0.iter_mut())
            .zip(model_output)
            .zip(&self.noise)
        {
            let xv = *x as f64;
            let den = denoised(prediction, out as f64, xv, s as f64);
            *d = den as f32;
            *x = (xv + (xv - den) / s as f64 * dt + z as f64 * up as f64) as f32;
        }
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for EulerAncestralConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(EulerAncestral::new(self.0.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.0.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.0.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn euler_ancestral_defaults() -> Value {
    json!({"timestep_spacing": "linspace", "rescale_betas_zero_snr": false, "sigma_schedule": null, "sigmas": null})
}

pub(super) fn parse_euler_ancestral(
    r: &mut Reader,
    c: Common,
    _warnings: &mut Vec<String>,
) -> Parsed {
    if c.prediction_type == PredictionType::Sample {
        return Err(unsupported_prediction(
            "EulerAncestralDiscreteScheduler",
            c.prediction_type,
        ));
    }
    Ok(Arc::new(EulerAncestralConfig(k_config(
        c,
        SigmaRamp::Interpolated,
        r,
    )?)))
}
