//! Running samplers on models: the denoising loop that drives a [`Scheduler`] with a [`Denoiser`],
//! and the lab that turns an experiment into cells and runs them.

mod baseline;
mod cell_output;
mod clip_gif;
pub mod conditioning;
pub mod difference;
pub mod display;
mod events;
pub mod finish;
pub mod guidance;
pub mod images;
mod lane_step;
pub mod latent_preview;
mod lockstep;
pub mod merge;
pub mod model;
pub mod model_cache;
pub mod plan;
pub mod plots;
pub mod progress;
pub mod reference;
pub mod resize;
pub mod results;
mod reuse;
pub mod runner;
pub mod samples;
pub mod scores;
pub mod scoring;
pub mod shard;
pub mod shard_watch;
mod start_distance;
pub mod start_images;
pub mod tally;
pub mod tensorrt;
pub mod trajectory;

pub use crate::path_error::PathError;
pub use events::{CancelSwitch, ImageKind, LabEvent, LabHandle, RunOptions, start};
pub use plan::{Cell, Plan, plan, plan_run};
pub use results::{CellResult, Results};
pub use runner::run;

use std::time::{Duration, Instant};

use crate::engine::{DenoiseError, Denoiser};
use crate::sampler::{ConfigError, NoiseSource, Scheduler, StepError};
use lane_step::{Halt, advance, model_input};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Denoise(#[from] DenoiseError),
    /// The model's output or the sampler's result is not finite.
    #[error("{0}")]
    NotFinite(String),
    #[error("cancelled")]
    Cancelled,
}

impl From<Halt> for LabError {
    fn from(halt: Halt) -> Self {
        match halt {
            Halt::NotFinite(why) => LabError::NotFinite(why),
            Halt::Step(e) => LabError::Step(e),
        }
    }
}

/// Where the time of one run went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunTiming {
    /// Model evaluations (NFE).
    pub model_calls: usize,
    pub model_time: Duration,
    pub sampler_time: Duration,
}

/// Denoises the batch `x` (initial noise in, samples out) through every timestep of `scheduler`
/// (`set_steps` must have been called). After each step `on_step(i, x0)` sees the x0 prediction; it
/// returns false to cancel.
pub fn denoise(
    scheduler: &mut dyn Scheduler,
    denoiser: &mut dyn Denoiser,
    x: &mut [f32],
    batch: usize,
    noise: &mut dyn NoiseSource,
    mut on_step: impl FnMut(usize, &[f32]) -> bool,
) -> Result<RunTiming, LabError> {
    let mut timing = RunTiming::default();
    let mut out = vec![0.0; x.len()];
    let mut x0 = vec![0.0; x.len()];
    let mut t = vec![0.0; batch];
    let mut input = Vec::with_capacity(x.len());
    scheduler.prepare(x, noise);
    // The count is re-read each step: an adaptive sampler's grows as it runs.
    let mut i = 0;
    while i < scheduler.timesteps().len() {
        t.fill(scheduler.timesteps()[i]);
        let start = Instant::now();
        input.clear();
        model_input(scheduler, x, &mut input);
        denoiser.predict(&input, &t, &mut out)?;
        let model_done = Instant::now();
        advance(scheduler, i, &out, x, &mut x0, batch, noise)?;
        timing.model_calls += 1;
        timing.model_time += model_done - start;
        timing.sampler_time += model_done.elapsed();
        if !on_step(i, &x0) {
            return Err(LabError::Cancelled);
        }
        i += 1;
    }
    Ok(timing)
}
