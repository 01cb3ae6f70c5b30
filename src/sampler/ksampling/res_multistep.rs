//! RES multistep (ComfyUI `res_multistep`, `res_multistep_ancestral`, `res_multistep_cfg_pp`,
//! `res_multistep_ancestral_cfg_pp`; not in A1111): the second-order refined exponential multistep solver
//! (arXiv 2308.02157) in `t = −log sigma`, Euler on the first step. One model call a step; after every step
//! with `sigma_next > 0` noise is drawn (also when `eta` = 0, then scaled by `sigma_up` = 0). The ancestral
//! forms step to the ancestral step's sigma, the CFG++ forms integrate the unconditional prediction and add
//! the guidance `denoised − uncond` to the sample.

use super::common::{ancestral_step, sigma_of, t_of};
use super::vector::{add, lin, sub, to_d};
use super::{KSampler, Model, Settings, Start};

pub const RES_MULTISTEP: KSampler = KSampler {
    name: "res_multistep",
    defaults: r#"{"s_noise": 1.0}"#,
    stochastic: |_| false,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start, false, false)),
};

pub const RES_MULTISTEP_ANCESTRAL: KSampler = KSampler {
    name: "res_multistep_ancestral",
    defaults: r#"{"eta": 1.0, "s_noise": 1.0}"#,
    stochastic: ancestral_noise,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start, true, false)),
};

pub const RES_MULTISTEP_CFG_PP: KSampler = KSampler {
    name: "res_multistep_cfg_pp",
    defaults: r#"{"s_noise": 1.0}"#,
    stochastic: |_| false,
    takes_uncond: true,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start, false, true)),
};

pub const RES_MULTISTEP_ANCESTRAL_CFG_PP: KSampler = KSampler {
    name: "res_multistep_ancestral_cfg_pp",
    defaults: r#"{"eta": 1.0, "s_noise": 1.0}"#,
    stochastic: ancestral_noise,
    takes_uncond: true,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start, true, true)),
};

fn ancestral_noise(s: &Settings) -> bool {
    s.num("eta") > 0.0 && s.num("s_noise") > 0.0
}

/// The previous step: its (unconditional, for CFG++) prediction and the sigma it stepped down to.
struct Previous {
    denoised: Vec<f64>,
    sigma_down: f64,
}

async fn sample(m: Model, start: Start, ancestral: bool, cfg_pp: bool) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let eta = if ancestral { s.num("eta") } else { 0.0 };
    let s_noise = s.num("s_noise");
    let mut previous: Option<Previous> = None;
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let out = m.denoise(&x, sigma).await;
        let denoised = out.guided;
        // CFG++ integrates the unconditional prediction.
        let base = match cfg_pp {
            true => out.uncond.unwrap_or_else(|| denoised.clone()),
            false => denoised.clone(),
        };
        let (down, up) = ancestral_step(sigma, next, eta);
        let sigma_prev = i.checked_sub(1).and_then(|k| sigmas.get(k));
        match (&previous, sigma_prev) {
            (Some(prev), Some(&sigma_prev)) if down != 0.0 => {
                if cfg_pp {
                    add(&mut x, 1.0, &sub(&denoised, &base));
                }
                x = second_order(&x, &base, prev, sigma, down, sigma_prev);
            }
            _ => {
                let d = to_d(&x, sigma, &base);
                x = match cfg_pp {
                    true => lin(&[(1.0, &denoised), (down, &d)]),
                    false => lin(&[(1.0, &x), (down - sigma, &d)]),
                };
            }
        }
        if next > 0.0 {
            let z = m.noise(sigma, next).await;
            add(&mut x, s_noise * up, &z);
        }
        previous = Some(Previous {
            denoised: base,
            sigma_down: down,
        });
    }
    x
}

/// The multistep step from `sigma` down to `down`: `c2` places the previous prediction, made at `sigma_prev`,
/// relative to the interval between the previous step's target and this one's.
fn second_order(
    x: &[f64],
    denoised: &[f64],
    prev: &Previous,
    sigma: f64,
    down: f64,
    sigma_prev: f64,
) -> Vec<f64> {
    let (t, t_next) = (t_of(sigma), t_of(down));
    let h = t_next - t;
    let c2 = (t_of(sigma_prev) - t_of(prev.sigma_down)) / h;
    let phi1 = (-h).exp_m1() / -h;
    let phi2 = (phi1 - 1.0) / -h;
    let b1 = nan_to_num(phi1 - phi2 / c2);
    let b2 = nan_to_num(phi2 / c2);
    lin(&[
        (sigma_of(h), x),
        (h * b1, denoised),
        (h * b2, &prev.denoised),
    ])
}

/// torch's `nan_to_num(v, nan=0)`: NaN to 0, infinities to the largest finite values.
fn nan_to_num(v: f64) -> f64 {
    match v {
        v if v.is_nan() => 0.0,
        f64::INFINITY => f64::MAX,
        f64::NEG_INFINITY => f64::MIN,
        v => v,
    }
}
