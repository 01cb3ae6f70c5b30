//! DPM fast and DPM adaptive (A1111 "DPM fast" / "DPM adaptive", ComfyUI `dpm_fast`, `dpm_adaptive`):
//! k-diffusion's DPM-Solver in `t = −log sigma` between the schedule's first and last non-zero sigma.
//! Fast takes `len − 1` model calls on a uniform t grid of 3rd-order steps (ending in a 2nd/1st-order one);
//! adaptive pairs DPM-Solver-12 or -23 (2 or 3 calls an attempt) with a PID step-size controller. Both draw
//! one noise after every (accepted) step, also with eta = 0, where it is scaled by 0.
//!
//! k-diffusion makes t a float32 tensor, so t, the step sizes, the sigmas and the step coefficients are
//! float32 here as well (the model sees float32-rounded sigmas); the samples stay f64.

use super::vector::{lin, sub, to_d};
use super::{KSampler, Model, Settings, Start};

pub const DPM_FAST: KSampler = KSampler {
    name: "dpm_fast",
    defaults: r#"{"eta": 0.0, "s_noise": 1.0}"#,
    stochastic: ancestral_noise,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample_fast(m, start)),
};

pub const DPM_ADAPTIVE: KSampler = KSampler {
    name: "dpm_adaptive",
    defaults: r#"{"order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0,
        "dcoeff": 0.0, "accept_safety": 0.81, "eta": 0.0, "s_noise": 1.0}"#,
    stochastic: ancestral_noise,
    takes_uncond: false,
    adaptive: true,
    run: |m, start| Box::pin(sample_adaptive(m, start)),
};

/// Attempts after which the adaptive loop gives up (the reference never stops when its error is NaN).
const MAX_ATTEMPTS: usize = 100_000;

fn ancestral_noise(s: &Settings) -> bool {
    s.num("eta") != 0.0 && s.num("s_noise") != 0.0
}

/// `sigma(t) = exp(−t)` in float32.
fn sigma(t: f32) -> f32 {
    (-t).exp()
}

/// `t(sigma) = −log sigma` in float32.
fn t_of(sigma: f32) -> f32 {
    -sigma.ln()
}

/// `torch.minimum`: NaN wins.
fn minimum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

/// The bounds as ComfyUI passes them: `sigmas[0]` and the last sigma, or the one before it when the last
/// is 0, each as the float32 t k-diffusion makes of it. None when there is nothing to step through.
fn t_bounds(sigmas: &[f64]) -> Option<(f32, f32)> {
    let (&first, &last) = (sigmas.first()?, sigmas.last()?);
    let low = match last {
        0.0 => *sigmas.get(sigmas.len().checked_sub(2)?)?,
        _ => last,
    };
    let (t_start, t_end) = (t_of(first as f32), t_of(low as f32));
    (low > 0.0 && first > 0.0 && t_end > t_start).then_some((t_start, t_end))
}

/// The step from `t` to `t_next` with eta's ancestral noise: the t to step to deterministically and the
/// noise scale `su` (k-diffusion's `get_ancestral_step` on float32 sigmas, the target kept within `t_end`).
fn ancestral_target(t: f32, t_next: f32, t_end: f32, eta: f64) -> (f32, f32) {
    if eta == 0.0 {
        return (t_next, 0.0);
    }
    let (from, to) = (sigma(t), sigma(t_next));
    let var = to * to * (from * from - to * to) / (from * from);
    let up = eta as f32 * var.sqrt();
    // Python's min(to, up): `to` unless `up` is smaller.
    let up = if up < to { up } else { to };
    let down = (to * to - up * up).sqrt();
    let target = minimum(t_end, t_of(down));
    let (s_next, s_target) = (sigma(t_next), sigma(target));
    (target, (s_next * s_next - s_target * s_target).sqrt())
}

/// The model's noise prediction at `x`, time `t`.
async fn eps(m: &Model, x: &[f64], t: f32) -> Vec<f64> {
    let s = f64::from(sigma(t));
    let denoised = m.denoise(x, s).await.guided;
    to_d(x, s, &denoised)
}

/// `x − c·eps`, with `c = sigma(t_next)·expm1(h)` in float32.
fn first_order(x: &[f64], eps: &[f64], t: f32, t_next: f32) -> Vec<f64> {
    let h = t_next - t;
    let c = sigma(t_next) * h.exp_m1();
    lin(&[(1.0, x), (-f64::from(c), eps)])
}

