//! Sigma-space helpers shared by the k-diffusion style samplers (as k-diffusion keeps them): Karras and
//! exponential sigma ramps, numpy's `interp` on the training sigmas, and sigma → fractional timestep.

use super::ConfigError;
use super::schedule::NoiseSchedule;
use super::sigma_schedule::{ModelSigmas, ScheduleParams, SigmaSchedule};
use super::spacing::linspace;

/// Which ramp replaces the interpolated sigmas (diffusers' `use_karras_sigmas` / `use_exponential_sigmas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaRamp {
    /// The training sigmas interpolated at the spaced timesteps.
    Interpolated,
    Karras,
    Exponential,
    /// `use_beta_sigmas`: the Beta(0.6, 0.6) quantiles between the bounds (Lee et al. 2024).
    Beta,
    /// A web UI's schedule (`sigma_schedule`) on the model's own sigma table.
    Schedule(SigmaSchedule),
}

impl SigmaRamp {
    /// `steps` sigmas from `sigma_max` down to `sigma_min` (`None` for `Interpolated` and for a web UI's
    /// schedule, which [`Self::ramp_on`] makes).
    pub fn ramp(self, sigma_min: f64, sigma_max: f64, steps: usize) -> Option<Vec<f64>> {
        match self {
            Self::Interpolated | Self::Schedule(_) => None,
            Self::Karras => Some(karras(sigma_min, sigma_max, steps, 7.0)),
            Self::Exponential => Some(exponential(sigma_min, sigma_max, steps)),
            Self::Beta => Some(beta(sigma_min, sigma_max, steps, 0.6, 0.6)),
        }
    }
}

impl SigmaRamp {
    /// `steps` sigmas of the ramp on the training sigmas `train` (ascending), bounded by its ends.
    pub fn ramp_on(self, train: &[f32], steps: usize) -> Result<Option<Vec<f64>>, ConfigError> {
        match (self, train.first(), train.last()) {
            (Self::Schedule(schedule), _, _) => web_ui_sigmas(schedule, steps, train).map(Some),
            (_, Some(&lo), Some(&hi)) => Ok(self.ramp(f64::from(lo), f64::from(hi), steps)),
            _ => Ok(None),
        }
    }
}

/// The sigmas a solver stepping on the training table runs through: the user's own list (`sigmas`, one per
/// step; a final 0 is the solver's own end and is dropped), else the ramp's (`None`: the class's own).
pub fn ramp_or_list(
    ramp: SigmaRamp,
    list: Option<&[f64]>,
    train: &[f32],
    steps: usize,
) -> Result<Option<Vec<f64>>, ConfigError> {
    let Some(list) = list else {
        return ramp.ramp_on(train, steps);
    };
    let given = match list.split_last() {
        Some((&0.0, rest)) => rest,
        _ => list,
    };
    if given.len() != steps {
        return Err(ConfigError::Steps {
            steps,
            reason: format!(
                "the sampler's `sigmas` list has {} sigmas above 0",
                given.len()
            ),
        });
    }
    Ok(Some(given.to_vec()))
}

/// Whether the model is called at the nearest timestep to each sigma (Karras ramps, a web UI's schedule or
/// one's own sigmas, as ComfyUI does) rather than the truncated one (diffusers' int64 cast).
pub fn nearest_timestep(ramp: SigmaRamp, list: bool) -> bool {
    list || matches!(ramp, SigmaRamp::Karras | SigmaRamp::Schedule(_))
}

/// `steps` sigmas of a web-UI schedule on the model's training sigmas, the final 0 left to the class (which
/// appends its own); a schedule that gives another count for these steps is an error, not a silent change of
/// the step count.
pub fn web_ui_sigmas(
    schedule: SigmaSchedule,
    steps: usize,
    train_sigmas: &[f32],
) -> Result<Vec<f64>, ConfigError> {
    let model = ModelSigmas::from_sigmas(train_sigmas);
    let fail = |reason: String| ConfigError::Unsupported {
        key: "sigma_schedule".into(),
        got: format!("{:?}", schedule.name()),
        reason,
    };
    let mut sigmas = schedule
        .sigmas(steps, &model, &ScheduleParams::default())
        .map_err(fail)?;
    if sigmas.last() == Some(&0.0) {
        sigmas.pop();
    }
    if sigmas.len() != steps {
        return Err(fail(format!(
            "it gives {} noise levels for {steps} steps (ComfyUI would run that many steps); choose another \
             step count",
            sigmas.len()
        )));
    }
    Ok(sigmas.iter().map(|&v| f64::from(v)).collect())
}

