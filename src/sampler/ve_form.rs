//! Any variance-preserving or σ-space sampler on a variance-exploding score model (NCSN++, diffusers'
//! ScoreSdeVePipeline): the sampler runs on the model's own σ table (`ScheduleConfig::ve_sigmas`: its σ range
//! evenly in log σ, ᾱ = 1 / (1 + σ²)) as if on a noise-predicting model, and this wrapper stands between them. The
//! model is called with the VE sample x_VE = x_VP / √ᾱ (what the σ-space samplers hold already) and σ as its
//! timestep; its score s becomes the noise the sampler expects, eps = −σ·s. So Euler, Heun and DPM++ step in σ
//! space exactly as k-diffusion does on a VE denoiser D(x, σ) = x + σ²·s, and the x_t-space samplers (DDIM,
//! DPM-Solver) take the same model through the usual VE ↔ VP change of variables. Every sampler starts from the
//! model's prior, x = σ_max·z, so samplers of both kinds solve the same problem.

use std::sync::Arc;

use super::family::FamilyConfig;
use super::schedule::{NoiseSchedule, ScheduleConfig};
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError};

/// Whether a class runs on a VE model through this form: every class that predicts noise on a training table.
/// The EDM classes precondition for a model of their own kind, the flow classes know only velocities, LCM needs
/// a consistency model; the predictor-corrector sampler takes the score as it is.
pub fn runs_on_ve(class: &str) -> bool {
    !(class.starts_with("EDM")
        || super::registry::is_flow_match(class)
        || class == "LCMScheduler"
        || class == super::score_sde_ve::CLASS)
}

/// A sampler's settings on a VE model.
#[derive(Debug)]
pub struct VeFormConfig {
    pub inner: Arc<dyn FamilyConfig>,
}

impl PartialEq for VeFormConfig {
    fn eq(&self, other: &Self) -> bool {
        self.inner.as_ref().dyn_eq(other.inner.as_ref().as_any())
    }
}

impl FamilyConfig for VeFormConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(VeForm::new(
            self.inner.build(),
            NoiseSchedule::new(self.inner.schedule()),
        ))
    }

    fn schedule(&self) -> &ScheduleConfig {
        self.inner.schedule()
    }

    fn prediction_type(&self) -> PredictionType {
        PredictionType::Score
    }
}

/// The noise level of model call `call` of `scheduler`: its own sigma where it steps between sigmas, else the
/// training table's at the call's timestep.
pub fn call_sigma(scheduler: &dyn Scheduler, call: usize, schedule: &NoiseSchedule) -> f64 {
    if let Some(&s) = scheduler.sigmas().and_then(|s| s.get(call)) {
        return f64::from(s);
    }
    let t = scheduler.timesteps().get(call).copied().unwrap_or(0.0);
    let alpha_bar = schedule.alpha_bar_at(t);
    ((1.0 - alpha_bar) / alpha_bar).sqrt()
}

pub struct VeForm {
    inner: Box<dyn Scheduler>,
    schedule: NoiseSchedule,
    /// σ of every model call, then the σ the last call steps to.
    sigmas: Vec<f32>,
    /// The same σ, as the timesteps the model is called with.
    timesteps: Vec<f64>,
    call: usize,
    converted: Vec<f32>,
}

impl VeForm {
    pub fn new(inner: Box<dyn Scheduler>, schedule: NoiseSchedule) -> Self {
        Self {
            inner,
            schedule,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            call: 0,
            converted: Vec::new(),
        }
    }

    /// Reads the inner sampler's calls (again, for a sampler whose calls grow as it runs).
    fn read_calls(&mut self) {
        let calls = self.inner.timesteps().len();
        let inner = self.inner.as_ref();
        let mut sigmas: Vec<f32> = (0..calls)
            .map(|c| call_sigma(inner, c, &self.schedule) as f32)
            .collect();
        let last = inner.sigmas().and_then(|s| s.get(calls)).copied();
        sigmas.push(last.unwrap_or(0.0));
        self.timesteps = sigmas[..calls].iter().map(|&s| f64::from(s)).collect();
        self.sigmas = sigmas;
    }

