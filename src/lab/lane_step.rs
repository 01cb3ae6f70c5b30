//! One denoising step of a batch of samples, as every denoising loop of the lab takes it: the model's
//! input from the samples, then, from the model's (guided) output, the sampler's step, both checked to be
//! finite. [`super::denoise`] and the lab's lockstep batches both step through here.

use crate::engine::NonFinite;
use crate::sampler::{NoiseSource, Scheduler, StepError};

/// Why a step did not advance its samples.
#[derive(Debug, thiserror::Error)]
pub enum Halt {
    /// The model's output or the sampler's result is not finite: the message says which, where and how.
    #[error("{0}")]
    NotFinite(String),
    #[error(transparent)]
    Step(#[from] StepError),
}

/// Appends what the model sees for samples `x`: diffusers' scale_model_input, which scales the
/// sigma-space samplers' x back to unit variance.
pub fn model_input(scheduler: &dyn Scheduler, x: &[f32], input: &mut Vec<f32>) {
    let divisor = scheduler.model_input_divisor();
    input.extend(x.iter().map(|&v| v / divisor));
}

/// Steps the `items` samples `x` at the scheduler's step `step` (0-based) from the model's `output`;
/// `x0` gets the sampler's prediction of the clean samples.
pub fn advance(
    scheduler: &mut dyn Scheduler,
    step: usize,
    output: &[f32],
    x: &mut [f32],
    x0: &mut [f32],
    items: usize,
    noise: &mut dyn NoiseSource,
) -> Result<(), Halt> {
    let steps = scheduler.timesteps().len();
    let t = scheduler.timesteps()[step];
    if let Some(bad) = NonFinite::count(output) {
        return Err(Halt::NotFinite(format!(
            "model output is not finite at step {}/{steps}, t = {t}: {bad}",
            step + 1
        )));
    }
    scheduler.step(output, x, x0, items, noise)?;
    // A schedule at the edge of what diffusers accepts (betas near 1) can turn finite model output
    // into NaN: that fails the cell too, never a "finished" cell of garbage.
    if let Some(bad) = NonFinite::count(x) {
        return Err(Halt::NotFinite(format!(
            "the sampler's result is not finite after step {}/{steps}, t = {t}: {bad}; check the noise \
             schedule (beta_start, beta_end, num_train_timesteps)",
            step + 1
        )));
    }
    Ok(())
}
