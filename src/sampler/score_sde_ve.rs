//! ScoreSdeVeScheduler: the predictor-corrector sampler of a variance-exploding score model (Song et al., as
//! diffusers' ScoreSdeVePipeline runs NCSN++). The model takes σ as its timestep and returns the score
//! ∇ log p_σ(x). Each step runs `correct_steps` Langevin corrector calls (step size set by `snr` from the score's
//! and the noise's norms), then one reverse-diffusion predictor call; every call draws fresh noise, in that order.
//! The last predictor step returns its mean (no noise), as the pipeline returns `prev_sample_mean`.
//!
//! Norms are taken per item: the pipeline averages them over its batch, so a seed reproduces its image alone
//! (`batch_size` 1), which is how difflab batches seeds without coupling them.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader};
use super::schedule::{ScheduleConfig, VeSigmas, torch_linspace_f32};
use super::{ConfigError, NoiseSource, PredictionType, Scheduler, StepError, check_step};

pub const CLASS: &str = "ScoreSdeVeScheduler";

/// diffusers' ScoreSdeVeScheduler settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSdeVeConfig {
    /// The corrector's signal-to-noise ratio: its Langevin step size is 2 (snr · |z| / |score|)².
    pub snr: f64,
    pub sigma_min: f64,
    pub sigma_max: f64,
    /// The continuous time the schedule ends at (it starts at 1).
    pub sampling_eps: f64,
    /// Corrector calls before each predictor call.
    pub correct_steps: usize,
    /// The model's σ table (`num_train_timesteps` and the σ range), which the σ-space samplers run on.
    pub schedule: ScheduleConfig,
}

impl Default for ScoreSdeVeConfig {
    /// diffusers' defaults (NCSN++ on CelebA-HQ: σ from 0.01 to 1348).
    fn default() -> Self {
        Self {
            snr: 0.15,
            sigma_min: 0.01,
            sigma_max: 1348.0,
            sampling_eps: 1e-5,
            correct_steps: 1,
            schedule: ve_table(2000, 0.01, 1348.0),
        }
    }
}

/// The σ table of a VE model with `n` training steps.
fn ve_table(n: usize, sigma_min: f64, sigma_max: f64) -> ScheduleConfig {
    ScheduleConfig {
        num_train_timesteps: n,
        ve_sigmas: Some(VeSigmas {
            sigma_min,
            sigma_max,
        }),
        ..ScheduleConfig::default()
    }
}

pub struct ScoreSdeVe {
    config: ScoreSdeVeConfig,
    /// Continuous times from 1 down to `sampling_eps`, one per step.
    times: Vec<f32>,
    /// σ of each step: what the model is called with.
    sigmas: Vec<f32>,
    /// The predictor's σ grid, indexed by ⌊t · (steps − 1)⌋.
    discrete: Vec<f32>,
    /// σ of every model call, as the timesteps the model takes.
    calls: Vec<f64>,
    /// The same σ in f32, then 0.
    call_sigmas: Vec<f32>,
    call: usize,
    noise: Vec<f32>,
}

impl ScoreSdeVe {
    pub fn new(config: ScoreSdeVeConfig) -> Self {
        Self {
            config,
            times: Vec::new(),
            sigmas: Vec::new(),
            discrete: Vec::new(),
            calls: Vec::new(),
            call_sigmas: Vec::new(),
            call: 0,
            noise: Vec::new(),
        }
    }

    /// The σ of each step (diffusers' `sigmas`).
    pub fn step_sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The predictor's σ grid (diffusers' `discrete_sigmas`).
    pub fn discrete_sigmas(&self) -> &[f32] {
        &self.discrete
    }

    /// The continuous times of the steps (diffusers' `timesteps`).
    pub fn times(&self) -> &[f32] {
        &self.times
    }

    /// The predictor's σ and the one below it on the grid, at step `i` (0 below the grid's first).
    fn predictor_sigmas(&self, i: usize) -> (f32, f32) {
        let last = (self.times.len() - 1) as f32;
        let k = (self.times[i] * last) as usize;
        let below = if k == 0 { 0.0 } else { self.discrete[k - 1] };
        (self.discrete[k], below)
    }
}

