//! SEEDS-2 and SEEDS-3 (ComfyUI `seeds_2`, `seeds_3`; no A1111 equivalent): the stochastic explicit
//! exponential derivative-free solvers of Gonzalez et al. (arXiv 2305.14267) in data prediction, stepping in
//! `lambda = −log sigma` through intermediate points at fractions `r` of the step. Two (three) model calls a
//! step; with `eta > 0` and `s_noise > 0` one noise draw after each stage, chained into a single noise path
//! across the step. The last step, down to 0, returns the denoised sample.

use super::common::{sigma_of, t_of};
use super::vector::{add, lin};
use super::{KSampler, Model, Settings, Start};

pub const SEEDS_2: KSampler = KSampler {
    name: "seeds_2",
    defaults: r#"{"eta": 1.0, "s_noise": 1.0, "r": 0.5}"#,
    stochastic: injects_noise,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample_2(m, start)),
};

pub const SEEDS_3: KSampler = KSampler {
    name: "seeds_3",
    defaults: r#"{"eta": 1.0, "s_noise": 1.0, "r_1": 0.3333333333333333, "r_2": 0.6666666666666666}"#,
    stochastic: injects_noise,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample_3(m, start)),
};

fn injects_noise(s: &Settings) -> bool {
    s.num("eta") > 0.0 && s.num("s_noise") > 0.0
}

/// `h·phi_1(h) = e^h − 1`.
fn phi_1(h: f64) -> f64 {
    h.exp_m1()
}

/// `h·phi_2(h) = (e^h − 1 − h)/h`.
fn phi_2(h: f64) -> f64 {
    (h.exp_m1() - h) / h
}

/// torch.lerp: `a + w·(b − a)` for small weights, `b − (b − a)·(1 − w)` otherwise (exact at w = 1).
fn lerp(a: f64, b: f64, w: f64) -> f64 {
    match w.abs() < 0.5 {
        true => a + w * (b - a),
        false => b - (b - a) * (1.0 - w),
    }
}

/// A point of the step: its fraction `r` of the step in lambda, its sigma and lambda.
#[derive(Clone, Copy)]
struct Point {
    r: f64,
    sigma: f64,
    lambda: f64,
}

/// One step from `sigma` to `next` in lambda, with the settings that shape it.
struct Step {
    sigma: f64,
    lambda_s: f64,
    lambda_t: f64,
    h: f64,
    eta: f64,
}

impl Step {
    /// The step and its two ends.
    fn new(sigma: f64, next: f64, eta: f64) -> (Self, Point, Point) {
        let (lambda_s, lambda_t) = (t_of(sigma), t_of(next));
        let step = Self {
            sigma,
            lambda_s,
            lambda_t,
            h: lambda_t - lambda_s,
            eta,
        };
        let origin = Point {
            r: 0.0,
            sigma,
            lambda: lambda_s,
        };
        let end = Point {
            r: 1.0,
            sigma: next,
            lambda: lambda_t,
        };
        (step, origin, end)
    }

    /// The intermediate point at fraction `r`.
    fn point(&self, r: f64) -> Point {
        let lambda = lerp(self.lambda_s, self.lambda_t, r);
        Point {
            r,
            sigma: sigma_of(lambda),
            lambda,
        }
    }

    /// The exponential-integrator update from the step's start `x` to `p`:
    /// `sigma_p/sigma·e^(−r·h·eta)·x − alpha_p·Σ cₖ·Dₖ` over the `(cₖ, Dₖ)` of `combination` (the `cₖ` are
    /// the phi-function weights of the denoised samples `Dₖ`).
    fn to(&self, p: Point, x: &[f64], combination: &[(f64, &[f64])]) -> Vec<f64> {
        let alpha = p.sigma * p.lambda.exp();
        let mut terms = vec![(p.sigma / self.sigma * (-p.r * self.h * self.eta).exp(), x)];
        terms.extend(combination.iter().map(|&(c, d)| (-alpha * c, d)));
        lin(&terms)
    }

    /// `−r·h·(eta + 1)`, the argument of the phi functions at fraction `r`.
    fn phi_argument(&self, r: f64) -> f64 {
        -r * (self.h * (self.eta + 1.0))
    }
}

/// The step's SDE noise: one path across the stages, decayed and topped up at each (`noise ← noise·e^seg +
/// sqrt(1 − e^(2·seg))·z`, `seg = −(r_to − r_from)·h·eta`), as the reference chains it. `None` without noise.
struct StageNoise {
    path: Option<Vec<f64>>,
    s_noise: f64,
}

