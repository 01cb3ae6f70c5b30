//! Samplers as diffusers runs them: noise schedules, timestep spacing, DDPM, DDIM, DPM-Solver++ (multistep
//! and singlestep), LCM, the k-diffusion style samplers (Euler, Euler a, Heun, LMS, DPM2, DPM2 a, DPM++ SDE),
//! UniPC, DEIS, PNDM (PLMS) and the EDM ones (EDM Euler, EDM DPM++); [`registry`] lists them all.
//!
//! Pure math: no I/O, no models. Samples and model outputs are f32 batches (what ONNX models give);
//! schedule coefficients are f64, computed from the same f32 `alphas_cumprod` table diffusers uses.

pub mod config;
mod ddim;
mod ddpm;
mod deis;
mod dpm_sde;
mod dpm_singlestep;
mod dpm_solver;
mod edm;
mod euler;
mod euler_ancestral;
pub mod family;
mod flow_euler;
mod flow_heun;
pub mod flow_names;
pub mod flow_shift;
mod heun;
mod k_sampler;
mod kdiff;
mod kdpm2;
pub mod ksampling;
mod lcm;
mod lms;
mod multistep;
pub mod noise;
mod pndm;
mod prediction;
pub mod registry;
pub mod schedule;
pub mod score_sde_ve;
mod settings;
pub mod sigma_schedule;
pub mod sigmas;
mod spacing;
pub mod start;
mod step_checks;
pub mod step_table;
pub mod torch_noise;
mod unipc;
pub mod ve_form;
mod vp_sigmas;

pub use config::SamplerConfig;
pub use ddim::Ddim;
pub use ddpm::Ddpm;
pub use dpm_solver::DpmSolver;
pub use family::{ConfigError, FamilyConfig};
pub use noise::{InjectedNoise, NoiseSource, SeededNoise};
pub use prediction::PredictionType;
pub use schedule::NoiseSchedule;
pub use start::{Noising, begin_call};

/// One sampler, driven step by step by the caller:
/// `set_steps(n)`, then for each of `timesteps()`: call the model, then `step`.
pub trait Scheduler: Send {
    /// Prepares a run of `steps` denoising steps (resets any multistep history).
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError>;

    /// The timesteps the model is called with, one per model call (two-stage samplers such as Heun list
    /// their inner timesteps twice, as diffusers does), so `timesteps().len()` is the NFE.
    /// Fractional for the sigma-space samplers; a model with integer timesteps gets them rounded.
    fn timesteps(&self) -> &[f64];

    /// What diffusers' `scale_model_input` divides the sample by before the next model call
    /// (`sqrt(sigma^2 + 1)` for the sigma-space samplers, 1 for those in x_t space).
    fn model_input_divisor(&self) -> f32 {
        1.0
    }

    /// The standard deviation of the initial noise (diffusers' `init_noise_sigma`): unit-variance noise is
    /// scaled by it before the first step. 1 for samplers in the variance-preserving x_t space.
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// The sigmas the solver steps between (`steps + 1` values), where the scheduler has them.
    fn sigmas(&self) -> Option<&[f32]> {
        None
    }

    /// The solver order used at step `i` (1 for single-step samplers).
    fn order_at(&self, _i: usize) -> usize {
        1
    }

    /// Whether any step draws noise.
    fn is_stochastic(&self) -> bool;

    /// Called once with the initial sample before the first model call: a sampler that changes the sample
    /// before its first call (or runs its own loop) starts here.
    fn prepare(&mut self, _sample: &mut [f32], _noise: &mut dyn NoiseSource) {}

    /// Whether the sampler takes the unconditional model output beside the guided one (the CFG++ family):
    /// the caller then evaluates it even at guidance scale 1 and hands it over with [`Self::set_uncond`]
    /// before each `step`.
    fn takes_uncond(&self) -> bool {
        false
    }

    /// Whether the model calls depend on the sample (an adaptive step size): their count is known only as
    /// the run goes (`timesteps` grows), and each sample must run alone.
    fn calls_depend_on_sample(&self) -> bool {
        false
    }

    /// The unconditional model output of the call the next `step` gets the guided output of.
    fn set_uncond(&mut self, _uncond: &[f32]) {}

    /// Whether step `i` draws noise.
    fn draws_noise_at(&self, _i: usize) -> bool {
        self.is_stochastic()
    }

    /// The timestep step `i` lands on (`None`: the clean sample).
    fn previous_timestep(&self, i: usize) -> Option<f64> {
        self.timesteps().get(i + 1).copied()
    }

    /// The model calls one step of the schedule takes (diffusers' `order`: 2 for Heun, DPM2 and flow Heun), the
    /// unit in which img2img skips steps.
    fn calls_per_step(&self) -> usize {
        1
    }

    /// Starts the schedule set by `set_steps` at model call `call` instead of the first, with no history, as
    /// the img2img pipelines do (`set_begin_index`); the caller steps from `timesteps()[call]`. Returns how a
    /// clean sample is noised to where that call expects it (diffusers' `add_noise` or `scale_noise` at that
    /// timestep), or `None` when the sampler cannot start part-way.
    fn start_at(&mut self, _call: usize) -> Option<Noising> {
        None
    }

    /// How a clean sample is noised to where model call `call` of the schedule expects it (diffusers'
    /// `add_noise` at that call's timestep), without moving the sampler: inpainting re-noises the known region
    /// to the next call's level after every step. `None` when the sampler cannot say.
    fn noising_at(&self, _call: usize) -> Option<Noising> {
        None
    }

    /// Advances `sample` (a batch of `batch` items) in place by one step given the model output at
    /// the current timestep, and writes the prediction of the clean sample (x0) into `x0`.
    /// `noise` is asked for fresh Gaussian noise only when the step needs it.
    fn step(
        &mut self,
        model_output: &[f32],
        sample: &mut [f32],
        x0: &mut [f32],
        batch: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<(), StepError>;
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StepError {
    #[error("step called {taken} times but the schedule has only {steps} steps")]
    PastEnd { taken: usize, steps: usize },
    #[error("step called before set_steps")]
    NotReady,
    #[error("model output has {got} values, the sample has {want}")]
    Length { got: usize, want: usize },
    #[error("x0 buffer has {got} values, the sample has {want}")]
    X0Length { got: usize, want: usize },
    #[error("the sample's {len} values do not split into {batch} equal batch items")]
    Batch { len: usize, batch: usize },
}

/// Checks the buffers handed to [`Scheduler::step`] and that a step is left to take.
fn check_step(
    index: usize,
    steps: usize,
    model_output: &[f32],
    sample: &[f32],
    x0: &[f32],
    batch: usize,
) -> Result<(), StepError> {
    if steps == 0 {
        return Err(StepError::NotReady);
    }
    if index >= steps {
        return Err(StepError::PastEnd {
            taken: index + 1,
            steps,
        });
    }
    if model_output.len() != sample.len() {
        return Err(StepError::Length {
            got: model_output.len(),
            want: sample.len(),
        });
    }
    if x0.len() != sample.len() {
        return Err(StepError::X0Length {
            got: x0.len(),
            want: sample.len(),
        });
    }
    if batch == 0 || !sample.len().is_multiple_of(batch) {
        return Err(StepError::Batch {
            len: sample.len(),
            batch,
        });
    }
    Ok(())
}