impl Scheduler for ScoreSdeVe {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        if steps < 2 {
            return Err(ConfigError::Steps {
                steps,
                reason: "the predictor-corrector sampler needs at least 2 steps".into(),
            });
        }
        let c = &self.config;
        let (min, max) = (c.sigma_min as f32, c.sigma_max as f32);
        let ratio = (c.sigma_max / c.sigma_min) as f32;
        self.times = torch_linspace_f32(1.0, c.sampling_eps as f32, steps);
        self.sigmas = self.times.iter().map(|&t| min * ratio.powf(t)).collect();
        let logs = torch_linspace_f32(min.ln(), max.ln(), steps);
        self.discrete = logs.iter().map(|l| l.exp()).collect();
        let per_step = c.correct_steps + 1;
        self.calls = (self.sigmas.iter())
            .flat_map(|&s| std::iter::repeat_n(s as f64, per_step))
            .collect();
        self.call_sigmas = self.calls.iter().map(|&s| s as f32).collect();
        self.call_sigmas.push(0.0);
        self.call = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.calls
    }

    fn init_noise_sigma(&self) -> f32 {
        self.config.sigma_max as f32
    }

    /// σ of every call, then 0: the last step returns the clean mean.
    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.call_sigmas)
    }

    fn is_stochastic(&self) -> bool {
        true
    }

    fn calls_per_step(&self) -> usize {
        self.config.correct_steps + 1
    }

    fn step(
        &mut self,
        model_output: &[f32],
        sample: &mut [f32],
        x0: &mut [f32],
        batch: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<(), StepError> {
        let call = self.call;
        check_step(call, self.calls.len(), model_output, sample, x0, batch)?;
        let per_step = self.config.correct_steps + 1;
        let (i, sub) = (call / per_step, call % per_step);
        self.noise.resize(sample.len(), 0.0);
        noise.fill(call, &mut self.noise);
        // Tweedie: the clean sample the score points to, for previews.
        let sigma = self.sigmas[i];
        for ((d, &x), &s) in x0.iter_mut().zip(sample.iter()).zip(model_output) {
            *d = x + sigma * sigma * s;
        }
        let per_item = sample.len() / batch;
        let items = (sample.chunks_mut(per_item))
            .zip(model_output.chunks(per_item))
            .zip(self.noise.chunks(per_item));
        if sub < self.config.correct_steps {
            let snr = self.config.snr as f32;
            for ((x, score), z) in items {
                let step = 2.0 * (snr * norm(z) / norm(score)).powi(2);
                let spread = (2.0 * step).sqrt();
                for ((x, &s), &z) in x.iter_mut().zip(score).zip(z) {
                    *x = (*x + step * s) + spread * z;
                }
            }
        } else {
            let (s, below) = self.predictor_sigmas(i);
            let diffusion = (s * s - below * below).sqrt();
            // The last step returns the mean: the pipeline's result is `prev_sample_mean`.
            let spread = if i + 1 == self.sigmas.len() {
                0.0
            } else {
                diffusion
            };
            for ((x, score), z) in items {
                for ((x, &g), &z) in x.iter_mut().zip(score).zip(z) {
                    *x = (*x + diffusion * diffusion * g) + spread * z;
                }
            }
        }
        self.call += 1;
        Ok(())
    }
}

/// The Euclidean norm, accumulated in f64.
fn norm(values: &[f32]) -> f32 {
    values
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt() as f32
}

impl FamilyConfig for ScoreSdeVeConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(ScoreSdeVe::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        PredictionType::Score
    }
}

// Settings: the class's defaults and parser.

pub(super) fn score_sde_ve_defaults() -> Value {
    json!({
        "num_train_timesteps": 2000,
        "snr": 0.15,
        "sigma_min": 0.01,
        "sigma_max": 1348.0,
        "sampling_eps": 1e-5,
        "correct_steps": 1,
    })
}

pub(super) fn parse_score_sde_ve(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let (sigma_min, sigma_max) = read_sigma_range(r)?;
    Ok(Arc::new(ScoreSdeVeConfig {
        snr: r.positive("snr")?,
        sigma_min,
        sigma_max,
        sampling_eps: r.in_range("sampling_eps", 0.0, 1.0)?,
        correct_steps: r.count("correct_steps", 0)?,
        schedule: ve_table(c.schedule.num_train_timesteps, sigma_min, sigma_max),
    }))
}

/// `sigma_min` and `sigma_max` of a VE model: positive, in order.
pub(super) fn read_sigma_range(r: &mut Reader) -> Result<(f64, f64), ConfigError> {
    let sigma_min = r.positive("sigma_min")?;
    let sigma_max = r.positive("sigma_max")?;
    if sigma_max <= sigma_min {
        return Err(r.invalid(
            "sigma_max",
            &format!("a number above sigma_min ({sigma_min})"),
        ));
    }
    Ok((sigma_min, sigma_max))
}

/// A model's σ range and table size, when its scheduler config is a ScoreSdeVeScheduler (missing keys take
/// diffusers' defaults); an error names a bad value.
pub fn ve_sigmas_of(base: &Map<String, Value>) -> Option<Result<(VeSigmas, usize), ConfigError>> {
    if base.get("_class_name").and_then(Value::as_str) != Some(CLASS) {
        return None;
    }
    let Value::Object(mut settings) = score_sde_ve_defaults() else {
        unreachable!("a literal object")
    };
    settings.extend(base.clone());
    let mut r = Reader::new(&settings);
    let range = read_sigma_range(&mut r).and_then(|(sigma_min, sigma_max)| {
        let n = r.count("num_train_timesteps", 2)?;
        Ok((
            VeSigmas {
                sigma_min,
                sigma_max,
            },
            n,
        ))
    });
    Some(range)
}
