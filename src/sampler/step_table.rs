//! What a sampler does step by step: the timestep the model sees, the sigmas it steps between, its order
//! and whether it draws noise. `difflab schedule` prints it; the dashboard's Schedules view plots it.

use super::{ConfigError, NoiseSchedule, SamplerConfig};

/// One step of a sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRow {
    pub step: usize,
    pub timestep: f64,
    pub next_timestep: Option<f64>,
    /// The noise level the step starts from, and the one it ends at (σ of the VP schedule where the
    /// sampler steps in timesteps).
    pub sigma: f64,
    pub next_sigma: f64,
    pub order: usize,
    pub noise: bool,
}

/// Every step of `config` run with `steps` inference steps.
pub fn step_rows(config: &SamplerConfig, steps: usize) -> Result<Vec<StepRow>, ConfigError> {
    let mut scheduler = config.build();
    scheduler.set_steps(steps)?;
    let schedule = NoiseSchedule::new(config.schedule());
    let sigma_of = |t: Option<f64>| match t {
        Some(t) => {
            let a = schedule.alpha_bar(t as usize);
            ((1.0 - a) / a).sqrt()
        }
        None => 0.0,
    };
    let rows = (0..scheduler.timesteps().len())
        .map(|i| {
            let timestep = scheduler.timesteps()[i];
            let next_timestep = scheduler.previous_timestep(i);
            let (sigma, next_sigma) = match scheduler.sigmas() {
                Some(s) => (f64::from(s[i]), f64::from(s[i + 1])),
                None => (sigma_of(Some(timestep)), sigma_of(next_timestep)),
            };
            StepRow {
                step: i,
                timestep,
                next_timestep,
                sigma,
                next_sigma,
                order: scheduler.order_at(i),
                noise: scheduler.draws_noise_at(i),
            }
        })
        .collect();
    Ok(rows)
}