/// DPM-Solver-2 with its intermediate time at `t + r1·h`; also returns the noise prediction there.
async fn second_order(
    m: &Model,
    x: &[f64],
    eps_0: &[f64],
    (t, t_next): (f32, f32),
    r1: f64,
) -> (Vec<f64>, Vec<f64>) {
    let h = t_next - t;
    let r1h = r1 as f32 * h;
    let s1 = t + r1h;
    let u1 = lin(&[(1.0, x), (-f64::from(sigma(s1) * r1h.exp_m1()), eps_0)]);
    let eps_1 = eps(m, &u1, s1).await;
    let c1 = sigma(t_next) * h.exp_m1();
    let c2 = sigma(t_next) / (2.0 * r1) as f32 * h.exp_m1();
    let x_2 = lin(&[
        (1.0, x),
        (-f64::from(c1), eps_0),
        (-f64::from(c2), &sub(&eps_1, eps_0)),
    ]);
    (x_2, eps_1)
}

/// DPM-Solver-3 (r1 = 1/3, r2 = 2/3); `eps_1`: the prediction at `t + h/3` if already made.
async fn third_order(
    m: &Model,
    x: &[f64],
    eps_0: &[f64],
    eps_1: Option<Vec<f64>>,
    (t, t_next): (f32, f32),
) -> Vec<f64> {
    let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
    let h = t_next - t;
    let (r1h, r2h) = (r1 as f32 * h, r2 as f32 * h);
    let (s1, s2) = (t + r1h, t + r2h);
    let eps_1 = match eps_1 {
        Some(e) => e,
        None => {
            let u1 = lin(&[(1.0, x), (-f64::from(sigma(s1) * r1h.exp_m1()), eps_0)]);
            eps(m, &u1, s1).await
        }
    };
    let a = sigma(s2) * r2h.exp_m1();
    let b = sigma(s2) * (r2 / r1) as f32 * (r2h.exp_m1() / r2h - 1.0);
    let u2 = lin(&[
        (1.0, x),
        (-f64::from(a), eps_0),
        (-f64::from(b), &sub(&eps_1, eps_0)),
    ]);
    let eps_2 = eps(m, &u2, s2).await;
    let c1 = sigma(t_next) * h.exp_m1();
    let c2 = sigma(t_next) / r2 as f32 * (h.exp_m1() / h - 1.0);
    lin(&[
        (1.0, x),
        (-f64::from(c1), eps_0),
        (-f64::from(c2), &sub(&eps_2, eps_0)),
    ])
}

/// `torch.linspace(start, end, steps)` in float32 as its CPU kernel computes it for short grids (under 16
/// values, its scalar loop): from the start up to halfway, from the end after.
pub(super) fn linspace_f32(start: f32, end: f32, steps: usize, i: usize) -> f32 {
    if steps < 2 {
        return start;
    }
    let step = (end - start) / (steps - 1) as f32;
    match i < steps / 2 {
        true => start + step * i as f32,
        false => end - step * (steps - 1 - i) as f32,
    }
}

/// The orders of DPM fast's steps for `nfe` model calls: 3rd-order steps, the last one or two lower.
fn fast_orders(nfe: usize) -> Vec<usize> {
    let m = nfe / 3 + 1;
    let mut orders = vec![3; m.saturating_sub(if nfe.is_multiple_of(3) { 2 } else { 1 })];
    match nfe % 3 {
        0 => orders.extend([2, 1]),
        rest => orders.push(rest),
    }
    orders
}

async fn sample_fast(m: Model, start: Start) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let nfe = sigmas.len().saturating_sub(1);
    let Some((t_start, t_end)) = t_bounds(&sigmas).filter(|_| nfe > 0) else {
        return x;
    };
    let (eta, s_noise) = (s.num("eta"), s.num("s_noise"));
    let orders = fast_orders(nfe);
    let points = nfe / 3 + 2;
    for (i, order) in orders.into_iter().enumerate() {
        let t = linspace_f32(t_start, t_end, points, i);
        let t_next = linspace_f32(t_start, t_end, points, i + 1);
        let (target, su) = ancestral_target(t, t_next, t_end, eta);
        let eps_0 = eps(&m, &x, t).await;
        x = match order {
            1 => first_order(&x, &eps_0, t, target),
            2 => second_order(&m, &x, &eps_0, (t, target), 0.5).await.0,
            _ => third_order(&m, &x, &eps_0, None, (t, target)).await,
        };
        let z = m.noise(f64::from(sigma(t)), f64::from(sigma(t_next))).await;
        x = lin(&[(1.0, &x), (noise_scale(su, eta, s_noise), &z)]);
    }
    x
}

