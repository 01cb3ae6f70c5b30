//! DPMSolverSDEScheduler (A1111 "DPM++ SDE", ComfyUI `dpmpp_sde`; k-diffusion's `sample_dpmpp_sde`
//! with eta 1, r 1/2): per interval an ancestral step to the log-sigma midpoint, a second model call
//! there, and an ancestral step over the whole interval from the stored sample. The noise of both is
//! one Brownian path (see [`NoiseSource::brownian`]). The last interval is one Euler call to 0.

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader, merged, read_ramp, sigma_keys};
use super::kdiff::{
    KConfig, denoised, init_noise_sigma, input_divisor, k_config, unsupported_prediction,
};
use super::schedule::ScheduleConfig;
use super::sigmas::sigma_to_t;
use super::start::{call_sigma, starts_a_step};
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

#[derive(Debug, Clone, PartialEq)]
pub struct DpmSdeConfig {
    pub k: KConfig,
    /// diffusers' step keyword `s_noise`: the scale of the added noise.
    pub s_noise: f64,
}

pub struct DpmSde {
    config: DpmSdeConfig,
    /// `steps` sigmas and the final 0, f32 as in diffusers.
    sigmas: Vec<f32>,
    /// diffusers' interleaved `sigmas` (for display and comparison).
    interleaved: Vec<f32>,
    timesteps: Vec<f64>,
    init_noise_sigma: f32,
    call: usize,
    /// The sample at the start of the interval (the second stage steps from it).
    start: Vec<f32>,
    noise: Vec<f32>,
}

/// The log-sigma midpoint of `a` and `b`: exp(−(t + (t' − t)/2)) with t = −log a, t' = −log b.
fn midpoint(a: f64, b: f64) -> f64 {
    let (t, t_next) = (-a.ln(), -b.ln());
    (-(t + (t_next - t) * 0.5)).exp()
}

/// The ancestral step of `x` from sigma `from` towards `to` (eta 1) with data prediction `d`:
/// the coefficients of x and d, and sigma_up.
fn ancestral(from: f64, to: f64) -> (f64, f64, f64) {
    let up = to.min((to * to * (from * from - to * to) / (from * from)).sqrt());
    let down = (to * to - up * up).sqrt();
    (down / from, -(down.ln() - from.ln()).exp_m1(), up)
}

impl DpmSde {
    pub fn new(config: DpmSdeConfig) -> Self {
        Self {
            config,
            sigmas: Vec::new(),
            interleaved: Vec::new(),
            timesteps: Vec::new(),
            init_noise_sigma: 1.0,
            call: 0,
            start: Vec::new(),
            noise: Vec::new(),
        }
    }

    /// (interval, second call?) of model call `c`.
    fn stage(c: usize) -> (usize, bool) {
        (c / 2, c % 2 == 1)
    }

    /// The sigma model call `c` is made at.
    fn call_sigma(&self, c: usize) -> Option<f64> {
        let (i, second) = Self::stage(c);
        let s = *self.sigmas.get(i)? as f64;
        if second {
            Some(midpoint(s, *self.sigmas.get(i + 1)? as f64))
        } else {
            Some(s)
        }
    }
}

