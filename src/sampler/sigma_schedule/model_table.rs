//! Schedules read off the model's sigma table (one sigma per training timestep, ascending): ComfyUI's simple,
//! normal, sgm_uniform, ddim_uniform, beta and linear_quadratic.

use super::append_zero;
use crate::sampler::schedule::torch_linspace_f32;
use crate::sampler::sigmas::beta_ppf;
use crate::sampler::spacing::linspace;

/// A discrete model's sigmas, float32 as ComfyUI keeps them: `sigmas[t]` for timestep t, and their logs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSigmas {
    sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
}

impl ModelSigmas {
    /// From ᾱ (f64): σ = √((1 − ᾱ)/ᾱ) in f64, kept as f32; the logs are f32 of the f64 logs.
    pub fn from_alphas_cumprod(alphas_cumprod: &[f64]) -> Self {
        let sigmas64: Vec<f64> = alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect();
        Self {
            sigmas: sigmas64.iter().map(|&s| s as f32).collect(),
            log_sigmas: sigmas64.iter().map(|&s| s.ln() as f32).collect(),
        }
    }

    /// From a model's training sigmas (ascending, f32), their logs taken in f64.
    pub fn from_sigmas(sigmas: &[f32]) -> Self {
        Self {
            sigmas: sigmas.to_vec(),
            log_sigmas: sigmas.iter().map(|&s| f64::from(s).ln() as f32).collect(),
        }
    }

    /// Stable Diffusion 1.x's table as ComfyUI builds it: betas `linspace(√0.00085, √0.012, 1000)²` in f64.
    pub fn sd1() -> Self {
        let mut product = 1.0;
        let alphas_cumprod: Vec<f64> = linspace(0.00085f64.sqrt(), 0.012f64.sqrt(), 1000)
            .into_iter()
            .map(|b| {
                product *= 1.0 - b * b;
                product
            })
            .collect();
        Self::from_alphas_cumprod(&alphas_cumprod)
    }

    /// σ at each whole timestep, ascending.
    pub fn table(&self) -> &[f32] {
        &self.sigmas
    }

    pub fn sigma_min(&self) -> f32 {
        self.sigmas[0]
    }

    pub fn sigma_max(&self) -> f32 {
        self.sigmas[self.sigmas.len() - 1]
    }

    fn last_timestep(&self) -> usize {
        self.sigmas.len() - 1
    }

    /// σ at a fractional timestep: log-linear between the neighbouring entries, in f32.
    pub fn sigma(&self, t: f32) -> f32 {
        let t = t.clamp(0.0, self.last_timestep() as f32);
        let (low, high) = (t.floor() as usize, t.ceil() as usize);
        let w = t - t.floor();
        ((1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()
    }

    /// ComfyUI's `percent_to_sigma`: the sigma at fraction `p` of the way from the noisiest end (0) to the
    /// clean one (1); beyond the ends, a sigma above every noise level or 0.
    pub fn percent_to_sigma(&self, p: f64) -> f64 {
        if p <= 0.0 {
            return 999_999_999.9;
        }
        if p >= 1.0 {
            return 0.0;
        }
        f64::from(self.sigma(((1.0 - p) * 999.0) as f32))
    }

    /// The timestep whose log σ is nearest.
    pub fn timestep(&self, sigma: f32) -> usize {
        let log = sigma.ln();
        let distance = |i: usize| (log - self.log_sigmas[i]).abs();
        (0..self.log_sigmas.len())
            .min_by(|&a, &b| distance(a).total_cmp(&distance(b)))
            .unwrap_or(0)
    }
}

/// Every `len/n`-th table entry from the top.
pub fn simple(model: &ModelSigmas, n: usize) -> Vec<f32> {
    let stride = model.sigmas.len() as f64 / n as f64;
    let picked =
        (0..n).map(|x| model.sigmas[model.sigmas.len() - 1 - (x as f64 * stride) as usize]);
    append_zero(picked.collect())
}

/// σ at timesteps evenly spaced from σ_max's to σ_min's: `normal` includes the last, `sgm_uniform` (SGM's
/// spacing) stops one short of it. A table that reaches σ = 0 gets no zero appended.
pub fn normal(model: &ModelSigmas, n: usize, sgm: bool) -> Vec<f32> {
    let (start, end) = (
        model.timestep(model.sigma_max()) as f32,
        model.timestep(model.sigma_min()) as f32,
    );
    let reaches_zero = model.sigma(end).abs() <= 1e-5;
    let timesteps = match sgm {
        true => {
            let mut t = torch_linspace_f32(start, end, n + 1);
            t.pop();
            t
        }
        false => torch_linspace_f32(start, end, if reaches_zero { n + 1 } else { n }),
    };
    let sigmas: Vec<f32> = timesteps.iter().map(|&t| model.sigma(t)).collect();
    match !sgm && reaches_zero {
        true => sigmas,
        false => append_zero(sigmas),
    }
}

/// DDIM's uniform stride `len // n` from timestep 1 upwards, reversed, after a 0: it need not start at σ_max,
/// and may give more than n + 1 values.
pub fn ddim_uniform(model: &ModelSigmas, n: usize) -> Vec<f32> {
    let first_is_zero = model.sigmas[1].abs() <= 1e-5;
    let stride = (model.sigmas.len() / if first_is_zero { n + 1 } else { n }).max(1);
    let mut sigmas: Vec<f32> = if first_is_zero { Vec::new() } else { vec![0.0] };
    sigmas.extend(
        (1..model.sigmas.len())
            .step_by(stride)
            .map(|x| model.sigmas[x]),
    );
    sigmas.reverse();
    sigmas
}

/// Timesteps at the Beta(α, β) quantiles of `1 − linspace(0, 1, n, endpoint=False)`, rounded half to even,
/// consecutive repeats dropped (Lee et al. 2024's beta sampling).
pub fn beta(model: &ModelSigmas, n: usize, alpha: f64, beta: f64) -> Vec<f32> {
    let last = model.last_timestep() as f64;
    let mut sigmas = Vec::with_capacity(n + 1);
    let mut previous = None;
    for i in 0..n {
        let q = 1.0 - i as f64 * (1.0 / n as f64);
        let t = (beta_ppf(q, alpha, beta) * last).round_ties_even();
        if previous != Some(t) {
            sigmas.push(model.sigmas[t as usize]);
        }
        previous = Some(t);
    }
    append_zero(sigmas)
}

/// Linear in σ/σ_max for the first half of the steps (to 0.025 of the noise removed), quadratic after
/// (Movie Gen's schedule), times the table's σ_max.
pub fn linear_quadratic(model: &ModelSigmas, n: usize) -> Vec<f32> {
    let threshold = 0.025;
    let removed: Vec<f64> = if n == 1 {
        vec![0.0, 1.0]
    } else {
        let linear = n / 2;
        let quadratic = n - linear;
        let (l, q) = (linear as f64, quadratic as f64);
        let diff = l - threshold * n as f64;
        let quadratic_coef = diff / (l * q * q);
        let linear_coef = threshold / l - 2.0 * diff / (q * q);
        let constant = quadratic_coef * l * l;
        (0..linear)
            .map(|i| i as f64 * threshold / l)
            .chain(
                (linear..n)
                    .map(|i| quadratic_coef * (i * i) as f64 + linear_coef * i as f64 + constant),
            )
            .chain(std::iter::once(1.0))
            .collect()
    };
    let top = model.sigma_max();
    removed.iter().map(|&r| (1.0 - r) as f32 * top).collect()
}
