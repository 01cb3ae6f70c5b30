//! The analytic denoiser: for data drawn from a mixture of isotropic Gaussians the ideal denoiser
//! E[x0 | x_t] has a closed form, so samplers can be checked against exact answers without a network.

use super::denoiser::batch_size;
use super::{DenoiseError, Denoiser, DenoiserInfo};
use crate::sampler::{NoiseSchedule, PredictionType};

/// A mixture of isotropic Gaussians over flattened samples: component k has weight `weights[k]`,
/// mean `means[k]` and standard deviation `stds[k]` in every dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianMixture {
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    pub stds: Vec<f64>,
}

impl GaussianMixture {
    /// Builds a mixture; weights are normalised.
    pub fn new(weights: Vec<f64>, means: Vec<Vec<f64>>, stds: Vec<f64>) -> Self {
        let total: f64 = weights.iter().sum();
        Self {
            weights: weights.iter().map(|w| w / total).collect(),
            means,
            stds,
        }
    }

    /// Three image-like patterns (a vertical bar, a horizontal bar, a ring) on `shape`, values in
    /// [-1, 1] with a little spread: what the built-in model draws.
    pub fn patterns(shape: [usize; 3]) -> Self {
        let [c, h, w] = shape;
        let pattern = |on: &dyn Fn(f64, f64) -> bool| -> Vec<f64> {
            let mut v = Vec::with_capacity(c * h * w);
            for _ in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let (fy, fx) = (
                            (y as f64 + 0.5) / h as f64 - 0.5,
                            (x as f64 + 0.5) / w as f64 - 0.5,
                        );
                        v.push(if on(fy, fx) { 0.8 } else { -0.8 });
                    }
                }
            }
            v
        };
        let means = vec![
            pattern(&|_, x| x.abs() < 0.2),
            pattern(&|y, _| y.abs() < 0.2),
            pattern(&|y, x| ((y * y + x * x).sqrt() - 0.3).abs() < 0.12),
        ];
        Self::new(vec![0.4, 0.35, 0.25], means, vec![0.15, 0.1, 0.2])
    }

    /// The mixture moved from [-1, 1] to [0, 1], where variance-exploding models keep their data.
    pub fn in_unit_range(mut self) -> Self {
        for mean in &mut self.means {
            mean.iter_mut().for_each(|m| *m = 0.5 * (*m + 1.0));
        }
        self.stds.iter_mut().for_each(|s| *s *= 0.5);
        self
    }

    pub fn dim(&self) -> usize {
        self.means.first().map_or(0, Vec::len)
    }

    /// The mixture's mean.
    pub fn mean(&self) -> Vec<f64> {
        let mut m = vec![0.0; self.dim()];
        for (w, mu) in self.weights.iter().zip(&self.means) {
            for (m, v) in m.iter_mut().zip(mu) {
                *m += w * v;
            }
        }
        m
    }

    /// The mixture's covariance, row-major `dim × dim`.
    pub fn covariance(&self) -> Vec<f64> {
        let d = self.dim();
        let mean = self.mean();
        let mut cov = vec![0.0; d * d];
        for ((w, mu), s) in self.weights.iter().zip(&self.means).zip(&self.stds) {
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] += w * (mu[i] * mu[j] + if i == j { s * s } else { 0.0 });
                }
            }
        }
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] -= mean[i] * mean[j];
            }
        }
        cov
    }

    /// E[x0 | x_t = x] for `x_t = sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε`, written into `out`.
    pub fn posterior_mean(&self, x: &[f64], alpha_bar: f64, out: &mut [f64]) {
        let d = x.len() as f64;
        let sa = alpha_bar.sqrt();
        // Responsibilities of each component for x, in log space for stability.
        let logs: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.means)
            .zip(&self.stds)
            .map(|((w, mu), s)| {
                let var = alpha_bar * s * s + 1.0 - alpha_bar;
                let dist2: f64 = x.iter().zip(mu).map(|(x, m)| (x - sa * m).powi(2)).sum();
                w.ln() - 0.5 * d * var.ln() - dist2 / (2.0 * var)
            })
            .collect();
        let top = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let resp: Vec<f64> = logs.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = resp.iter().sum();
        out.fill(0.0);
        for ((r, mu), s) in resp.iter().zip(&self.means).zip(&self.stds) {
            let var = alpha_bar * s * s + 1.0 - alpha_bar;
            let gain = sa * s * s / var;
            let r = r / total;
            for ((o, x), m) in out.iter_mut().zip(x).zip(mu) {
                *o += r * (m + gain * (x - sa * m));
            }
        }
    }

    /// Solves the probability-flow ODE exactly (to f64 precision, RK4 on a fine grid) from noise
    /// level `sigma_from` to `sigma_to` (sigma = sqrt((1 − ᾱ)/ᾱ); 0 is the clean sample).
    /// `x` is in the samplers' (variance-preserving) scale at both ends.
    pub fn solve_ode(&self, x: &[f64], sigma_from: f64, sigma_to: f64, steps: usize) -> Vec<f64> {
        // In y = x·sqrt(1 + σ²) the ODE is dy/dσ = ε(x, σ); stepping uniformly in u = σ^(1/7)
        // puts the steps where the solution bends (small σ).
        let rho = 7.0;
        let eps = |y: &[f64], sigma: f64| -> Vec<f64> {
            let alpha = 1.0 / (1.0 + sigma * sigma).sqrt();
            let xv: Vec<f64> = y.iter().map(|v| v * alpha).collect();
            let mut x0 = vec![0.0; y.len()];
            self.posterior_mean(&xv, alpha * alpha, &mut x0);
            xv.iter()
                .zip(&x0)
                .map(|(x, x0)| (x - alpha * x0) / (sigma * alpha))
                .collect()
        };
        // dy/du = ε · dσ/du, with σ = u^ρ.
        let f = |y: &[f64], u: f64| -> Vec<f64> {
            let sigma = u.powf(rho);
            let ds = rho * u.powf(rho - 1.0);
            if sigma < 1e-8 {
                // ε ≈ σ·(x − μ)/s² vanishes as σ → 0, while x − α·x0 is only rounding noise there:
                // divided by σ (the last stage lands on u ≈ 1e-16, not 0) it would be of order 1.
                return vec![0.0; y.len()];
            }
            eps(y, sigma).into_iter().map(|e| e * ds).collect()
        };
        let (u0, u1) = (sigma_from.powf(1.0 / rho), sigma_to.powf(1.0 / rho));
        let h = (u1 - u0) / steps as f64;
        let mut y: Vec<f64> = x
            .iter()
            .map(|v| v * (1.0 + sigma_from * sigma_from).sqrt())
            .collect();
        let axpy = |y: &[f64], k: &[f64], a: f64| -> Vec<f64> {
            y.iter().zip(k).map(|(y, k)| y + a * k).collect()
        };
        for i in 0..steps {
            let u = u0 + i as f64 * h;
            let k1 = f(&y, u);
            let k2 = f(&axpy(&y, &k1, h / 2.0), u + h / 2.0);
            let k3 = f(&axpy(&y, &k2, h / 2.0), u + h / 2.0);
            let k4 = f(&axpy(&y, &k3, h), u + h);
            for j in 0..y.len() {
                y[j] += h / 6.0 * (k1[j] + 2.0 * k2[j] + 2.0 * k3[j] + k4[j]);
            }
        }
        let alpha_to = 1.0 / (1.0 + sigma_to * sigma_to).sqrt();
        y.into_iter().map(|v| v * alpha_to).collect()
    }

    /// The rectified-flow velocity eps − E[x0 | x] at x = (1 − s)·x0 + s·eps (`s` in (0, 1]).
    pub fn flow_velocity(&self, x: &[f64], s: f64) -> Vec<f64> {
        // On the variance-preserving path: x / |(1 − s, s)| at ᾱ = (1 − s)² / |.|².
        let norm = (1.0 - s).hypot(s);
        let xv: Vec<f64> = x.iter().map(|v| v / norm).collect();
        let mut x0 = vec![0.0; x.len()];
        self.posterior_mean(&xv, ((1.0 - s) / norm).powi(2), &mut x0);
        x.iter()
            .zip(&x0)
            .map(|(x, x0)| (x - (1.0 - s) * x0) / s - x0)
            .collect()
    }

    /// Solves the rectified-flow ODE dx/ds = v(x, s) exactly (to f64 precision) from flow sigma `s_from`
    /// (up to 1, pure noise) to `s_to` (0 is the clean sample), `x` in flow scale at both ends: RK4 in s down
    /// to s = 1/2, then [`solve_ode`](Self::solve_ode) on the same path in variance-preserving scale (the
    /// flow and VP probability-flow ODEs are one ODE in x / |(1 − s, s)| and σ = s / (1 − s)).
    pub fn solve_flow_ode(&self, x: &[f64], s_from: f64, s_to: f64, steps: usize) -> Vec<f64> {
        let mid = s_from.min(0.5).max(s_to);
        let h = (mid - s_from) / steps as f64;
        let mut y = x.to_vec();
        let axpy = |y: &[f64], k: &[f64], a: f64| -> Vec<f64> {
            y.iter().zip(k).map(|(y, k)| y + a * k).collect()
        };
        for i in 0..steps {
            let s = s_from + i as f64 * h;
            let k1 = self.flow_velocity(&y, s);
            let k2 = self.flow_velocity(&axpy(&y, &k1, h / 2.0), s + h / 2.0);
            let k3 = self.flow_velocity(&axpy(&y, &k2, h / 2.0), s + h / 2.0);
            let k4 = self.flow_velocity(&axpy(&y, &k3, h), s + h);
            for j in 0..y.len() {
                y[j] += h / 6.0 * (k1[j] + 2.0 * k2[j] + 2.0 * k3[j] + k4[j]);
            }
        }
        let norm = |s: f64| (1.0 - s).hypot(s);
        let vp: Vec<f64> = y.iter().map(|v| v / norm(mid)).collect();
        let sigma = |s: f64| s / (1.0 - s);
        self.solve_ode(&vp, sigma(mid), sigma(s_to), steps)
            .into_iter()
            .map(|v| v * norm(s_to))
            .collect()
    }
}