    /// The score `score` of the current call as the noise the inner sampler expects.
    fn as_noise(&mut self, score: &[f32]) -> Vec<f32> {
        let sigma = self.sigmas.get(self.call).copied().unwrap_or(0.0);
        let mut eps = std::mem::take(&mut self.converted);
        eps.clear();
        eps.extend(score.iter().map(|&s| -sigma * s));
        eps
    }
}

impl Scheduler for VeForm {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        self.inner.set_steps(steps)?;
        self.call = 0;
        self.read_calls();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// The model takes x_VE: the inner sampler's input (x_VP) times √(1 + σ²).
    fn model_input_divisor(&self) -> f32 {
        let sigma = self.sigmas.get(self.call).copied().unwrap_or(0.0);
        self.inner.model_input_divisor() / (1.0 + sigma * sigma).sqrt()
    }

    /// Every sampler starts from the VE prior, x_VE = σ_max·z, in its own sample space (x_VE for the σ-space
    /// samplers; x_VE / √(1 + σ²) for those in x_t space, which would otherwise start from unit noise).
    fn init_noise_sigma(&self) -> f32 {
        let first = self.sigmas.first().copied().unwrap_or(1.0);
        first * self.inner.model_input_divisor() / (1.0 + first * first).sqrt()
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn order_at(&self, i: usize) -> usize {
        self.inner.order_at(i)
    }

    fn is_stochastic(&self) -> bool {
        self.inner.is_stochastic()
    }

    fn prepare(&mut self, sample: &mut [f32], noise: &mut dyn NoiseSource) {
        self.inner.prepare(sample, noise);
    }

    fn takes_uncond(&self) -> bool {
        self.inner.takes_uncond()
    }

    fn calls_depend_on_sample(&self) -> bool {
        self.inner.calls_depend_on_sample()
    }

    fn set_uncond(&mut self, uncond: &[f32]) {
        let eps = self.as_noise(uncond);
        self.inner.set_uncond(&eps);
        self.converted = eps;
    }

    fn draws_noise_at(&self, i: usize) -> bool {
        self.inner.draws_noise_at(i)
    }

    fn calls_per_step(&self) -> usize {
        self.inner.calls_per_step()
    }

    fn start_at(&mut self, call: usize) -> Option<Noising> {
        let noising = self.inner.start_at(call)?;
        self.call = call;
        Some(noising)
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        self.inner.noising_at(call)
    }

    fn step(
        &mut self,
        model_output: &[f32],
        sample: &mut [f32],
        x0: &mut [f32],
        batch: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<(), StepError> {
        let eps = self.as_noise(model_output);
        let stepped = self.inner.step(&eps, sample, x0, batch, noise);
        self.converted = eps;
        stepped?;
        self.call += 1;
        if self.inner.calls_depend_on_sample() {
            self.read_calls();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::schedule::VeSigmas;

    #[test]
    fn a_ve_table_keeps_its_small_sigmas_exact() {
        let config = ScheduleConfig {
            num_train_timesteps: 2000,
            ve_sigmas: Some(VeSigmas {
                sigma_min: 0.01,
                sigma_max: 50.0,
            }),
            ..ScheduleConfig::default()
        };
        let schedule = NoiseSchedule::new(&config);
        let sigmas = schedule.train_sigmas();
        assert!((sigmas[0] - 0.01).abs() < 1e-8, "{}", sigmas[0]);
        assert!((sigmas[1999] - 50.0).abs() < 5e-5, "{}", sigmas[1999]);
        let a = schedule.alpha_bar_at(0.0);
        assert!((((1.0 - a) / a).sqrt() - 0.01).abs() < 1e-9);
        // Halfway between two entries σ is their geometric mean.
        let a = schedule.alpha_bar_at(999.5);
        let want = (f64::from(sigmas[999]) * f64::from(sigmas[1000])).sqrt();
        assert!((((1.0 - a) / a).sqrt() / want - 1.0).abs() < 1e-6);
    }
}
