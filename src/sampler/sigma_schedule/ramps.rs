//! Closed-form schedules between two bounds, in float32 as k-diffusion computes them on torch tensors: Karras,
//! exponential, polyexponential, KL-optimal, Laplace and VP.

use super::append_zero;
use crate::sampler::schedule::torch_linspace_f32;

/// Karras et al. 2022: uniform in σ^(1/ρ).
pub fn karras(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f32> {
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    let span = (min_inv - max_inv) as f32;
    let ramp = torch_linspace_f32(0.0, 1.0, n);
    append_zero(
        ramp.iter()
            .map(|&r| (max_inv as f32 + r * span).powf(rho as f32))
            .collect(),
    )
}

/// Uniform in log σ.
pub fn exponential(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f32> {
    let logs = torch_linspace_f32(sigma_max.ln() as f32, sigma_min.ln() as f32, n);
    append_zero(logs.iter().map(|l| l.exp()).collect())
}

/// log σ along a ρ-th power ramp (ρ = 1: exponential).
pub fn polyexponential(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f32> {
    let span = (sigma_max.ln() - sigma_min.ln()) as f32;
    let ramp = torch_linspace_f32(1.0, 0.0, n);
    append_zero(
        ramp.iter()
            .map(|&r| (r.powf(rho as f32) * span + sigma_min.ln() as f32).exp())
            .collect(),
    )
}

/// Sabour et al. 2024's KL-optimal schedule: uniform in arctan σ.
pub fn kl_optimal(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f32> {
    let (lo, hi) = (sigma_min.atan() as f32, sigma_max.atan() as f32);
    let last = n.saturating_sub(1).max(1) as f32;
    append_zero(
        (0..n)
            .map(|i| {
                let w = i as f32 / last;
                (w * lo + (1.0 - w) * hi).tan()
            })
            .collect(),
    )
}

/// Laplace-distributed log σ (Hang et al. 2024), clamped to the bounds; no 0 appended.
pub fn laplace(n: usize, sigma_min: f64, sigma_max: f64, mu: f64, beta: f64) -> Vec<f32> {
    let (lo, hi) = (sigma_min as f32, sigma_max as f32);
    torch_linspace_f32(0.0, 1.0, n)
        .iter()
        .map(|&x| {
            let centred = 0.5 - x;
            let sign = if centred > 0.0 {
                1.0
            } else if centred < 0.0 {
                -1.0
            } else {
                0.0
            };
            let log = (1.0 - 2.0 * centred.abs() + 1e-5).ln();
            let lambda = mu as f32 - beta as f32 * sign * log;
            lambda.exp().clamp(lo, hi)
        })
        .collect()
}

/// The variance-preserving SDE's σ(t) = √(exp(β_d t²/2 + β_min t) − 1), t from 1 to ε_s (Song et al. 2021).
pub fn vp(n: usize, beta_d: f64, beta_min: f64, eps_s: f64) -> Vec<f32> {
    let (d, m) = (beta_d as f32, beta_min as f32);
    append_zero(
        torch_linspace_f32(1.0, eps_s as f32, n)
            .iter()
            .map(|&t| (d * (t * t) / 2.0 + m * t).exp_m1().sqrt())
            .collect(),
    )
}
