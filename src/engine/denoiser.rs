use crate::sampler::PredictionType;

/// What a denoiser is and where it runs, for display.
#[derive(Debug, Clone, PartialEq)]
pub struct DenoiserInfo {
    /// A short name: the model file, or "analytic gaussian mixture".
    pub name: String,
    /// The execution provider that really ran (e.g. "CPUExecutionProvider"), or "builtin".
    pub provider: String,
    /// One sample's shape: channels, height, width.
    pub sample_shape: [usize; 3],
    pub prediction_type: PredictionType,
}

#[derive(Debug, thiserror::Error)]
pub enum DenoiseError {
    #[error(
        "the batch holds {sample_len} values, not a whole number of samples of shape {shape:?} with one timestep each ({timesteps} timesteps given)"
    )]
    BatchShape {
        sample_len: usize,
        shape: [usize; 3],
        timesteps: usize,
    },
    #[error("the output buffer holds {got} values; the batch needs {expected}")]
    OutputLength { expected: usize, got: usize },
    #[error(
        "the model's output '{name}' came back with shape {got:?}, not the sample's {expected:?}"
    )]
    OutputShape {
        name: String,
        got: Vec<i64>,
        expected: Vec<usize>,
    },
    #[error("the model failed: {0}")]
    Model(String),
}

/// A model that, given noisy samples and their timesteps, predicts epsilon, v or x0
/// (see [`Denoiser::info`]'s `prediction_type`).
///
/// Samples are a batch of `B × C × H × W` f32 values in row-major order with one timestep per batch
/// item; the prediction has the same shape. Timesteps are the scheduler's training-step indices
/// (0..num_train_timesteps), carried as f64 so continuous-time models fit too.
pub trait Denoiser: Send {
    fn info(&self) -> DenoiserInfo;

    /// Writes the model output for `sample` at `timesteps` into `out` (same length as `sample`).
    fn predict(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        out: &mut [f32],
    ) -> Result<(), DenoiseError>;
}

/// Checks that `sample` is a whole batch of `shape` with one timestep per item; returns the batch size.
pub(crate) fn batch_size(
    sample_len: usize,
    shape: [usize; 3],
    timesteps: usize,
) -> Result<usize, DenoiseError> {
    let per_item: usize = shape.iter().product();
    if per_item == 0 || sample_len % per_item != 0 || sample_len / per_item != timesteps {
        return Err(DenoiseError::BatchShape {
            sample_len,
            shape,
            timesteps,
        });
    }
    Ok(timesteps)
}
