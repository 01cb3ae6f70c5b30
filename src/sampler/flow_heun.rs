//! FlowMatchHeunDiscreteScheduler: Heun's second-order step along the predicted velocity on SD3's shifted
//! grid, two model calls per interval except the last (an Euler step to σ = 0), with the optional churn of
//! Karras et al. As in diffusers, the timesteps list one entry per call, `[t0, t1, t1, ..., t_{n-1}, t_{n-1}]`.

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader};
use super::flow_euler::{default_grid, flow_timestep};
use super::flow_shift::{Precision, constant_shift};
use super::kdiff::{Churn, number_or_inf};
use super::schedule::ScheduleConfig;
use super::start::{call_sigma, starts_a_step};
use super::step_checks::check_step_count;
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

#[derive(Debug, Clone, PartialEq)]
pub struct FlowHeunConfig {
    /// The training steps only.
    pub schedule: ScheduleConfig,
    pub shift: f64,
    pub churn: Churn,
}

pub struct FlowHeun {
    config: FlowHeunConfig,
    timesteps: Vec<f64>,
    /// One per call, plus the final 0.
    sigmas: Vec<f32>,
    call: usize,
    /// The interval's first stage: its sample, derivative and dt (None between intervals).
    stage: Option<(Vec<f32>, Vec<f64>, f64)>,
    noise: Vec<f32>,
}

impl FlowHeun {
    pub fn new(config: FlowHeunConfig) -> Self {
        Self {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            call: 0,
            stage: None,
            noise: Vec::new(),
        }
    }
}

impl Scheduler for FlowHeun {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let n = self.config.schedule.num_train_timesteps;
        check_step_count(steps, n)?;
        let shift = self.config.shift;
        let sig: Vec<f32> = default_grid(n, Some(shift), steps)
            .into_iter()
            .map(|s| constant_shift(shift, s, Precision::F64) as f32)
            .collect();
        let t: Vec<f64> = sig.iter().map(|&s| flow_timestep(s, n)).collect();
        self.timesteps = std::iter::once(t[0])
            .chain(t[1..].iter().flat_map(|&v| [v, v]))
            .collect();
        self.sigmas = std::iter::once(sig[0])
            .chain(sig[1..].iter().flat_map(|&v| [v, v]))
            .chain([0.0])
            .collect();
        self.call = 0;
        self.stage = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
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
        call_sigma(&self.sigmas, self.timesteps.len(), call).map(Noising::flow)
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
        self.config.churn.s_churn > 0.0
    }

    fn draws_noise_at(&self, i: usize) -> bool {
        // Odd calls finish the interval their even call started.
        let s = i - i % 2;
        self.sigmas
            .get(s)
            .is_some_and(|&s| self.config.churn.gamma(s as f64, self.sigmas.len() - 1) > 0.0)
    }

    fn step(
        &mut self,
        model_output: &[f32],
        sample: &mut [f32],
        x0: &mut [f32],
        batch: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<(), StepError> {
        let c = self.call;
        check_step(c, self.timesteps.len(), model_output, sample, x0, batch)?;
        let first = self.stage.is_none();
        let (sigma, next) = if first {
            (self.sigmas[c], self.sigmas[c + 1])
        } else {
            (self.sigmas[c - 1], self.sigmas[c])
        };
        let gamma = self.config.churn.gamma(sigma as f64, self.sigmas.len() - 1);
        // Both stages churn, as diffusers does; the second stage's noise only moves the x its velocity is
        // read at, which cancels.
        let sigma_hat =
            self.config
                .churn
                .add_noise(c, sigma, gamma, sample, &mut self.noise, noise);
        let at = if first { sigma } else { next } as f64;
        for ((d, &x), &v) in x0.iter_mut().zip(sample.iter()).zip(model_output) {
            *d = (x as f64 - v as f64 * at) as f32;
        }
        match self.stage.take() {
            None => {
                let d: Vec<f64> = model_output
                    .iter()
                    .map(|&v| v as f64 * sigma as f64 / sigma_hat as f64)
                    .collect();
                let dt = (next - sigma_hat) as f64;
                let start = sample.to_vec();
                for (x, &dv) in sample.iter_mut().zip(&d) {
                    *x = (*x as f64 + dv * dt) as f32;
                }
                self.stage = Some((start, d, dt));
            }
            Some((start, d1, dt)) => {
                for (((x, &x_start), &d1), &v) in
                    sample.iter_mut().zip(&start).zip(&d1).zip(model_output)
                {
                    *x = (x_start as f64 + 0.5 * (d1 + v as f64) * dt) as f32;
                }
            }
        }
        self.call += 1;
        Ok(())
    }
}

impl FamilyConfig for FlowHeunConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(FlowHeun::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        PredictionType::FlowPrediction
    }
}

// Settings: the class's defaults and parser.

pub(super) fn flow_heun_defaults() -> Value {
    json!({
        "num_train_timesteps": 1000,
        "shift": 1.0,
        // step()'s arguments.
        "s_churn": 0.0,
        "s_tmin": 0.0,
        "s_tmax": "inf",
        "s_noise": 1.0,
    })
}

pub(super) fn parse_flow_heun(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    Ok(Arc::new(FlowHeunConfig {
        schedule: c.schedule,
        shift: r.positive("shift")?,
        churn: Churn {
            s_churn: r.non_negative("s_churn")?,
            s_tmin: r.non_negative("s_tmin")?,
            s_tmax: number_or_inf(r, "s_tmax")?,
            s_noise: r.non_negative("s_noise")?,
        },
    }))
}