/// Karras et al. 2022 sigmas: `steps` points from sigma_max to sigma_min, uniform in sigma^(1/rho).
pub fn karras(sigma_min: f64, sigma_max: f64, steps: usize, rho: f64) -> Vec<f64> {
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// `steps` sigmas from sigma_max to sigma_min, uniform in log sigma.
pub fn exponential(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    linspace(sigma_max.ln(), sigma_min.ln(), steps)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// diffusers' `_convert_to_beta`: `sigma_min + ppf(1 - ramp; a, b) * (sigma_max - sigma_min)`.
pub fn beta(sigma_min: f64, sigma_max: f64, steps: usize, a: f64, b: f64) -> Vec<f64> {
    linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|r| sigma_min + beta_ppf(1.0 - r, a, b) * (sigma_max - sigma_min))
        .collect()
}

/// The inverse of the regularized incomplete beta function, by bisection (the CDF is monotone;
/// 100 halvings reach the f64 resolution of [0, 1]).
pub fn beta_ppf(p: f64, a: f64, b: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if beta_cdf(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The regularized incomplete beta function I_x(a, b) (Numerical Recipes' continued fraction, with the
/// symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where it converges faster).
pub fn beta_cdf(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut h = d;
    for m in 1..1000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = G[1..]
        .iter()
        .enumerate()
        .fold(G[0], |acc, (i, &g)| acc + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// `numpy.interp(x, arange(len(table)), table)`: linear interpolation, clamped at both ends.
pub fn interp(x: f64, table: &[f32]) -> f64 {
    let last = table.len() - 1;
    if x <= 0.0 {
        return table[0] as f64;
    }
    if x >= last as f64 {
        return table[last] as f64;
    }
    let lo = x.floor() as usize;
    let w = x - lo as f64;
    let (a, b) = (table[lo] as f64, table[lo + 1] as f64);
    // numpy's formula: slope * (x - xp[lo]) + fp[lo].
    (b - a) * w + a
}

/// `np.log` of the float32 training sigmas, kept in float32 as diffusers' `log_sigmas` array is.
pub fn log_sigmas_f32(train_sigmas: &[f32]) -> Vec<f64> {
    train_sigmas
        .iter()
        .map(|&s| (s as f64).ln() as f32 as f64)
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep of a sigma, by linear interpolation in
/// log sigma between the two training steps around it (clamped to the table).
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // One training step (num_train_timesteps = 1) has nothing to interpolate between.
    let Some(last) = log_sigmas.len().checked_sub(2) else {
        return 0.0;
    };
    let lo = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(last);
    let (low, high) = (log_sigmas[lo], log_sigmas[lo + 1]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * lo as f64 + w * (lo + 1) as f64
}

/// alpha, sigma and lambda = log(alpha / sigma) of a DPM sigma (sigma = sqrt((1 − ᾱ)/ᾱ)).
pub(super) fn alpha_sigma_lambda(s: f64) -> (f64, f64, f64) {
    SigmaSpace::Vp.alpha_sigma_lambda(s)
}

/// What a multistep solver's sigma means: diffusers' `_sigma_to_alpha_sigma_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaSpace {
    /// Variance preserving: x = alpha·x0 + sigma·eps with sigma_here = sigma/alpha.
    Vp,
    /// Rectified flow (`use_flow_sigmas`): x = (1 − s)·x0 + s·eps.
    Flow,
}

impl SigmaSpace {
    /// Flow sigmas when a class runs with `use_flow_sigmas`, else the VP ones.
    pub fn of(flow: bool) -> Self {
        if flow { Self::Flow } else { Self::Vp }
    }

    /// alpha, sigma and lambda = log(alpha / sigma) at the solver's sigma `s`.
    pub fn alpha_sigma_lambda(self, s: f64) -> (f64, f64, f64) {
        let (alpha, sigma) = match self {
            Self::Vp => {
                let alpha = 1.0 / (s * s + 1.0).sqrt();
                (alpha, s * alpha)
            }
            Self::Flow => (1.0 - s, s),
        };
        (alpha, sigma, alpha.ln() - sigma.ln())
    }

    /// DEIS's rho = sigma / alpha (the VP sigma itself).
    pub fn rho(self, s: f64) -> f64 {
        match self {
            Self::Vp => s,
            Self::Flow => s / (1.0 - s),
        }
    }
}

/// The last training timestep that `lambda_min_clipped` allows, plus one.
pub(super) fn lambda_clipped_end(schedule: &NoiseSchedule, clip: f64) -> usize {
    // lambda decreases with t; count the timesteps (from the end) whose lambda is below the clip.
    let below = schedule
        .alphas_cumprod()
        .iter()
        .rev()
        .map(|&a| (a.sqrt() as f64).ln() - ((1.0 - a).sqrt() as f64).ln())
        .take_while(|&lambda| lambda < clip)
        .count();
    schedule.num_train_timesteps() - below
}

/// sigma_up and sigma_down of the step from `s` to `next` (eta 1), f32 as in diffusers.
pub(super) fn ancestral_sigmas(s: f32, next: f32) -> (f32, f32) {
    let up = (next * next * (s * s - next * next) / (s * s)).sqrt();
    let down = (next * next - up * up).max(0.0).sqrt();
    // With a huge sigma_max (cosine: 2e4) the f32 difference cancels to 0 for a small next sigma;
    // its exact value next²/s keeps DPM2 a's log-midpoint finite (diffusers gives NaN there).
    let down = if down == 0.0 && next > 0.0 {
        next * next / s
    } else {
        down
    };
    (up, down)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karras_ends_at_the_bounds_and_decreases() {
        let s = karras(0.03, 14.6, 10, 7.0);
        assert!((s[0] - 14.6).abs() < 1e-12 && (s[9] - 0.03).abs() < 1e-12);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn exponential_is_uniform_in_log_sigma() {
        let s = exponential(0.1, 10.0, 5);
        let ratios: Vec<f64> = s.windows(2).map(|w| w[0] / w[1]).collect();
        assert!(ratios.iter().all(|r| (r - ratios[0]).abs() < 1e-12));
        assert!((s[2] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn beta_ppf_inverts_the_cdf_and_is_symmetric() {
        // Beta(1, 1) is uniform; Beta(0.6, 0.6) is symmetric about 1/2.
        assert!((beta_ppf(0.3, 1.0, 1.0) - 0.3).abs() < 1e-12);
        assert!((beta_ppf(0.5, 0.6, 0.6) - 0.5).abs() < 1e-12);
        let (q, r) = (beta_ppf(0.1, 0.6, 0.6), beta_ppf(0.9, 0.6, 0.6));
        assert!((q + r - 1.0).abs() < 1e-12);
        assert!((beta_cdf(q, 0.6, 0.6) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn interp_clamps_and_interpolates() {
        let t = [1.0f32, 2.0, 4.0];
        assert_eq!(interp(-1.0, &t), 1.0);
        assert_eq!(interp(0.5, &t), 1.5);
        assert_eq!(interp(1.25, &t), 2.5);
        assert_eq!(interp(7.0, &t), 4.0);
    }

    #[test]
    fn sigma_to_t_inverts_the_table_at_training_steps() {
        let sig: Vec<f32> = (1..=50).map(|i| i as f32 * 0.1).collect();
        let logs = log_sigmas_f32(&sig);
        for t in [0usize, 7, 30, 49] {
            assert!(
                (sigma_to_t(sig[t] as f64, &logs) - t as f64).abs() < 1e-4,
                "{t}"
            );
        }
        assert_eq!(sigma_to_t(0.0, &logs), 0.0);
        assert_eq!(sigma_to_t(100.0, &logs), 49.0);
    }
}
