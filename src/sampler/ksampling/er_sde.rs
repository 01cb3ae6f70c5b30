//! ER-SDE-Solver-3 (ComfyUI `er_sde` and its SamplerER_SDE node; no A1111 equivalent): the extended
//! reverse-time SDE solver of Cui et al. (arXiv 2309.06169), an exponential-integrator step of stage
//! `min(max_stage, i + 1)` in `er_lambda = sigma`, with the SDE's noise drawn after each step but the last.
//! One model call a step; the last step, down to 0, returns the denoised sample.

use super::common::{sigma_of, t_of};
use super::vector::{add, lin, sub};
use super::{KSampler, Model, Settings, Start};

pub const SAMPLER: KSampler = KSampler {
    name: "er_sde",
    defaults: r#"{"s_noise": 1.0, "max_stage": 3, "eta": 1.0, "noise_scaler": "er_sde"}"#,
    stochastic,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start)),
};

/// The stage 2/3 integrals are 200-point left Riemann sums.
const POINTS: usize = 200;

/// Noise is drawn whenever `s_noise > 0`, but the reverse-time SDE with `eta = 0` (the node's "ODE") scales it
/// by `sqrt(λt² − λs²·r²) = 0`.
fn stochastic(s: &Settings) -> bool {
    let ode = Scaler::of(s) == Scaler::ReverseTime(1.0);
    s.num("s_noise") > 0.0 && !ode
}

/// The noise scaler `g(λ)` the step's ratio `r = g(λt)/g(λs)` comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scaler {
    /// ER-SDE's default `λ·(exp(λ^0.3) + 10)`.
    ErSde,
    /// The reverse-time SDE's `λ^(eta + 1)` (eta 0: the ODE).
    ReverseTime(f64),
}

impl Scaler {
    fn of(s: &Settings) -> Self {
        match s.text("noise_scaler") {
            "reverse_time_sde" => Self::ReverseTime(s.num("eta") + 1.0),
            _ => Self::ErSde,
        }
    }

    fn at(self, x: f64) -> f64 {
        match self {
            Self::ErSde => x * (x.powf(0.3).exp() + 10.0),
            Self::ReverseTime(power) => x.powf(power),
        }
    }

    /// The scaler on a float32 abscissa, as the reference evaluates it on its float32 grid (the Python float
    /// exponent is rounded to float32 too; `x^1` is `x` exactly).
    fn at_f32(self, x: f32) -> f32 {
        match self {
            Self::ErSde => x * (x.powf(0.3).exp() + 10.0),
            Self::ReverseTime(1.0) => x,
            Self::ReverseTime(power) => x.powf(power as f32),
        }
    }
}

/// The integrals `∫ dλ / g(λ)` and `∫ (λ − λs) dλ / g(λ)` from `λt` towards `λs`, as the reference's left
/// Riemann sums: it builds the abscissae `λt + k·step` on a float32 grid, so they, the summed terms and the sums
/// are float32 here too (the f64 form is off by up to 2e-8 relative: `dt + s·g(λt)` cancels); the step and the
/// sums' scaling are float64.
fn riemann_sums(scaler: Scaler, lambda_s: f64, lambda_t: f64) -> (f64, f64) {
    let step = -(lambda_t - lambda_s) / POINTS as f64;
    let (step_32, lambda_t_32, lambda_s_32) = (step as f32, lambda_t as f32, lambda_s as f32);
    let (inverse, moment): (Vec<f32>, Vec<f32>) = (0..POINTS)
        .map(|k| {
            let pos = lambda_t_32 + k as f32 * step_32;
            let scaled = scaler.at_f32(pos);
            (1.0 / scaled, (pos - lambda_s_32) / scaled)
        })
        .unzip();
    let s = f64::from(torch_sum_f32(&inverse)) * step;
    let s_u = f64::from(torch_sum_f32(&moment)) * step;
    (s, s_u)
}

/// The lanes of the (AVX2) float32 vectors torch's CPU `sum` accumulates in; the goldens were made with them.
const LANES: usize = 8;

/// torch's CPU float32 `sum` of a contiguous row (`cascade_sum`), in its order, which the cancellation above
/// makes visible: the row's 8-lane vectors go round-robin into four partial vectors (a leftover beyond a
/// multiple of four into the first), the partials are folded into the first, then the scalar tail and that
/// vector's lanes are added one by one, all in float32. Exact for rows under 512 values (longer rows add a
/// deeper cascade level).
fn torch_sum_f32(row: &[f32]) -> f32 {
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    let vectors: Vec<&[f32]> = chunks.collect();
    let interleaved = vectors.len() / 4 * 4;
    let mut partials = [[0.0f32; LANES]; 4];
    for (i, vector) in vectors.iter().enumerate() {
        let k = if i < interleaved { i % 4 } else { 0 };
        if let Some(partial) = partials.get_mut(k) {
            partial
                .iter_mut()
                .zip(vector.iter())
                .for_each(|(acc, v)| *acc += v);
        }
    }
    let [mut first, rest @ ..] = partials;
    for partial in rest {
        first.iter_mut().zip(partial).for_each(|(acc, v)| *acc += v);
    }
    let scalar = tail.iter().fold(0.0f32, |acc, v| acc + v);
    first.iter().fold(scalar, |acc, v| acc + v)
}

