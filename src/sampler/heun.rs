//! HeunDiscreteScheduler (A1111 "Heun", ComfyUI `heun`): Karras' second-order step, two model calls per
//! interval except the last (an Euler step to sigma 0). As in diffusers, the timesteps list one entry per
//! model call, `[t0, t1, t1, ..., t_{n-1}, t_{n-1}]`, and each `step` is one call.

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{
    Common, FamilyConfig, Parsed, Reader, merged, read_clip, read_ramp, sigma_keys,
};
use super::kdiff::{KConfig, denoised, f32_round, init_noise_sigma, input_divisor, k_config};
use super::prediction::X0Clip;
use super::schedule::ScheduleConfig;
use super::start::{call_sigma, starts_a_step};
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

#[derive(Debug, Clone, PartialEq)]
pub struct HeunConfig {
    pub k: KConfig,
    /// `clip_sample` (and its range) applied to the denoised prediction.
    pub clip: X0Clip,
}

pub struct Heun {
    config: HeunConfig,
    /// One per model call.
    timesteps: Vec<f64>,
    /// One per model call, plus the final 0.
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    call: usize,
    /// The interval's first-stage state: its starting sample, derivative and dt.
    start: Vec<f32>,
    derivative: Vec<f64>,
    dt: f64,
}

impl Heun {
    pub fn new(config: HeunConfig) -> Self {
        Self {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            init_noise_sigma: 1.0,
            call: 0,
            start: Vec::new(),
            derivative: Vec::new(),
            dt: 0.0,
        }
    }

    /// The derivative (x - x0)/s at sigma `s`; writes x0.
    fn derivative(&self, out: &[f32], x: &[f32], x0: &mut [f32], s: f32, batch: usize) -> Vec<f64> {
        let prediction = self.config.k.prediction_type;
        for ((d, &o), &xv) in x0.iter_mut().zip(out).zip(x) {
            *d = denoised(prediction, o as f64, xv as f64, s as f64) as f32;
        }
        self.config.clip.apply(x0, batch);
        x.iter()
            .zip(x0.iter())
            .map(|(&xv, &d)| (xv as f64 - d as f64) / s as f64)
            .collect()
    }
}

impl Scheduler for Heun {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let s = self.config.k.schedule(steps, false, false)?;
        let t: Vec<f64> = s.timesteps.into_iter().map(f32_round).collect();
        let sig: Vec<f32> = s.sigmas.iter().map(|&x| x as f32).collect();
        self.timesteps = std::iter::once(t[0])
            .chain(t[1..].iter().flat_map(|&v| [v, v]))
            .collect();
        self.sigmas = std::iter::once(sig[0])
            .chain(sig[1..].iter().flat_map(|&v| [v, v]))
            .chain([0.0])
            .collect();
        self.init_noise_sigma = init_noise_sigma(&self.sigmas, self.config.k.timestep_spacing);
        self.call = 0;
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
            .get(self.call)
            .map_or(1.0, |&s| input_divisor(s))
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn order_at(&self, i: usize) -> usize {
        if i % 2 == 1 { 2 } else { 1 }
    }

    fn calls_per_step(&self) -> usize {
        2
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        call_sigma(&self.sigmas, self.timesteps.len(), call).map(Noising::sigma)
    }

    fn start_at(&mut self, call: usize) -> Option<Noising> {
        if !starts_a_step(call, self.timesteps.len()) {
            return None;
        }
        let noising = self.noising_at(call)?;
        self.call = call;
        Some(noising)
    }

    fn is_stochastic(&self) -> bool {
        false
    }

    fn step(
        &mut self,
        model_output: &[f32],
        sample: &mut [f32],
        x0: &mut [f32],
        batch: usize,
        _noise: &mut dyn NoiseSource,
    ) -> Result<(), StepError> {
        let c = self.call;
        check_step(c, self.timesteps.len(), model_output, sample, x0, batch)?;
        // Calls 0, 2, 4, ... start an interval; the odd ones finish it.
        if c.is_multiple_of(2) {
            let s = self.sigmas[c];
            let d = self.derivative(model_output, sample, x0, s, batch);
            // dt is an f32 difference in diffusers (it matters for the cosine schedule's huge sigma_max).
            self.dt = (self.sigmas[c + 1] - s) as f64;
            self.start.clear();
            self.start.extend_from_slice(sample);
            for (x, &dv) in sample.iter_mut().zip(&d) {
                *x = (*x as f64 + dv * self.dt) as f32;
            }
            self.derivative = d;
        } else {
            let s = self.sigmas[c];
            let d2 = self.derivative(model_output, sample, x0, s, batch);
            for (((x, &x_start), &d1), &d2) in sample
                .iter_mut()
                .zip(&self.start)
                .zip(&self.derivative)
                .zip(&d2)
            {
                *x = (x_start as f64 + (d1 + d2) / 2.0 * self.dt) as f32;
            }
        }
        self.call += 1;
        Ok(())
    }
}

impl FamilyConfig for HeunConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(Heun::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.k.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.k.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn heun_defaults() -> Value {
    merged(
        sigma_keys(),
        json!({"beta_start": 0.00085, "beta_end": 0.012, "clip_sample": false, "clip_sample_range": 1.0}),
    )
}

pub(super) fn parse_heun(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let ramp = read_ramp(r)?;
    let clip = read_clip(r, X0Clip::None)?;
    Ok(Arc::new(HeunConfig {
        k: k_config(c, ramp, r)?,
        clip,
    }))
}