/// The ideal denoiser of a [`GaussianMixture`] under a training noise schedule.
pub struct AnalyticDenoiser {
    mixture: GaussianMixture,
    schedule: NoiseSchedule,
    shape: [usize; 3],
    prediction_type: PredictionType,
}

impl AnalyticDenoiser {
    /// `shape` must hold `mixture.dim()` values.
    pub fn new(
        mixture: GaussianMixture,
        schedule: NoiseSchedule,
        shape: [usize; 3],
        prediction_type: PredictionType,
    ) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            mixture.dim(),
            "the mixture's dimension must match the sample shape"
        );
        Self {
            mixture,
            schedule,
            shape,
            prediction_type,
        }
    }

    pub fn mixture(&self) -> &GaussianMixture {
        &self.mixture
    }

    /// x = alpha·x0 + sigma·eps at model timestep `t`, with the variance-preserving ᾱ and the norm
    /// |(alpha, sigma)| that x is divided by to be on that path: the training schedule's (norm 1), or the
    /// rectified flow's (sigma = t/N, alpha = 1 − sigma) for a flow-prediction model, the VE path's (alpha = 1,
    /// sigma = t) for a score model.
    fn path_at(&self, t: f64) -> (f64, f64, f64, f64) {
        if self.prediction_type == PredictionType::Score {
            // A VE model's timestep is σ: x = x0 + σ·eps, which is √(1 + σ²) times the VP sample.
            let s = t.max(1e-12);
            return (1.0, s, 1.0 / (1.0 + s * s), s.hypot(1.0));
        }
        if self.prediction_type == PredictionType::FlowPrediction {
            let n = self.schedule.num_train_timesteps() as f64;
            // Flow timesteps stop short of 0; the clamp keeps eps finite for any input.
            let s = (t / n).clamp(1e-6, 1.0);
            let norm = (1.0 - s).hypot(s);
            (1.0 - s, s, ((1.0 - s) / norm).powi(2), norm)
        } else {
            let a = self.schedule.alpha_bar_at(t);
            (a.sqrt(), (1.0 - a).sqrt(), a, 1.0)
        }
    }
}

