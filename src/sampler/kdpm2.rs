//! KDPM2DiscreteScheduler (A1111 "DPM2", ComfyUI `dpm_2`) and KDPM2AncestralDiscreteScheduler ("DPM2 a",
//! `dpm_2_ancestral`): k-diffusion's DPM-Solver-2, a midpoint step at the log-sigma midpoint, two model
//! calls per interval except the last. One `step` per model call; the timesteps list both calls.

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader, merged, read_ramp, sigma_keys};
use super::kdiff::{
    KConfig, KSchedule, denoised, f32_round, init_noise_sigma, input_divisor, k_config,
    unsupported_prediction,
};
use super::schedule::ScheduleConfig;
use super::sigmas::ancestral_sigmas;
use super::sigmas::{SigmaRamp, sigma_to_t};
use super::start::{call_sigma, starts_a_step};
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

/// `exp(torch.lerp(log a, log b, 0.5))` as torch computes it (`b - (b - a)·0.5` in log space), so a
/// zero end gives 0 and the rounding is torch's.
fn log_midpoint(a: f32, b: f32) -> f32 {
    let (la, lb) = (a.ln(), b.ln());
    (lb - (lb - la) * 0.5).exp()
}

/// The per-run tables of either variant, by interval i of n.
struct Tables {
    /// n sigmas and the final 0.
    sigmas: Vec<f32>,
    /// The second call's sigma of interval i (0 where the interval has one call).
    mid: Vec<f32>,
    /// Where the ancestral step lands before its noise, and the noise std (0 for DPM2).
    down: Vec<f32>,
    up: Vec<f32>,
}

/// DPM2's settings, and whether it is the ancestral (DPM2 a) one.
#[derive(Debug, Clone, PartialEq)]
pub struct Kdpm2Config {
    pub k: KConfig,
    pub ancestral: bool,
}

pub struct Kdpm2 {
    config: KConfig,
    ancestral: bool,
    t: Tables,
    timesteps: Vec<f64>,
    /// diffusers' interleaved `sigmas` (for display and comparison).
    interleaved: Vec<f32>,
    init_noise_sigma: f32,
    call: usize,
    start: Vec<f32>,
    noise: Vec<f32>,
}

impl Kdpm2 {
    pub fn new(config: KConfig, ancestral: bool) -> Self {
        Self {
            config,
            ancestral,
            t: Tables {
                sigmas: Vec::new(),
                mid: Vec::new(),
                down: Vec::new(),
                up: Vec::new(),
            },
            timesteps: Vec::new(),
            interleaved: Vec::new(),
            init_noise_sigma: 1.0,
            call: 0,
            start: Vec::new(),
            noise: Vec::new(),
        }
    }

    fn tables(&self, sigmas: Vec<f32>) -> Tables {
        let n = sigmas.len() - 1;
        let mut t = Tables {
            mid: vec![0.0; n],
            down: vec![0.0; n],
            up: vec![0.0; n],
            sigmas,
        };
        for i in 0..n {
            let (s, next) = (t.sigmas[i], t.sigmas[i + 1]);
            if self.ancestral {
                (t.up[i], t.down[i]) = ancestral_sigmas(s, next);
                t.mid[i] = if i + 1 < n {
                    log_midpoint(s, t.down[i])
                } else {
                    0.0
                };
            } else {
                t.down[i] = next;
                t.mid[i] = log_midpoint(next, s);
            }
        }
        t
    }

    /// The model timestep of a second call at sigma `m`: f64 after a sigma ramp, f32 otherwise.
    fn mid_timestep(&self, m: f32, s: &KSchedule) -> f64 {
        let t = sigma_to_t(m as f64, &s.log_sigmas);
        if self.config.ramp == SigmaRamp::Interpolated {
            f32_round(t)
        } else {
            t
        }
    }

    /// (interval, second call?) of model call `c`.
    fn stage(c: usize) -> (usize, bool) {
        (c / 2, c % 2 == 1)
    }
}

