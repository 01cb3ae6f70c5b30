//! Flow-matching schedules (rectified flow: x_σ = (1 − σ)·x0 + σ·ε, the model predicts the velocity
//! ε − x0): diffusers' timestep shift, its resolution-dependent form (`mu`), the stretch to
//! `shift_terminal`, and the sigma grids each class starts from.
//!
//! diffusers evaluates the shift in float64 on its own grids but in float32 on sigmas a pipeline passes
//! (NumPy 2 keeps float32 with Python scalars); [`Precision`] reproduces both, one rounding per operation.

use super::spacing::linspace;

/// diffusers' `time_shift_type`: how `mu` shifts the sigmas under `use_dynamic_shifting`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
pub enum TimeShiftType {
    /// σ' = e^μ / (e^μ + 1/σ − 1).
    Exponential,
    /// σ' = μ / (μ + 1/σ − 1).
    Linear,
}

/// How sigmas are shifted: by a constant (`shift`, `flow_shift`) or by `mu`, then stretched to end at
/// `shift_terminal`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowShift {
    pub shift: f64,
    /// `use_dynamic_shifting` with the `mu` of the image size.
    pub dynamic: Option<(TimeShiftType, f64)>,
    pub terminal: Option<f64>,
}

/// The float type an operation rounds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F64,
}

impl Precision {
    /// One operation's result in this precision (f32 +, −, ×, ÷ computed in f64 and rounded once are exact).
    pub fn round(self, v: f64) -> f64 {
        match self {
            Self::F32 => v as f32 as f64,
            Self::F64 => v,
        }
    }
}

/// `shift·σ / (1 + (shift − 1)·σ)`: SD3's constant shift.
pub fn constant_shift(shift: f64, s: f64, p: Precision) -> f64 {
    let r = |v| p.round(v);
    r(r(r(shift) * s) / r(1.0 + r(r(shift - 1.0) * s)))
}

impl FlowShift {
    /// The shifted sigmas, as diffusers' `set_timesteps` applies `time_shift` or the constant shift and then
    /// `stretch_shift_to_terminal`.
    pub fn apply(&self, sigmas: &mut [f64], p: Precision) {
        let r = |v| p.round(v);
        for s in sigmas.iter_mut() {
            *s = match self.dynamic {
                Some((kind, mu)) => {
                    let a = r(match kind {
                        TimeShiftType::Exponential => mu.exp(),
                        TimeShiftType::Linear => mu,
                    });
                    r(a / r(a + r(r(1.0 / *s) - 1.0)))
                }
                None => constant_shift(self.shift, *s, p),
            };
        }
        if let (Some(terminal), Some(&last)) = (self.terminal, sigmas.last()) {
            let scale = r(r(1.0 - last) / r(1.0 - terminal));
            for s in sigmas.iter_mut() {
                *s = r(1.0 - r(r(1.0 - *s) / scale));
            }
        }
    }
}

/// FLUX's `calculate_shift`: `mu` grows linearly with the number of image tokens, from `base_shift` at
/// `base_seq_len` to `max_shift` at `max_seq_len`.
pub fn calculate_shift(
    image_seq_len: usize,
    base_seq_len: usize,
    max_seq_len: usize,
    base_shift: f64,
    max_shift: f64,
) -> f64 {
    let m = (max_shift - base_shift) / (max_seq_len as f64 - base_seq_len as f64);
    let b = base_shift - m * base_seq_len as f64;
    image_seq_len as f64 * m + b
}

/// The `steps` sigmas DPM-Solver and DEIS start from with `use_flow_sigmas` (f64, before their f32 cast):
/// `1 − linspace(1, 1/N, n + 1)` shifted by `flow_shift`, reversed, the final 0 dropped; so the first is
/// shift(1 − 1/N), never 1.
pub fn multistep_flow_sigmas(steps: usize, train_steps: usize, flow_shift: f64) -> Vec<f64> {
    let mut sigmas: Vec<f64> = linspace(1.0, 1.0 / train_steps as f64, steps + 1)
        .into_iter()
        .map(|a| constant_shift(flow_shift, 1.0 - a, Precision::F64))
        .collect();
    sigmas.reverse();
    sigmas.pop();
    sigmas
}

/// The `steps` sigmas UniPC starts from with `use_flow_sigmas`: `linspace(1, 1/N, n + 1)` without its last
/// point, shifted; a first sigma within 1e-6 of 1 is moved 1e-6 down so log(1 − σ) stays finite.
pub fn unipc_flow_sigmas(steps: usize, train_steps: usize, shift: &FlowShift) -> Vec<f64> {
    let mut sigmas = linspace(1.0, 1.0 / train_steps as f64, steps + 1);
    sigmas.pop();
    shift.apply(&mut sigmas, Precision::F64);
    if let Some(first) = sigmas.first_mut()
        && (*first - 1.0).abs() < 1e-6
    {
        *first -= 1e-6;
    }
    sigmas
}

/// diffusers' integer flow timesteps: `int64(σ·N)`, a truncation of the f64 product.
pub fn truncated_timesteps(sigmas: &[f64], train_steps: usize) -> Vec<i64> {
    sigmas
        .iter()
        .map(|&s| (s * train_steps as f64) as i64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd3_shift_moves_sigmas_up() {
        assert_eq!(constant_shift(3.0, 1.0, Precision::F64), 1.0);
        assert!((constant_shift(3.0, 0.5, Precision::F64) - 0.75).abs() < 1e-15);
        assert_eq!(constant_shift(1.0, 0.3, Precision::F64), 0.3);
    }

    #[test]
    fn flux_mu_at_its_reference_sizes() {
        // 1024² → 4096 tokens → 1.15; 512² → 1024 tokens → 0.6625.
        assert!((calculate_shift(4096, 256, 4096, 0.5, 1.15) - 1.15).abs() < 1e-12);
        assert!((calculate_shift(1024, 256, 4096, 0.5, 1.15) - 0.6625).abs() < 1e-12);
    }

    #[test]
    fn terminal_stretch_ends_at_the_terminal() {
        let shift = FlowShift {
            shift: 3.0,
            dynamic: None,
            terminal: Some(0.2),
        };
        let mut s = linspace(1.0, 0.1, 5);
        shift.apply(&mut s, Precision::F64);
        assert!((s[4] - 0.2).abs() < 1e-12, "{s:?}");
        assert_eq!(s[0], 1.0);
    }

    #[test]
    fn dpm_flow_grid_starts_below_one_and_truncates() {
        let s = multistep_flow_sigmas(20, 1000, 3.0);
        assert_eq!(s.len(), 20);
        assert!(s[0] < 1.0 && s[0] > 0.999, "{s:?}");
        assert_eq!(truncated_timesteps(&s, 1000)[..3], [999, 982, 963]);
    }
}
