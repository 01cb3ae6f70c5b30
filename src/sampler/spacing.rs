//! Timestep spacing, computed with numpy's exact arithmetic (`linspace`, `arange`, round half to even)
//! so the integer timesteps match diffusers to the last step.

use serde::{Deserialize, Serialize};

/// How inference timesteps are spread over the training steps (diffusers' `timestep_spacing`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

impl TimestepSpacing {
    /// Every name, as diffusers' configs spell them.
    pub const NAMES: &'static [&'static str] = <Self as strum::VariantNames>::VARIANTS;

    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}

/// `numpy.linspace(start, stop, num)` (endpoint included), value for value.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut out: Vec<f64> = (0..num)
        .map(|i| {
            if step == 0.0 {
                (i as f64 / div) * delta + start
            } else {
                i as f64 * step + start
            }
        })
        .collect();
    out[num - 1] = stop;
    out
}

/// `numpy.arange(start, stop, step)` for floats: numpy fills `start + i * (x1 - x0)`.
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}

/// Timesteps of DDPMScheduler and DDIMScheduler.
pub fn ddpm_ddim_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    steps: usize,
    steps_offset: i64,
) -> Vec<i64> {
    match spacing {
        TimestepSpacing::Leading => {
            let ratio = (train_steps / steps) as i64;
            (0..steps as i64)
                .rev()
                .map(|i| i * ratio + steps_offset)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let n = train_steps as f64;
            arange(n, 0.0, -n / steps as f64)
                .into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect()
        }
        TimestepSpacing::Linspace => linspace(0.0, (train_steps - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
    }
}

/// Timesteps of DPMSolverMultistepScheduler: `steps + 1` points with the last dropped for leading and
/// linspace. `last_timestep` is `num_train_timesteps` unless `lambda_min_clipped` cuts it.
pub fn dpm_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    last_timestep: usize,
    steps: usize,
    steps_offset: i64,
) -> Vec<i64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut t: Vec<i64> = linspace(0.0, last_timestep as f64 - 1.0, steps + 1)
                .into_iter()
                .rev()
                .map(|t| t.round_ties_even() as i64)
                .collect();
            t.pop();
            t
        }
        TimestepSpacing::Leading => {
            let ratio = (last_timestep / (steps + 1)) as i64;
            let mut t: Vec<i64> = (0..=steps as i64)
                .rev()
                .map(|i| i * ratio + steps_offset)
                .collect();
            t.pop();
            t
        }
        TimestepSpacing::Trailing => {
            let ratio = train_steps as f64 / steps as f64;
            arange(last_timestep as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_spacings_match_the_documented_examples() {
        use TimestepSpacing::*;
        assert_eq!(
            ddpm_ddim_timesteps(Leading, 1000, 10, 1),
            [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
        );
        assert_eq!(
            ddpm_ddim_timesteps(Linspace, 1000, 10, 0),
            [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
        );
        assert_eq!(
            ddpm_ddim_timesteps(Trailing, 1000, 16, 0)[..5],
            [999, 937, 874, 811, 749]
        );
    }

    #[test]
    fn dpm_spacings_drop_the_last_point() {
        use TimestepSpacing::*;
        assert_eq!(
            dpm_timesteps(Leading, 1000, 1000, 10, 0),
            [900, 810, 720, 630, 540, 450, 360, 270, 180, 90]
        );
        assert_eq!(
            dpm_timesteps(Linspace, 1000, 1000, 10, 0),
            [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
        );
    }
}
