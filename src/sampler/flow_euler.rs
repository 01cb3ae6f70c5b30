//! FlowMatchEulerDiscreteScheduler, the sampler SD3 and Flux ship: Euler steps along the predicted velocity,
//! `x' = x + (σ' − σ)·v`, on a shifted sigma grid (a constant `shift`, or `mu` from the image size with
//! `use_dynamic_shifting`), optionally stretched to `shift_terminal`, replaced by a Karras, exponential or
//! beta ramp, inverted, or stochastic (`x' = (1 − σ')·x0 + σ'·z`, fresh noise every step).

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader, read_ramp};
use super::flow_shift::{FlowShift, Precision, constant_shift, read_flow_shift};
use super::schedule::ScheduleConfig;
use super::sigmas::SigmaRamp;
use super::spacing::linspace;
use super::start::call_sigma;
use super::step_checks::check_step_count;
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

/// Sigmas given to `set_timesteps` instead of the class's own grid.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomSigmas {
    /// A list, one per step (`set_timesteps(sigmas=...)`).
    List(Vec<f64>),
    /// FLUX's pipeline: `linspace(1, 1/n, n)` for n steps.
    Flux,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowEulerConfig {
    /// The training steps only (flow models have no betas).
    pub schedule: ScheduleConfig,
    pub shift: FlowShift,
    pub custom: Option<CustomSigmas>,
    pub ramp: SigmaRamp,
    pub invert_sigmas: bool,
    pub stochastic: bool,
}

pub struct FlowEuler {
    config: FlowEulerConfig,
    timesteps: Vec<f64>,
    /// `steps + 1` f32 sigmas, ending at 0 (1 when inverted).
    sigmas: Vec<f32>,
    index: usize,
    noise: Vec<f32>,
}

/// The training grid's ends as the class's constructor leaves them: f32 `k/N`, shifted in f32 unless the
/// shift is dynamic (so the default grid is shifted twice at its low end, as in diffusers).
pub fn training_bounds(train_steps: usize, shift: Option<f64>) -> (f64, f64) {
    let end = |k: usize| {
        let s = Precision::F32.round(k as f64 / train_steps as f64);
        shift.map_or(s, |shift| constant_shift(shift, s, Precision::F32))
    };
    (end(1), end(train_steps))
}

/// The class's own grid before its shift: `linspace(σ_max·N, σ_min·N, n) / N` in f64.
pub fn default_grid(train_steps: usize, init_shift: Option<f64>, steps: usize) -> Vec<f64> {
    let (min, max) = training_bounds(train_steps, init_shift);
    let n = train_steps as f64;
    linspace(max * n, min * n, steps)
        .into_iter()
        .map(|t| t / n)
        .collect()
}

/// f32 `σ·N`, the timestep the model sees.
pub fn flow_timestep(sigma: f32, train_steps: usize) -> f64 {
    (sigma * train_steps as f32) as f64
}

impl FlowEulerConfig {
    /// The shifted f64 sigmas of `steps` steps, before the f32 cast.
    fn shifted(&self, steps: usize) -> Result<Vec<f64>, ConfigError> {
        let n = self.schedule.num_train_timesteps;
        let (mut s, precision) = match &self.custom {
            Some(CustomSigmas::List(list)) => {
                if list.len() != steps {
                    return Err(ConfigError::Steps {
                        steps,
                        reason: format!("the sampler's `sigmas` list has {} values", list.len()),
                    });
                }
                (f32_values(list), Precision::F32)
            }
            Some(CustomSigmas::Flux) => (
                f32_values(&linspace(1.0, 1.0 / steps as f64, steps)),
                Precision::F32,
            ),
            None => {
                let init_shift = self.shift.dynamic.is_none().then_some(self.shift.shift);
                (default_grid(n, init_shift, steps), Precision::F64)
            }
        };
        self.shift.apply(&mut s, precision);
        let (hi, lo) = (s[0], s[s.len() - 1]);
        Ok(self.ramp.ramp(lo, hi, steps).unwrap_or(s))
    }
}

fn f32_values(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| x as f32 as f64).collect()
}

impl FlowEuler {
    pub fn new(config: FlowEulerConfig) -> Self {
        Self {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            index: 0,
            noise: Vec::new(),
        }
    }
}

impl Scheduler for FlowEuler {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let n = self.config.schedule.num_train_timesteps;
        check_step_count(steps, n)?;
        let mut sigmas: Vec<f32> = self
            .config
            .shifted(steps)?
            .iter()
            .map(|&s| s as f32)
            .collect();
        if self.config.invert_sigmas {
            sigmas.iter_mut().for_each(|s| *s = 1.0 - *s);
        }
        self.timesteps = sigmas.iter().map(|&s| flow_timestep(s, n)).collect();
        sigmas.push(if self.config.invert_sigmas { 1.0 } else { 0.0 });
        self.sigmas = sigmas;
        self.index = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        call_sigma(&self.sigmas, self.timesteps.len(), call).map(Noising::flow)
    }

    fn start_at(&mut self, call: usize) -> Option<Noising> {
        let noising = self.noising_at(call)?;
        self.index = call;
        Some(noising)
    }

    fn is_stochastic(&self) -> bool {
        self.config.stochastic
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
        if self.config.stochastic {
            self.noise.resize(sample.len(), 0.0);
            noise.fill(i, &mut self.noise);
        }
        // dt is an f32 difference in diffusers.
        let dt = (next - s) as f64;
        for (j, ((x, d), &v)) in sample
            .iter_mut()
            .zip(x0.iter_mut())
            .zip(model_output)
            .enumerate()
        {
            let (xv, v) = (*x as f64, v as f64);
            let denoised = xv - s as f64 * v;
            *d = denoised as f32;
            *x = if self.config.stochastic {
                let next = next as f64;
                (1.0 - next) * denoised + next * self.noise[j] as f64
            } else {
                xv + dt * v
            } as f32;
        }
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for FlowEulerConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(FlowEuler::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        PredictionType::FlowPrediction
    }
}

// Settings: the class's defaults and parser.

pub(super) fn flow_euler_defaults() -> Value {
    json!({
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": false,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "invert_sigmas": false,
        "shift_terminal": null,
        "use_karras_sigmas": false,
        "use_exponential_sigmas": false,
        "use_beta_sigmas": false,
        "time_shift_type": "exponential",
        "stochastic_sampling": false,
        // set_timesteps' arguments, which pipelines pass: the image size's shift and their own sigmas.
        "mu": null,
        "sigmas": null,
    })
}

pub(super) fn parse_flow_euler(r: &mut Reader, c: Common, warnings: &mut Vec<String>) -> Parsed {
    let custom = match r.value("sigmas") {
        Value::Null => None,
        Value::String(s) if s == "flux" => Some(CustomSigmas::Flux),
        _ => Some(CustomSigmas::List(sigma_list(r, "sigmas")?)),
    };
    Ok(Arc::new(FlowEulerConfig {
        schedule: c.schedule,
        shift: read_flow_shift(r, "shift", true, warnings)?,
        custom,
        ramp: read_ramp(r)?,
        invert_sigmas: r.bool("invert_sigmas")?,
        stochastic: r.bool("stochastic_sampling")?,
    }))
}

/// A list of sigmas in (0, 1].
fn sigma_list(r: &Reader, key: &str) -> Result<Vec<f64>, ConfigError> {
    let expected = "\"flux\" or a non-empty list of sigmas in (0, 1], one per step";
    match r.value(key) {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_f64().filter(|s| *s > 0.0 && *s <= 1.0))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| r.invalid(key, expected)),
        _ => Err(r.invalid(key, expected)),
    }
}