/// `su·s_noise`: a float32 product when eta ≠ 0, a plain 0 otherwise.
fn noise_scale(su: f32, eta: f64, s_noise: f64) -> f64 {
    match eta == 0.0 {
        true => 0.0,
        false => f64::from(su * s_noise as f32),
    }
}

/// k-diffusion's PID step-size controller on the error of each attempt.
struct Pid {
    h: f64,
    b: [f64; 3],
    accept_safety: f64,
    /// Inverse errors: this attempt's, the last accepted one's and the one before it.
    errs: Option<[f64; 3]>,
}

impl Pid {
    fn new(s: &Settings, order: f64) -> Self {
        let (p, i, d) = (s.num("pcoeff"), s.num("icoeff"), s.num("dcoeff"));
        Self {
            h: s.num("h_init").abs(),
            b: [(p + i + d) / order, -(p + 2.0 * d) / order, d / order],
            accept_safety: s.num("accept_safety"),
            errs: None,
        }
    }

    /// Scales the step size by the error and says whether the attempt is accepted.
    fn propose(&mut self, error: f64) -> bool {
        let inv = 1.0 / (error + 1e-8);
        let mut errs = self.errs.unwrap_or([inv; 3]);
        errs[0] = inv;
        let factor = errs[0].powf(self.b[0]) * errs[1].powf(self.b[1]) * errs[2].powf(self.b[2]);
        // The limiter 1 + atan(f − 1) keeps the change of h smooth.
        let factor = 1.0 + (factor - 1.0).atan();
        let accept = factor >= self.accept_safety;
        if accept {
            errs = [errs[0], errs[0], errs[1]];
        }
        self.errs = Some(errs);
        self.h *= factor;
        accept
    }
}

/// The RMS of the low/high difference relative to `max(atol, rtol·max(|x_low|, |x_prev|))`.
fn attempt_error(low: &[f64], high: &[f64], prev: &[f64], atol: f64, rtol: f64) -> f64 {
    let sum: f64 = low
        .iter()
        .zip(high)
        .zip(prev)
        .map(|((l, h), p)| {
            let delta = atol.max(rtol * l.abs().max(p.abs()));
            ((l - h) / delta).powi(2)
        })
        .sum();
    sum.sqrt() / (low.len() as f64).sqrt()
}

async fn sample_adaptive(m: Model, start: Start) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let Some((t_start, t_end)) = t_bounds(&sigmas) else {
        return x;
    };
    let (eta, s_noise) = (s.num("eta"), s.num("s_noise"));
    // Only DPM-Solver-12 and -23 exist; the reference refuses other orders.
    let third = s.num("order") > 2.0;
    // atol and rtol are float32 tensors in the reference.
    let (atol, rtol) = (
        f64::from(s.num("atol") as f32),
        f64::from(s.num("rtol") as f32),
    );
    let order = match (eta != 0.0, third) {
        (true, _) => 1.5,
        (false, true) => 3.0,
        (false, false) => 2.0,
    };
    let mut pid = Pid::new(&s, order);
    let mut x_prev = x.clone();
    let mut s_t = t_start;
    let mut attempts = 0;
    while s_t < t_end - 1e-5 && pid.h.is_finite() && attempts < MAX_ATTEMPTS {
        attempts += 1;
        let t = minimum(t_end, s_t + pid.h as f32);
        let (target, su) = ancestral_target(s_t, t, t_end, eta);
        let eps_0 = eps(&m, &x, s_t).await;
        let (low, high) = match third {
            true => {
                let (low, eps_1) = second_order(&m, &x, &eps_0, (s_t, target), 1.0 / 3.0).await;
                let high = third_order(&m, &x, &eps_0, Some(eps_1), (s_t, target)).await;
                (low, high)
            }
            false => {
                let low = first_order(&x, &eps_0, s_t, target);
                (
                    low,
                    second_order(&m, &x, &eps_0, (s_t, target), 0.5).await.0,
                )
            }
        };
        let error = attempt_error(&low, &high, &x_prev, atol, rtol);
        if pid.propose(error) {
            let z = m.noise(f64::from(sigma(s_t)), f64::from(sigma(t))).await;
            x = lin(&[(1.0, &high), (noise_scale(su, eta, s_noise), &z)]);
            x_prev = low;
            s_t = t;
        }
    }
    x
}
