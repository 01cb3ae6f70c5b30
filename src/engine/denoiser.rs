use super::condition::Condition;
use crate::sampler::PredictionType;

/// What a denoiser is and where it runs, for display.
#[derive(Debug, Clone, PartialEq)]
pub struct DenoiserInfo {
    /// A short name: the model file, or "analytic gaussian mixture".
    pub name: String,
    /// The execution provider that really ran (e.g. "CPUExecutionProvider"), or "builtin".
    pub provider: String,
    /// One sample's shape: channels, height, width; a video model's clip is C, F·H, W (its [C, F, H, W] values,
    /// the frames stacked on the height axis).
    pub sample_shape: [usize; 3],
    /// Frames per sample: 1 for an image model.
    pub frames: usize,
    /// Input channels fed beside each sample (an inpainting U-Net's mask and masked-image latents), 0 for most:
    /// each item of the model's input is then the sample followed by these channels.
    pub extra_channels: usize,
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
    /// The conditioning given does not fit the model.
    #[error("{0}")]
    Condition(String),
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

    /// How many times the model itself has run so far, where one predict call may take several runs (a
    /// scalar-timestep model runs once per distinct timestep); `None` when every call is one run.
    fn runs(&self) -> Option<usize> {
        None
    }

    /// Whether the model takes conditioning (class labels, text embeddings, ...).
    fn is_conditional(&self) -> bool {
        false
    }

    /// Whether the model takes the guidance scale as an input (guidance-distilled FLUX) instead of
    /// classifier-free guidance's two predictions.
    fn embeds_guidance(&self) -> bool {
        false
    }

    /// The embedded guidance scale of each item of the next call (models that embed guidance).
    fn set_guidance(&mut self, _per_item: &[f32]) {}

    /// How many ControlNets the model holds (a graph holding a U-Net and its ControlNets, or a U-Net fed by
    /// ControlNets exported on their own), each taking a control image and a conditioning scale; 0 for most.
    fn controlnets(&self) -> usize {
        0
    }

    /// Each item's control images (3 × H × W in [0, 1]) and ControlNet scales for the next call: item by item,
    /// one of each per ControlNet in the model's order.
    fn set_control(&mut self, _images: &[f32], _scales: &[f32]) {}

    /// Sets the table of conditions that [`Denoiser::predict_with`]'s rows name. A model without conditioning
    /// inputs accepts only empty conditions.
    fn set_conditions(&mut self, conditions: Vec<Condition>) -> Result<(), DenoiseError> {
        match conditions.iter().find(|c| **c != Condition::default()) {
            None => Ok(()),
            Some(c) => Err(DenoiseError::Condition(format!(
                "{} takes no conditioning, but was given {:?}",
                self.info().name,
                c.roles()
            ))),
        }
    }

    /// [`Denoiser::predict`] with batch item i conditioned on row `rows[i]` of the conditions set.
    fn predict_with(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        rows: &[usize],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        let _ = rows;
        self.predict(sample, timesteps, out)
    }
}

/// Items `0..n` in groups of equal `key`: each group in item order, the groups in the order of their first items.
/// A model that takes one timestep (or ControlNet scale) a call runs once per group.
pub(crate) fn groups_by<K: PartialEq>(n: usize, key: impl Fn(usize) -> K) -> Vec<Vec<usize>> {
    let mut done = vec![false; n];
    let mut groups = Vec::new();
    for first in 0..n {
        if done[first] {
            continue;
        }
        let k = key(first);
        let group: Vec<usize> = (first..n).filter(|&i| !done[i] && key(i) == k).collect();
        for &i in &group {
            done[i] = true;
        }
        groups.push(group);
    }
    groups
}

/// Copies `per` values of each of `group`'s items out of `data`, in the group's order.
pub(crate) fn gather(data: &[f32], group: &[usize], per: usize) -> Vec<f32> {
    (group.iter())
        .flat_map(|&i| data[i * per..(i + 1) * per].iter().copied())
        .collect()
}

/// Copies each of `group`'s `per` values of `part` back to its item's place in `out`.
pub(crate) fn scatter(part: &[f32], group: &[usize], per: usize, out: &mut [f32]) {
    for (k, &i) in group.iter().enumerate() {
        out[i * per..(i + 1) * per].copy_from_slice(&part[k * per..(k + 1) * per]);
    }
}

/// [`batch_size`], and that `out` holds as many values as `sample`.
pub(crate) fn checked_batch(
    sample: &[f32],
    out: &[f32],
    shape: [usize; 3],
    timesteps: usize,
) -> Result<usize, DenoiseError> {
    let b = batch_size(sample.len(), shape, timesteps)?;
    if out.len() != sample.len() {
        return Err(DenoiseError::OutputLength {
            expected: sample.len(),
            got: out.len(),
        });
    }
    Ok(b)
}

/// Checks that `sample` is a whole batch of `shape` with one timestep per item; returns the batch size.
pub(crate) fn batch_size(
    sample_len: usize,
    shape: [usize; 3],
    timesteps: usize,
) -> Result<usize, DenoiseError> {
    let per_item: usize = shape.iter().product();
    if per_item == 0 || !sample_len.is_multiple_of(per_item) || sample_len / per_item != timesteps {
        return Err(DenoiseError::BatchShape {
            sample_len,
            shape,
            timesteps,
        });
    }
    Ok(timesteps)
}

/// How many of a model output's values are NaN or infinite; `None` when all are finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFinite {
    pub nan: usize,
    pub pos_inf: usize,
    pub neg_inf: usize,
    pub total: usize,
}

impl NonFinite {
    /// Counts the values that are not finite; `None` when every value is.
    pub fn count(values: &[f32]) -> Option<NonFinite> {
        if values.iter().all(|v| v.is_finite()) {
            return None;
        }
        let mut n = NonFinite {
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
            total: values.len(),
        };
        for v in values {
            if v.is_nan() {
                n.nan += 1;
            } else if *v == f32::INFINITY {
                n.pos_inf += 1;
            } else if *v == f32::NEG_INFINITY {
                n.neg_inf += 1;
            }
        }
        Some(n)
    }
}

impl std::fmt::Display for NonFinite {
    /// "512 of 512 values are NaN", or "3 of 512 values are NaN, 2 are +Inf" when kinds mix.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds = [
            (self.nan, "NaN"),
            (self.pos_inf, "+Inf"),
            (self.neg_inf, "-Inf"),
        ];
        let mut first = true;
        for (count, kind) in kinds.into_iter().filter(|(c, _)| *c > 0) {
            if first {
                write!(f, "{count} of {} values are {kind}", self.total)?;
                first = false;
            } else {
                write!(f, ", {count} are {kind}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::NonFinite;

    #[test]
    fn finite_values_pass_and_kinds_are_counted_apart() {
        assert_eq!(NonFinite::count(&[0.0, 1.0, -3.5]), None);
        let all_nan = NonFinite::count(&[f32::NAN; 4]).map(|n| n.to_string());
        assert_eq!(all_nan.as_deref(), Some("4 of 4 values are NaN"));
        let mixed = NonFinite::count(&[
            f32::NAN,
            f32::INFINITY,
            f32::INFINITY,
            1.0,
            f32::NEG_INFINITY,
        ]);
        assert_eq!(
            mixed.map(|n| n.to_string()).as_deref(),
            Some("1 of 5 values are NaN, 2 are +Inf, 1 are -Inf")
        );
    }
}
