//! LCMScheduler (Luo et al. 2023, latent consistency models; A1111 "LCM", ComfyUI `lcm`): each step
//! maps the sample to the consistency function's clean estimate and, except at the last step, noises
//! it again to the next timestep with fresh Gaussian noise.

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader, read_clip, read_thresholding};
use super::prediction::X0Clip;
use super::schedule::{NoiseSchedule, ScheduleConfig};
use super::step_checks::{check_step_count, check_timesteps};
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

#[derive(Debug, Clone, PartialEq)]
pub struct LcmConfig {
    pub schedule: ScheduleConfig,
    pub prediction_type: PredictionType,
    /// `clip_sample` or `thresholding` on the x0 prediction.
    pub clip: X0Clip,
    /// The distillation schedule's step count (`original_inference_steps`).
    pub original_inference_steps: usize,
    /// The boundary-condition scaling of the timestep (`timestep_scaling`).
    pub timestep_scaling: f64,
}

pub struct Lcm {
    config: LcmConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<i64>,
    model_timesteps: Vec<f64>,
    index: usize,
    noise: Vec<f32>,
}

/// The `steps` timesteps: `steps` evenly placed picks (floored) from the distillation schedule
/// `k·j − 1`, j = orig..1, k = N / orig.
pub fn lcm_timesteps(train_steps: usize, original: usize, steps: usize) -> Vec<i64> {
    let k = (train_steps / original) as i64;
    let origin: Vec<i64> = (1..=original as i64).rev().map(|j| j * k - 1).collect();
    let stride = original as f64 / steps as f64;
    (0..steps)
        .map(|i| origin[(i as f64 * stride).floor() as usize])
        .collect()
}

/// c_skip and c_out of the consistency boundary condition at timestep `t` (sigma_data 0.5, f32).
fn boundary_scalings(t: i64, scaling: f64) -> (f64, f64) {
    let st = (t as f64 * scaling) as f32;
    let sd2 = 0.25f32;
    let c_skip = sd2 / (st * st + sd2);
    let c_out = st / (st * st + sd2).sqrt();
    (c_skip as f64, c_out as f64)
}

impl Lcm {
    pub fn new(config: LcmConfig) -> Self {
        Self {
            schedule: NoiseSchedule::new(&config.schedule),
            config,
            timesteps: Vec::new(),
            model_timesteps: Vec::new(),
            index: 0,
            noise: Vec::new(),
        }
    }
}

impl Scheduler for Lcm {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let n = self.schedule.num_train_timesteps();
        let original = self.config.original_inference_steps;
        check_step_count(steps, n)?;
        if original > n {
            return Err(ConfigError::Steps {
                steps,
                reason: format!(
                    "original_inference_steps {original} exceeds num_train_timesteps {n}"
                ),
            });
        }
        if steps > original {
            return Err(ConfigError::Steps {
                steps,
                reason: format!("LCM takes at most original_inference_steps = {original} steps"),
            });
        }
        let timesteps = lcm_timesteps(n, original, steps);
        check_timesteps(&timesteps, n, steps)?;
        self.model_timesteps = timesteps.iter().map(|&t| t as f64).collect();
        self.timesteps = timesteps;
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
        self.timesteps.len() > 1
    }

    fn draws_noise_at(&self, i: usize) -> bool {
        i + 1 < self.timesteps.len()
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
        let t = self.timesteps[i];
        let a = self.schedule.alpha_bar(t as usize);
        let (alpha, sigma) = (a.sqrt(), (1.0 - a).sqrt());
        let prediction = self.config.prediction_type;
        for ((d, &out), &x) in x0.iter_mut().zip(model_output).zip(sample.iter()) {
            *d = prediction.x0_eps(out as f64, x as f64, alpha, sigma).0 as f32;
        }
        self.config.clip.apply(x0, batch);
        let (c_skip, c_out) = boundary_scalings(t, self.config.timestep_scaling);
        for (d, &x) in x0.iter_mut().zip(sample.iter()) {
            *d = (c_out * *d as f64 + c_skip * x as f64) as f32;
        }
        // x0 now holds the consistency estimate ("denoised"), which is also the last step's result.
        if let Some(&next) = self.timesteps.get(i + 1) {
            let a_next = self.schedule.alpha_bar(next as usize);
            self.noise.resize(sample.len(), 0.0);
            noise.fill(i, &mut self.noise);
            let (alpha, sigma) = (a_next.sqrt(), (1.0 - a_next).sqrt());
            for ((x, &d), &z) in sample.iter_mut().zip(x0.iter()).zip(&self.noise) {
                *x = (alpha * d as f64 + sigma * z as f64) as f32;
            }
        } else {
            sample.copy_from_slice(x0);
        }
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for LcmConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(Lcm::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn lcm_defaults() -> Value {
    json!({
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "original_inference_steps": 50,
        "clip_sample": false,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": true,
        "thresholding": false,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",
        "timestep_scaling": 10.0,
        "rescale_betas_zero_snr": false,
    })
}

/// LCM reads `set_alpha_to_one`, `timestep_spacing` and `steps_offset` but never uses them (its last
/// step stays at its own timestep); they are checked, not reported.
pub(super) fn parse_lcm(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    r.bool("set_alpha_to_one")?;
    let thresholding = read_thresholding(r)?;
    Ok(Arc::new(LcmConfig {
        clip: read_clip(r, thresholding)?,
        original_inference_steps: r.count("original_inference_steps", 1)?,
        timestep_scaling: r.positive("timestep_scaling")?,
        schedule: c.schedule,
        prediction_type: c.prediction_type,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplerConfig;
    use serde_json::json;

    fn build(settings: serde_json::Value) -> Result<Box<dyn Scheduler>, ConfigError> {
        let settings = settings.as_object().cloned().unwrap_or_default();
        SamplerConfig::resolve("lcm", None, &settings).map(|r| r.config.build())
    }

    #[test]
    fn one_call_per_step_and_no_noise_at_the_last() {
        let mut s = build(json!({})).unwrap();
        s.set_steps(4).unwrap();
        assert_eq!(s.timesteps(), [999.0, 759.0, 499.0, 259.0]);
        assert!(s.is_stochastic());
        assert_eq!(
            (0..4).map(|i| s.draws_noise_at(i)).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        s.set_steps(1).unwrap();
        assert!(!s.is_stochastic());
    }

    #[test]
    fn bad_settings_and_step_counts_are_errors() {
        let e = build(json!({"original_inference_steps": 0})).err().unwrap();
        assert!(e.to_string().contains("`original_inference_steps`"), "{e}");
        let e = build(json!({"timestep_scaling": -1.0})).err().unwrap();
        assert!(e.to_string().contains("`timestep_scaling`"), "{e}");
        let e = build(json!({})).unwrap().set_steps(51).unwrap_err();
        assert!(e.to_string().contains("original_inference_steps"), "{e}");
    }

    #[test]
    fn timesteps_pick_from_the_distillation_schedule() {
        assert_eq!(lcm_timesteps(1000, 50, 4), [999, 759, 499, 259]);
        assert_eq!(
            lcm_timesteps(1000, 50, 8),
            [999, 879, 759, 639, 499, 379, 259, 139]
        );
        assert_eq!(lcm_timesteps(1000, 25, 6), [999, 839, 679, 519, 359, 199]);
        assert_eq!(lcm_timesteps(1000, 50, 1), [999]);
    }
}
