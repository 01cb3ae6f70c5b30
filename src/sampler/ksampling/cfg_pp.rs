//! The CFG++ samplers (ComfyUI `euler_cfg_pp`, `euler_ancestral_cfg_pp`, `dpmpp_2m_cfg_pp`,
//! `dpmpp_2s_ancestral_cfg_pp`; Chung et al. 2024): each step lands on the guided prediction but re-noises it
//! along the *unconditional* prediction's noise direction, which lets guidance scales near 1 work. They take
//! the unconditional denoised prediction beside the guided one, and call the model even at scale 1.

use super::common::{ancestral_step, sigma_of, t_of};
use super::vector::{add, lin, sub};
use super::{Denoised, KSampler, Model, Start};

pub const EULER_CFG_PP: KSampler = KSampler {
    name: "euler_cfg_pp",
    defaults: "{}",
    stochastic: |_| false,
    takes_uncond: true,
    adaptive: false,
    run: |m, start| Box::pin(euler_ancestral(m, start, 0.0, 0.0)),
};

pub const EULER_ANCESTRAL_CFG_PP: KSampler = KSampler {
    name: "euler_ancestral_cfg_pp",
    defaults: r#"{"eta": 1.0, "s_noise": 1.0}"#,
    stochastic: |s| s.num("eta") > 0.0 && s.num("s_noise") > 0.0,
    takes_uncond: true,
    adaptive: false,
    run: |m, start| {
        let (eta, s_noise) = (start.settings.num("eta"), start.settings.num("s_noise"));
        Box::pin(euler_ancestral(m, start, eta, s_noise))
    },
};

pub const DPMPP_2M_CFG_PP: KSampler = KSampler {
    name: "dpmpp_2m_cfg_pp",
    defaults: "{}",
    stochastic: |_| false,
    takes_uncond: true,
    adaptive: false,
    run: |m, start| Box::pin(dpmpp_2m(m, start)),
};

pub const DPMPP_2S_ANCESTRAL_CFG_PP: KSampler = KSampler {
    name: "dpmpp_2s_ancestral_cfg_pp",
    defaults: r#"{"eta": 1.0, "s_noise": 1.0}"#,
    stochastic: |s| s.num("eta") > 0.0 && s.num("s_noise") > 0.0,
    takes_uncond: true,
    adaptive: false,
    run: |m, start| Box::pin(dpmpp_2s_ancestral(m, start)),
};

/// The guided and unconditional predictions at `x`, `sigma` (a model without an unconditional output
/// gives the guided one for both: CFG++ is then the plain sampler).
async fn predict(m: &Model, x: &[f64], sigma: f64) -> (Vec<f64>, Vec<f64>) {
    let Denoised { guided, uncond } = m.denoise(x, sigma).await;
    let uncond = uncond.unwrap_or_else(|| guided.clone());
    (guided, uncond)
}

/// `sigma·exp(−log sigma)`: 1 for these (non-flow) models up to rounding, which the reference keeps.
fn alpha(sigma: f64) -> f64 {
    sigma * t_of(sigma).exp()
}

async fn euler_ancestral(m: Model, start: Start, eta: f64, s_noise: f64) -> Vec<f64> {
    let Start { mut x, sigmas, .. } = start;
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let (denoised, uncond) = predict(&m, &x, sigma).await;
        if next == 0.0 {
            x = denoised;
            break;
        }
        let (alpha_s, alpha_t) = (alpha(sigma), alpha(next));
        let d: Vec<f64> = x
            .iter()
            .zip(&uncond)
            .map(|(x, u)| (x - alpha_s * u) / sigma)
            .collect();
        let (down, up) = ancestral_step(sigma / alpha_s, next / alpha_t, eta);
        x = lin(&[(alpha_t, &denoised), (alpha_t * down, &d)]);
        if eta > 0.0 && s_noise > 0.0 {
            let z = m.noise(sigma, next).await;
            add(&mut x, alpha_t * s_noise * up, &z);
        }
    }
    x
}

async fn dpmpp_2m(m: Model, start: Start) -> Vec<f64> {
    let Start { mut x, sigmas, .. } = start;
    let mut old_uncond: Option<Vec<f64>> = None;
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let (denoised, uncond) = predict(&m, &x, sigma).await;
        let h = t_of(next) - t_of(sigma);
        let decay = (-h).exp();
        let mut mix = lin(&[(-decay, &uncond)]);
        if let (Some(old), Some(&previous)) = (&old_uncond, sigmas.get(i.wrapping_sub(1)))
            && next != 0.0
        {
            let r = (t_of(sigma) - t_of(previous)) / h;
            add(&mut mix, -(-h).exp_m1() / (2.0 * r), &sub(&denoised, old));
        }
        x = lin(&[(1.0, &denoised), (1.0, &mix), (decay, &x)]);
        old_uncond = Some(uncond);
    }
    x
}

async fn dpmpp_2s_ancestral(m: Model, start: Start) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings,
        ..
    } = start;
    let (eta, s_noise) = (settings.num("eta"), settings.num("s_noise"));
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let (denoised, uncond) = predict(&m, &x, sigma).await;
        let (down, up) = ancestral_step(sigma, next, eta);
        if down == 0.0 {
            x = denoised;
        } else {
            let (t, t_next) = (t_of(sigma), t_of(down));
            let h = t_next - t;
            let mid = t + h / 2.0;
            // Each update starts from x moved by the guidance (the guided prediction less the latest
            // unconditional one: at the second update, the midpoint's, as ComfyUI's hook leaves it).
            let shifted = |uncond: &[f64]| lin(&[(1.0, &x), (1.0, &denoised), (-1.0, uncond)]);
            let x_2 = lin(&[
                (sigma_of(mid) / sigma_of(t), &shifted(&uncond)),
                (-(-h / 2.0).exp_m1(), &denoised),
            ]);
            let (denoised_2, uncond_2) = predict(&m, &x_2, sigma_of(mid)).await;
            x = lin(&[
                (sigma_of(t_next) / sigma_of(t), &shifted(&uncond_2)),
                (-(-h).exp_m1(), &denoised_2),
            ]);
        }
        if next > 0.0 {
            let z = m.noise(sigma, next).await;
            add(&mut x, s_noise * up, &z);
        }
    }
    x
}