impl StageNoise {
    fn new(len: usize, s: &Settings) -> Self {
        let path = injects_noise(s).then(|| vec![0.0; len]);
        Self {
            path,
            s_noise: s.num("s_noise"),
        }
    }

    /// Draws the noise from `from` to `to` and adds the path, scaled by `to`'s sigma, to `x`.
    async fn add(&mut self, m: &Model, step: &Step, from: Point, to: Point, x: &mut [f64]) {
        let Some(path) = self.path.as_mut() else {
            return;
        };
        let seg = (from.r - to.r) * step.h * step.eta;
        let z = m.noise(from.sigma, to.sigma).await;
        *path = lin(&[(seg.exp(), path), ((-(2.0 * seg).exp_m1()).sqrt(), &z)]);
        add(x, to.sigma * self.s_noise, path);
    }
}

async fn sample_2(m: Model, start: Start) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let (eta, r) = (s.num("eta"), s.num("r"));
    let fac = 1.0 / (2.0 * r);
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = m.denoise(&x, sigma).await.guided;
        if next == 0.0 {
            x = denoised;
            continue;
        }
        let (step, origin, end) = Step::new(sigma, next, eta);
        let mut noise = StageNoise::new(x.len(), &s);
        let p_1 = step.point(r);
        let mut x_2 = step.to(p_1, &x, &[(phi_1(step.phi_argument(r)), &denoised)]);
        noise.add(&m, &step, origin, p_1, &mut x_2).await;
        let denoised_2 = m.denoise(&x_2, p_1.sigma).await.guided;
        // The denoised samples' linear interpolant in lambda at the step's middle (fraction 1/2 = r·fac).
        let denoised_d: Vec<f64> = denoised
            .iter()
            .zip(&denoised_2)
            .map(|(&a, &b)| lerp(a, b, fac))
            .collect();
        x = step.to(end, &x, &[(phi_1(step.phi_argument(1.0)), &denoised_d)]);
        noise.add(&m, &step, p_1, end, &mut x).await;
    }
    x
}

async fn sample_3(m: Model, start: Start) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let (eta, r_1, r_2) = (s.num("eta"), s.num("r_1"), s.num("r_2"));
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = m.denoise(&x, sigma).await.guided;
        if next == 0.0 {
            x = denoised;
            continue;
        }
        let (step, origin, end) = Step::new(sigma, next, eta);
        let mut noise = StageNoise::new(x.len(), &s);
        let (p_1, p_2) = (step.point(r_1), step.point(r_2));
        let mut x_2 = step.to(p_1, &x, &[(phi_1(step.phi_argument(r_1)), &denoised)]);
        noise.add(&m, &step, origin, p_1, &mut x_2).await;
        let denoised_2 = m.denoise(&x_2, p_1.sigma).await.guided;

        let a_2 = r_2 / r_1 * phi_2(step.phi_argument(r_2));
        let a_1 = phi_1(step.phi_argument(r_2)) - a_2;
        let mut x_3 = step.to(p_2, &x, &[(a_1, &denoised), (a_2, &denoised_2)]);
        noise.add(&m, &step, p_1, p_2, &mut x_3).await;
        let denoised_3 = m.denoise(&x_3, p_2.sigma).await.guided;

        let b_3 = phi_2(step.phi_argument(1.0)) / r_2;
        let b_1 = phi_1(step.phi_argument(1.0)) - b_3;
        x = step.to(end, &x, &[(b_1, &denoised), (b_3, &denoised_3)]);
        noise.add(&m, &step, p_2, end, &mut x).await;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::super::settings;
    use super::*;

    /// The JSON defaults parse to ComfyUI's `1./3` and `2./3` exactly.
    #[test]
    fn default_fractions_are_thirds() {
        let s = settings(&SEEDS_3, &Default::default());
        assert_eq!(s.as_ref().map(|s| s.num("r_1")), Ok(1.0 / 3.0));
        assert_eq!(s.as_ref().map(|s| s.num("r_2")), Ok(2.0 / 3.0));
    }

    #[test]
    fn torch_lerp_is_exact_at_the_end() {
        assert_eq!(lerp(0.1, 0.7, 1.0), 0.7);
        assert_eq!(lerp(0.1, 0.7, 0.0), 0.1);
    }
}