/// The last steps' denoised samples and first differences, for stages 2 and 3.
#[derive(Default)]
struct History {
    denoised: Option<Vec<f64>>,
    denoised_d: Option<Vec<f64>>,
}

async fn sample(m: Model, start: Start) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let (s_noise, max_stage, scaler) = (s.num("s_noise"), s.count("max_stage"), Scaler::of(&s));
    // er_lambda = sigma / alpha = exp(−lambda), sigma up to rounding for eps models.
    let lambdas: Vec<f64> = sigmas.iter().map(|&sg| sigma_of(t_of(sg))).collect();
    let mut history = History::default();
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = m.denoise(&x, sigma).await.guided;
        if next == 0.0 {
            x.clone_from(&denoised);
        } else {
            let back = |k: usize| i.checked_sub(k).and_then(|j| lambdas.get(j)).copied();
            let step = ErStep {
                sigma,
                lambda_s: lambdas[i],
                lambda_t: lambdas[i + 1],
                earlier: [back(1), back(2)],
                alpha_t: next / lambdas[i + 1],
                scaler,
            };
            x = step.update(x, &denoised, &mut history, max_stage.min(i + 1));
            if s_noise > 0.0 {
                let z = m.noise(sigma, next).await;
                add(&mut x, step.alpha_t * s_noise * step.noise_scale(), &z);
            }
        }
        history.denoised = Some(denoised);
    }
    x
}

/// One step from `er_lambda` `lambda_s` to `lambda_t`.
struct ErStep {
    sigma: f64,
    lambda_s: f64,
    lambda_t: f64,
    /// The `er_lambda` of one and two steps back.
    earlier: [Option<f64>; 2],
    alpha_t: f64,
    scaler: Scaler,
}

impl ErStep {
    /// `r = g(λt)/g(λs)`, the weight stage 1 keeps of `x`.
    fn ratio(&self) -> f64 {
        self.scaler.at(self.lambda_t) / self.scaler.at(self.lambda_s)
    }

    /// The noise's scale `sqrt(λt² − λs²·r²)` (0 where rounding makes it NaN).
    fn noise_scale(&self) -> f64 {
        let (lambda_s, lambda_t, r) = (self.lambda_s, self.lambda_t, self.ratio());
        let scale = (lambda_t * lambda_t - lambda_s * lambda_s * r * r).sqrt();
        if scale.is_nan() { 0.0 } else { scale }
    }

    /// Stage 1 (the exponential Euler step), then stages 2 and 3 up to `stage`.
    fn update(
        &self,
        x: Vec<f64>,
        denoised: &[f64],
        history: &mut History,
        stage: usize,
    ) -> Vec<f64> {
        // alpha = sigma / er_lambda, 1 up to rounding for eps models; the reference multiplies by it.
        let alpha_s = self.sigma / self.lambda_s;
        let r = self.ratio();
        let mut x = lin(&[
            (self.alpha_t / alpha_s * r, &x),
            (self.alpha_t * (1.0 - r), denoised),
        ]);
        if stage >= 2 {
            self.higher_stages(&mut x, denoised, history, stage);
        }
        x
    }

    /// Stages 2 and 3: the first and second divided differences of the denoised samples in `er_lambda`,
    /// times the step's integrals.
    fn higher_stages(&self, x: &mut [f64], denoised: &[f64], history: &mut History, stage: usize) {
        let [back_1, back_2] = self.earlier;
        let (Some(old), Some(lambda_1)) = (&history.denoised, back_1) else {
            return;
        };
        let (lambda_s, lambda_t) = (self.lambda_s, self.lambda_t);
        let dt = lambda_t - lambda_s;
        let (s, s_u) = riemann_sums(self.scaler, lambda_s, lambda_t);
        let g_t = self.scaler.at(lambda_t);
        let denoised_d: Vec<f64> = sub(denoised, old)
            .iter()
            .map(|v| v / (lambda_s - lambda_1))
            .collect();
        add(x, self.alpha_t * (dt + s * g_t), &denoised_d);
        if stage >= 3
            && let (Some(old_d), Some(lambda_2)) = (&history.denoised_d, back_2)
        {
            let half = (lambda_s - lambda_2) / 2.0;
            let denoised_u: Vec<f64> = sub(&denoised_d, old_d).iter().map(|v| v / half).collect();
            add(x, self.alpha_t * (dt * dt / 2.0 + s_u * g_t), &denoised_u);
        }
        history.denoised_d = Some(denoised_d);
    }
}
