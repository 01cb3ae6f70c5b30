//! Flow-matching schedules (rectified flow: x_σ = (1 − σ)·x0 + σ·ε, the model predicts the velocity
//! ε − x0): diffusers' timestep shift, its resolution-dependent form (`mu`), the stretch to
//! `shift_terminal`, and the sigma grids each class starts from.
//!
//! diffusers evaluates the shift in float64 on its own grids but in float32 on sigmas a pipeline passes
//! (NumPy 2 keeps float32 with Python scalars); [`Precision`] reproduces both, one rounding per operation.

use serde_json::Value;

use super::PredictionType;
use super::family::{Common, ConfigError, Reader, check_time_shift_type, read_ramp};
use super::sigmas::SigmaRamp;
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

/// Which grid a multistep class builds with `use_flow_sigmas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowGrid {
    /// DPM-Solver and DEIS: [`multistep_flow_sigmas`] with `flow_shift` (or exp(mu)).
    Multistep,
    /// UniPC: [`unipc_flow_sigmas`].
    UniPc,
}

/// The flow mode of a multistep class: its grid and shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowSigmas {
    pub grid: FlowGrid,
    pub shift: FlowShift,
}

impl FlowSigmas {
    /// The `steps` f64 sigmas the class starts from (before its f32 cast).
    pub fn sigmas(&self, steps: usize, train_steps: usize) -> Vec<f64> {
        match self.grid {
            FlowGrid::Multistep => {
                // diffusers sets flow_shift = exp(mu) when given mu.
                let shift = self
                    .shift
                    .dynamic
                    .map_or(self.shift.shift, |(_, mu)| mu.exp());
                multistep_flow_sigmas(steps, train_steps, shift)
            }
            FlowGrid::UniPc => unipc_flow_sigmas(steps, train_steps, &self.shift),
        }
    }
}

// Settings.

/// The shift settings every flow class reads: `shift_key` (`shift` or `flow_shift`), `use_dynamic_shifting`
/// with `mu` and `time_shift_type`, and `shift_terminal` where the class has it.
///
/// FlowMatchEuler and UniPC need `mu` under dynamic shifting (`mu_required`) and take either
/// `time_shift_type`; DPM-Solver and DEIS set `flow_shift = exp(mu)` when given one and keep `flow_shift`
/// otherwise, as diffusers does.
pub(super) fn read_flow_shift(
    r: &mut Reader,
    shift_key: &str,
    mu_required: bool,
    warnings: &mut Vec<String>,
) -> Result<FlowShift, ConfigError> {
    let linear_allowed = mu_required;
    let shift = r.positive(shift_key)?;
    let mu = match r.value("mu") {
        Value::Null => None,
        _ => Some(
            r.number("mu")
                .ok_or_else(|| r.invalid("mu", "a number (the shift of the image size)"))?,
        ),
    };
    // Classes without a key (FlowMatchHeun has only `shift`) read it as off.
    let has = |r: &Reader, key: &str| !r.value(key).is_null();
    let kind = if has(r, "time_shift_type") {
        Some(r.pick::<TimeShiftType>("time_shift_type")?)
    } else {
        None
    };
    let dynamic = if has(r, "use_dynamic_shifting") && r.bool("use_dynamic_shifting")? {
        let kind = kind.unwrap_or(TimeShiftType::Exponential);
        if kind == TimeShiftType::Linear && !linear_allowed {
            return Err(r.invalid(
                "time_shift_type",
                "\"exponential\" (this class sets flow_shift = exp(mu))",
            ));
        }
        match mu {
            Some(mu) => Some((kind, mu)),
            None if !mu_required => None,
            None => {
                return Err(ConfigError::InvalidValue {
                    key: "mu".into(),
                    got: "nothing".into(),
                    expected: "a number: use_dynamic_shifting shifts by the image size's mu, which a \
                               pipeline computes from its resolution (FLUX: 0.5 at 256 tokens to 1.15 at 4096)"
                        .into(),
                });
            }
        }
    } else {
        if mu.is_some() {
            warnings.push(format!(
                "mu is used only with use_dynamic_shifting; the constant {shift_key} applies"
            ));
        }
        None
    };
    let terminal = match r.value("shift_terminal") {
        Value::Null => None,
        _ => Some(r.in_range("shift_terminal", 0.0, 1.0 - f64::EPSILON)?),
    };
    Ok(FlowShift {
        shift,
        dynamic,
        terminal,
    })
}

/// `use_flow_sigmas`: the flow-matching mode of DPM-Solver, UniPC and DEIS (what Sana and Wan ship), with its
/// shift; `None` on the variance-preserving schedules, where the flow switches must be off.
pub(super) fn read_flow_mode(
    r: &mut Reader,
    c: &Common,
    grid: FlowGrid,
    warnings: &mut Vec<String>,
) -> Result<Option<FlowSigmas>, ConfigError> {
    let flow_prediction = c.prediction_type == PredictionType::FlowPrediction;
    let unsupported = |key: &str, reason: &str| ConfigError::Unsupported {
        key: key.into(),
        got: if key == "prediction_type" {
            "\"flow_prediction\""
        } else {
            "true"
        }
        .into(),
        reason: reason.into(),
    };
    if !r.bool("use_flow_sigmas")? {
        if flow_prediction {
            return Err(unsupported(
                "prediction_type",
                "a flow-prediction model needs use_flow_sigmas = true here (or a flow sampler: flow-euler, flow-heun)",
            ));
        }
        if r.bool("use_dynamic_shifting")? {
            return Err(unsupported(
                "use_dynamic_shifting",
                "dynamic shifting moves flow sigmas; set use_flow_sigmas = true for a flow-matching model",
            ));
        }
        if !r.value("mu").is_null() {
            return Err(unsupported(
                "mu",
                "mu shifts flow sigmas under use_dynamic_shifting; this is a variance-preserving schedule",
            ));
        }
        check_time_shift_type(r)?;
        return Ok(None);
    }
    if !flow_prediction {
        return Err(unsupported(
            "use_flow_sigmas",
            "flow sigmas are for flow-matching models, which predict the velocity: set prediction_type = \"flow_prediction\"",
        ));
    }
    if read_ramp(r)? != SigmaRamp::Interpolated {
        return Err(unsupported(
            "use_flow_sigmas",
            "with Karras, exponential or beta sigmas diffusers builds them from the VP training schedule and \
             reads them as flow sigmas; for those ramps on a flow model use flow-euler (use_karras_sigmas, ...)",
        ));
    }
    let shift = read_flow_shift(r, "flow_shift", grid == FlowGrid::UniPc, warnings)?;
    Ok(Some(FlowSigmas { grid, shift }))
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
        // 1024² → 4096 tokens → 1.15; 512² → 1024 tokens → 0.63.
        assert!((calculate_shift(4096, 256, 4096, 0.5, 1.15) - 1.15).abs() < 1e-12);
        assert!((calculate_shift(1024, 256, 4096, 0.5, 1.15) - 0.63).abs() < 1e-12);
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
