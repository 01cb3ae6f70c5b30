//! DDIMScheduler (Song et al. 2021): deterministic at eta = 0, DDPM-like at eta = 1.

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

#[derive(Debug, Clone, PartialEq)]
pub struct DdimConfig {
    pub schedule: ScheduleConfig,
    pub prediction_type: PredictionType,
    pub clip: X0Clip,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    /// ᾱ after the last step: 1 (the clean sample) or ᾱ_0, as the SD 1.x config has it.
    pub set_alpha_to_one: bool,
    /// Noise scale: 0 is deterministic DDIM, 1 matches DDPM's posterior variance.
    pub eta: f64,
    /// Recompute epsilon from the clipped x0 (diffusers' `use_clipped_model_output`).
    pub use_clipped_model_output: bool,
}

pub struct Ddim {
    config: DdimConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<i64>,
    /// `timesteps` as the model sees them.
    model_timesteps: Vec<f64>,
    index: usize,
    noise: Vec<f32>,
}

impl Ddim {
    pub fn new(config: DdimConfig) -> Self {
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
}

impl Scheduler for Ddim {
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
        self.config.eta > 0.0
    }

    /// DDIM always steps back by N // n, whatever the spacing, so with linspace or a non-integer
    /// trailing stride it reads ᾱ at a timestep the loop never visits (diffusers issue 11347).
    fn previous_timestep(&self, i: usize) -> Option<f64> {
        let n = self.schedule.num_train_timesteps() as i64;
        let prev = self.timesteps.get(i)? - n / self.timesteps.len() as i64;
        (prev >= 0).then_some(prev as f64)
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
        let a_t = self.schedule.alpha_bar(t as usize);
        let a_p = if let Some(prev) = self.previous_timestep(self.index) {
            self.schedule.alpha_bar(prev as usize)
        } else if self.config.set_alpha_to_one {
            1.0
        } else {
            self.schedule.alpha_bar(0)
        };
        let (alpha, sigma) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let variance = (1.0 - a_p) / (1.0 - a_t) * (1.0 - a_t / a_p);
        let std = self.config.eta * variance.sqrt();
        // With zero terminal SNR and eta = 1 this difference is a rounding error below zero, where
        // diffusers returns NaN; it is zero.
        let c_eps = (1.0 - a_p - std * std).max(0.0).sqrt();
        let c_x0 = a_p.sqrt();

        let prediction = self.config.prediction_type;
        let clip = self.config.clip;
        let fused = clip.is_elementwise();
        if !fused {
            // Dynamic thresholding needs every x0 of an item before any can be used.
            for ((x0, &out), &x) in x0.iter_mut().zip(model_output).zip(sample.iter()) {
                *x0 = prediction.x0_eps(out as f64, x as f64, alpha, sigma).0 as f32;
            }
            clip.apply(x0, batch);
        }
        let noisy = self.config.eta > 0.0;
        if noisy {
            self.noise.resize(sample.len(), 0.0);
            noise.fill(self.index, &mut self.noise);
        }
        let z: &[f32] = if noisy { &self.noise } else { &[] };
        let reuse_x0 = self.config.use_clipped_model_output;
        for (j, (x, x0)) in sample.iter_mut().zip(x0.iter_mut()).enumerate() {
            let xf = *x as f64;
            let (raw_x0, raw_eps) = prediction.x0_eps(model_output[j] as f64, xf, alpha, sigma);
            let x0f = if fused {
                let v = clip.clip_value(raw_x0);
                *x0 = v as f32;
                v
            } else {
                *x0 as f64
            };
            // epsilon comes from the raw model output, not from the clipped x0, unless asked.
            let eps = if reuse_x0 {
                (xf - alpha * x0f) / sigma
            } else {
                raw_eps
            };
            let mut v = c_x0 * x0f + c_eps * eps;
            if noisy {
                v += std * z[j] as f64;
            }
            *x = v as f32;
        }
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for DdimConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(Ddim::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
}

pub(super) fn ddim_defaults() -> Value {
    with_vp(json!({
        "clip_sample": true,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": true,
        "timestep_spacing": "leading",
        "eta": 0.0,
        "use_clipped_model_output": false,
    }))
}

pub(super) fn parse_ddim(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let thresholding = read_thresholding(r)?;
    Ok(Arc::new(DdimConfig {
        clip: read_clip(r, thresholding)?,
        set_alpha_to_one: r.bool("set_alpha_to_one")?,
        eta: r.non_negative("eta")?,
        use_clipped_model_output: r.bool("use_clipped_model_output")?,
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
    }))
}
