//! iPNDM and iPNDM-v (ComfyUI `ipndm`, `ipndm_v`; not in A1111): improved pseudo-numerical methods, i.e.
//! Adams–Bashforth steps on the ODE derivative `(x − denoised)/sigma` in sigma, with the last `max_order − 1`
//! derivatives. `ipndm` uses the fixed equal-step coefficients, `ipndm_v` coefficients from the actual step
//! sizes. One model call a step, no noise; the step to sigma 0 returns the denoised sample.

use super::vector::{add, lin, to_d};
use super::{KSampler, Model, Start};

pub const IPNDM: KSampler = KSampler {
    name: "ipndm",
    defaults: r#"{"max_order": 4}"#,
    stochastic: |_| false,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start, false)),
};

pub const IPNDM_V: KSampler = KSampler {
    name: "ipndm_v",
    defaults: r#"{"max_order": 4}"#,
    stochastic: |_| false,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start, true)),
};

async fn sample(m: Model, start: Start, variable: bool) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    // The reference has formulas for orders 1 to 4 only.
    let max_order = s.count("max_order").clamp(1, 4);
    // Past derivatives, newest first.
    let mut history: Vec<Vec<f64>> = Vec::new();
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = m.denoise(&x, sigma).await.guided;
        let d = to_d(&x, sigma, &denoised);
        if next == 0.0 {
            x = denoised;
        } else {
            let order = (history.len() + 1).min(max_order);
            let coefficients = match variable {
                true => variable_coefficients(&steps_back(&sigmas, i, order)),
                false => fixed_coefficients(order),
            };
            let terms: Vec<(f64, &[f64])> = coefficients
                .iter()
                .zip(std::iter::once(&d).chain(&history))
                .map(|(c, v)| (*c, v.as_slice()))
                .collect();
            add(&mut x, next - sigma, &lin(&terms));
        }
        history.insert(0, d);
        history.truncate(max_order - 1);
    }
    x
}

/// Adams–Bashforth coefficients for equal steps, newest derivative first.
fn fixed_coefficients(order: usize) -> Vec<f64> {
    match order {
        1 => vec![1.0],
        2 => vec![3.0 / 2.0, -1.0 / 2.0],
        3 => vec![23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0],
        _ => vec![55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
    }
}

/// The step sizes in sigma `h_n, h_{n−1}, …` ending at step `i` (`order` of them, fewer at the start).
fn steps_back(sigmas: &[f64], i: usize, order: usize) -> Vec<f64> {
    (0..order)
        .map_while(|k| {
            let to = sigmas.get((i + 1).checked_sub(k)?)?;
            let from = sigmas.get(i.checked_sub(k)?)?;
            Some(to - from)
        })
        .collect()
}

/// iPNDM-v's variable-step coefficients from the step sizes `h = [h_n, h_{n−1}, …]` (its order is `h.len()`),
/// newest derivative first; equal steps give AB2 and AB3 exactly (the 4th-order form is the reference's own).
fn variable_coefficients(h: &[f64]) -> Vec<f64> {
    match *h {
        [h0, h1] => {
            let r1 = h0 / h1;
            vec![(2.0 + r1) / 2.0, -r1 / 2.0]
        }
        [h0, h1, h2] => {
            let r1 = h0 / h1;
            let t = third_order_term(h0, h1, h2);
            vec![
                (2.0 + r1) / 2.0 + t,
                -r1 / 2.0 - (1.0 + h1 / h2) * t,
                t * h1 / h2,
            ]
        }
        [h0, h1, h2, h3, ..] => {
            let r1 = h0 / h1;
            let t1 = third_order_term(h0, h1, h2);
            let (s1, s2) = (h0 + h1, h0 + h1 + h2);
            let ratio = h1 * (h1 + h2) / (h2 * (h2 + h3));
            let t2 = ((1.0 - h0 / (3.0 * s1)) / 2.0 + (1.0 - h0 / (2.0 * s1)) * h0 / (6.0 * s2))
                * (h0 * s1 * s2)
                / (h1 * (h1 + h2) * (h1 + h2 + h3));
            vec![
                (2.0 + r1) / 2.0 + t1 + t2,
                -r1 / 2.0 - (1.0 + h1 / h2) * t1 - (1.0 + h1 / h2 + ratio) * t2,
                t1 * h1 / h2 + (h1 / h2 + ratio * (1.0 + h2 / h3)) * t2,
                -t2 * ratio * h1 / h2,
            ]
        }
        _ => vec![1.0],
    }
}

/// The correction the third derivative adds (the reference's `temp`).
fn third_order_term(h0: f64, h1: f64, h2: f64) -> f64 {
    (1.0 - h0 / (3.0 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2.0
}