impl Scheduler for DpmSde {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let s = self.config.k.schedule_with(steps, false, false, false)?;
        // The midpoints' timesteps come from the f64 schedule, before the sigmas become f32.
        let mids = s
            .sigmas
            .windows(2)
            .map(|w| sigma_to_t(midpoint(w[0], w[1]), &s.log_sigmas));
        let mut timesteps = Vec::with_capacity(2 * steps - 1);
        for (t, mid) in s.timesteps.iter().zip(mids.map(Some).chain([None])) {
            timesteps.push(*t);
            timesteps.extend(mid);
        }
        let mut sigmas: Vec<f32> = s.sigmas.iter().map(|&x| x as f32).collect();
        sigmas.push(0.0);
        self.interleaved = std::iter::once(sigmas[0])
            .chain(sigmas[1..steps].iter().flat_map(|&v| [v, v]))
            .chain([0.0])
            .collect();
        self.init_noise_sigma = init_noise_sigma(&sigmas, self.config.k.timestep_spacing);
        self.sigmas = sigmas;
        self.timesteps = timesteps;
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
        self.call_sigma(self.call)
            .map_or(1.0, |s| input_divisor(s as f32))
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
        true
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
        let c = self.call;
        check_step(c, self.timesteps.len(), model_output, sample, x0, batch)?;
        let (i, second) = Self::stage(c);
        let (s, next) = (self.sigmas[i] as f64, self.sigmas[i + 1] as f64);
        let at = self.call_sigma(c).unwrap_or(s);
        let prediction = self.config.k.prediction_type;
        for ((d, &o), &x) in x0.iter_mut().zip(model_output).zip(sample.iter()) {
            *d = denoised(prediction, o as f64, x as f64, at) as f32;
        }
        if next == 0.0 {
            // The last interval: an Euler step to 0 lands on the x0 prediction.
            for (x, &d) in sample.iter_mut().zip(x0.iter()) {
                let xv = *x as f64;
                *x = (xv + (xv - d as f64) / s * (next - s)) as f32;
            }
        } else {
            let to = if second { next } else { midpoint(s, next) };
            if !second {
                self.start.clear();
                self.start.extend_from_slice(sample);
            }
            let (cx, cd, up) = ancestral(s, to);
            self.noise.resize(sample.len(), 0.0);
            noise.brownian(c, s, to, &mut self.noise);
            let up = up * self.config.s_noise;
            for (((x, &d), &x_start), &z) in sample
                .iter_mut()
                .zip(x0.iter())
                .zip(&self.start)
                .zip(&self.noise)
            {
                *x = (cx * x_start as f64 + cd * d as f64 + up * z as f64) as f32;
            }
        }
        self.call += 1;
        Ok(())
    }
}

impl FamilyConfig for DpmSdeConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(DpmSde::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.k.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.k.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn dpm_sde_defaults() -> Value {
    merged(
        sigma_keys(),
        json!({"beta_start": 0.00085, "beta_end": 0.012, "noise_sampler_seed": null, "s_noise": 1.0}),
    )
}

pub(super) fn parse_dpm_sde(r: &mut Reader, c: Common, warnings: &mut Vec<String>) -> Parsed {
    if c.prediction_type == PredictionType::Sample {
        return Err(unsupported_prediction(
            "DPMSolverSDEScheduler",
            c.prediction_type,
        ));
    }
    let seed = r.value("noise_sampler_seed");
    if !seed.is_null() && !seed.is_u64() {
        return Err(r.invalid("noise_sampler_seed", "null or a whole-number seed"));
    }
    if !r.value("noise_sampler_seed").is_null() {
        warnings.push("noise_sampler_seed is ignored: difflab draws each sample's Brownian noise from that sample's own seed".into());
    }
    let ramp = read_ramp(r)?;
    Ok(Arc::new(DpmSdeConfig {
        k: k_config(c, ramp, r)?,
        s_noise: r.non_negative("s_noise")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplerConfig;
    use serde_json::Map;

    #[test]
    fn nfe_is_two_calls_per_interval_but_the_last() {
        let r = SamplerConfig::resolve("dpm++sde-karras", None, &Map::new()).unwrap();
        let mut s = r.config.build();
        for steps in [1, 2, 7, 10] {
            s.set_steps(steps).unwrap();
            assert_eq!(s.timesteps().len(), 2 * steps - 1, "{steps}");
            assert_eq!(s.sigmas().unwrap().len(), 2 * steps, "{steps}");
        }
    }

    #[test]
    fn the_ancestral_step_without_noise_room_is_the_ode_step() {
        // to = from: no step at all.
        let (cx, cd, up) = ancestral(2.0, 2.0);
        assert!((cx - 1.0).abs() < 1e-12 && cd.abs() < 1e-12 && up == 0.0);
        // sigma_down = to²/from, so x moves to (to²/from²)·x + (1 − to²/from²)·d.
        let (cx, cd, _) = ancestral(2.0, 1.0);
        assert!((cx - 0.25).abs() < 1e-12 && (cd - 0.75).abs() < 1e-12);
    }
}