impl Denoiser for AnalyticDenoiser {
    fn info(&self) -> DenoiserInfo {
        DenoiserInfo {
            name: "analytic gaussian mixture".into(),
            provider: "builtin".into(),
            sample_shape: self.shape,
            frames: 1,
            extra_channels: 0,
            prediction_type: self.prediction_type,
        }
    }

    fn predict(
        &mut self,
        sample: &[f32],
        timesteps: &[f64],
        out: &mut [f32],
    ) -> Result<(), DenoiseError> {
        batch_size(sample.len(), self.shape, timesteps.len())?;
        let d = self.mixture.dim();
        let mut x = vec![0.0; d];
        let mut x0 = vec![0.0; d];
        for ((item, o), &t) in sample.chunks(d).zip(out.chunks_mut(d)).zip(timesteps) {
            let (alpha, sigma, alpha_bar, norm) = self.path_at(t);
            x.iter_mut()
                .zip(item)
                .for_each(|(x, &v)| *x = v as f64 / norm);
            self.mixture.posterior_mean(&x, alpha_bar, &mut x0);
            for ((o, &v), x0) in o.iter_mut().zip(item).zip(&x0) {
                let eps = (v as f64 - alpha * x0) / sigma;
                *o = match self.prediction_type {
                    PredictionType::Epsilon => eps,
                    PredictionType::VPrediction => alpha * eps - sigma * x0,
                    PredictionType::Sample => *x0,
                    PredictionType::FlowPrediction => eps - x0,
                    // ∇ log p_σ(x) = −eps / σ.
                    PredictionType::Score => -eps / sigma,
                } as f32;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_gaussian_denoises_like_wiener_filtering() {
        let m = GaussianMixture::new(vec![1.0], vec![vec![1.0, -1.0]], vec![0.5]);
        let mut out = [0.0; 2];
        m.posterior_mean(&[0.0, 0.0], 0.5, &mut out);
        // E[x0|x] = mu + sqrt(a) s² / (a s² + 1 - a) (x - sqrt(a) mu), a = 0.5, s = 0.5.
        let gain = 0.5f64.sqrt() * 0.25 / (0.125 + 0.5);
        assert!((out[0] - (1.0 - gain * 0.5f64.sqrt())).abs() < 1e-12);
        assert!((out[1] + (1.0 - gain * 0.5f64.sqrt())).abs() < 1e-12);
    }
}
