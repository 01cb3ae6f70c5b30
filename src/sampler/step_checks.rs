//! The checks every scheduler makes of a step count and of the timesteps it gives, with errors that say
//! what to change.

use super::ConfigError;
use super::spacing::{TimestepSpacing, ddpm_ddim_timesteps};

/// DDPM's and DDIM's timesteps for `steps` steps, or why that step count cannot be used.
pub(super) fn checked_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    steps: usize,
    steps_offset: i64,
) -> Result<Vec<i64>, ConfigError> {
    let timesteps = ddpm_ddim_timesteps(
        spacing,
        train_steps,
        check_step_count(steps, train_steps)?,
        steps_offset,
    );
    check_timesteps(&timesteps, train_steps, steps)?;
    Ok(timesteps)
}

/// Rejects step counts diffusers rejects: zero, or more than the training steps.
pub(super) fn check_step_count(steps: usize, train_steps: usize) -> Result<usize, ConfigError> {
    if steps == 0 {
        return Err(ConfigError::Steps {
            steps,
            reason: "at least one step is needed".into(),
        });
    }
    if steps > train_steps {
        return Err(ConfigError::Steps {
            steps,
            reason: format!("the model was trained with num_train_timesteps = {train_steps}"),
        });
    }
    Ok(steps)
}

/// Rejects timestep arrays that leave the training range (e.g. leading spacing with steps_offset 1 and
/// as many steps as training steps gives t = 1000; diffusers issue 10003).
pub(super) fn check_timesteps(
    timesteps: &[i64],
    train_steps: usize,
    steps: usize,
) -> Result<(), ConfigError> {
    if let Some(&bad) = timesteps
        .iter()
        .find(|&&t| t < 0 || t >= train_steps as i64)
    {
        return Err(ConfigError::Steps {
            steps,
            reason: format!(
                "it gives timestep {bad}, outside 0..{train_steps} (lower steps_offset or use timestep_spacing \"trailing\")"
            ),
        });
    }
    if timesteps.len() != steps {
        return Err(ConfigError::Steps {
            steps,
            reason: format!("the spacing gives {} timesteps", timesteps.len()),
        });
    }
    Ok(())
}