impl Scheduler for Kdpm2 {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let s = self.config.schedule(steps, false, false)?;
        let mut sigmas: Vec<f32> = s.sigmas.iter().map(|&x| x as f32).collect();
        sigmas.push(0.0);
        let t = self.tables(sigmas);
        let outer: Vec<f64> = match self.config.ramp {
            SigmaRamp::Interpolated => s.timesteps.iter().map(|&v| f32_round(v)).collect(),
            // diffusers rounds the Karras timesteps of these two classes (not the exponential ones).
            SigmaRamp::Karras => s.timesteps.iter().map(|v| v.round_ties_even()).collect(),
            SigmaRamp::Exponential | SigmaRamp::Beta | SigmaRamp::Schedule(_) => {
                s.timesteps.clone()
            }
        };
        let mut timesteps = Vec::with_capacity(2 * steps - 1);
        for (i, &t_outer) in outer.iter().enumerate() {
            timesteps.push(t_outer);
            if i + 1 < steps {
                timesteps.push(self.mid_timestep(t.mid[i], &s));
            }
        }
        self.interleaved = std::iter::once(t.sigmas[0])
            .chain(t.sigmas[1..].iter().flat_map(|&v| [v, v]))
            .chain([0.0])
            .collect();
        self.init_noise_sigma = init_noise_sigma(&t.sigmas, self.config.timestep_spacing);
        self.timesteps = timesteps;
        self.t = t;
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
        let (i, second) = Self::stage(self.call);
        let s = if second {
            self.t.mid.get(i)
        } else {
            self.t.sigmas.get(i)
        };
        s.map_or(1.0, |&s| input_divisor(s))
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.interleaved)
    }

    fn order_at(&self, i: usize) -> usize {
        if i % 2 == 1 { 2 } else { 1 }
    }

    fn calls_per_step(&self) -> usize {
        2
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        call_sigma(&self.interleaved, self.timesteps.len(), call).map(Noising::sigma)
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
        self.ancestral
    }

    fn draws_noise_at(&self, i: usize) -> bool {
        self.ancestral && i % 2 == 1
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
        let (i, second) = Self::stage(c);
        let (s, m) = (self.t.sigmas[i], self.t.mid[i]);
        let prediction = self.config.prediction_type;
        let at = if second { m } else { s };
        for ((d, &o), &x) in x0.iter_mut().zip(model_output).zip(sample.iter()) {
            *d = denoised(prediction, o as f64, x as f64, at as f64) as f32;
        }
        if !second {
            // Stage 1: to the midpoint sigma (to 0 in the last interval, whose only call this is).
            self.start.clear();
            self.start.extend_from_slice(sample);
            let dt = (m - s) as f64;
            for (x, &d) in sample.iter_mut().zip(x0.iter()) {
                let xv = *x as f64;
                *x = (xv + (xv - d as f64) / s as f64 * dt) as f32;
            }
        } else {
            // Stage 2: the whole interval from the stored sample with the midpoint's derivative.
            let dt = (self.t.down[i] - s) as f64;
            let up = self.t.up[i] as f64;
            self.noise.resize(sample.len(), 0.0);
            if self.ancestral {
                noise.fill(c, &mut self.noise);
            }
            for (((x, &d), &x_start), &z) in sample
                .iter_mut()
                .zip(x0.iter())
                .zip(&self.start)
                .zip(&self.noise)
            {
                let xm = *x as f64;
                let v = x_start as f64 + (xm - d as f64) / m as f64 * dt;
                let v = if self.ancestral { v + z as f64 * up } else { v };
                *x = v as f32;
            }
        }
        self.call += 1;
        Ok(())
    }
}

impl FamilyConfig for Kdpm2Config {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(Kdpm2::new(self.k.clone(), self.ancestral))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.k.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.k.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn kdpm2_defaults() -> Value {
    merged(
        sigma_keys(),
        json!({"beta_start": 0.00085, "beta_end": 0.012}),
    )
}

/// KDPM2 and KDPM2 a: no `sample` prediction (diffusers raises there).
pub(super) fn kdpm2_config(r: &mut Reader, c: Common, class: &str) -> Result<KConfig, ConfigError> {
    if c.prediction_type == PredictionType::Sample {
        return Err(unsupported_prediction(class, c.prediction_type));
    }
    let ramp = read_ramp(r)?;
    k_config(c, ramp, r)
}

pub(super) fn parse_kdpm2(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    Ok(Arc::new(Kdpm2Config {
        k: kdpm2_config(r, c, "KDPM2DiscreteScheduler")?,
        ancestral: false,
    }))
}

pub(super) fn parse_kdpm2_ancestral(
    r: &mut Reader,
    c: Common,
    _warnings: &mut Vec<String>,
) -> Parsed {
    Ok(Arc::new(Kdpm2Config {
        k: kdpm2_config(r, c, "KDPM2AncestralDiscreteScheduler")?,
        ancestral: true,
    }))
}
