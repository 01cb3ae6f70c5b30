//! DPM++ 2M SDE and DPM++ 3M SDE (A1111 "DPM++ 2M SDE" / "DPM++ 3M SDE", ComfyUI `dpmpp_2m_sde`,
//! `dpmpp_3m_sde` and their `_gpu` forms): multistep DPM-Solver++ on the SDE, whose noise is the sample's
//! Brownian path as the UIs draw it. One model call a step; the last step returns the denoised sample.

use super::common::t_of;
use super::vector::{add, lin, sub};
use super::{KSampler, Model, Settings, Start};

pub const DPMPP_2M_SDE: KSampler = KSampler {
    name: "dpmpp_2m_sde",
    defaults: r#"{"eta": 1.0, "s_noise": 1.0, "solver_type": "midpoint"}"#,
    stochastic: sde_noise,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample_2m(m, start)),
};

pub const DPMPP_3M_SDE: KSampler = KSampler {
    name: "dpmpp_3m_sde",
    defaults: r#"{"eta": 1.0, "s_noise": 1.0}"#,
    stochastic: sde_noise,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample_3m(m, start)),
};

fn sde_noise(s: &Settings) -> bool {
    s.num("eta") > 0.0 && s.num("s_noise") > 0.0
}

/// The SDE's noise from `sigma` to `next`: `next·sqrt(1 − e^(−2·h·eta))·s_noise` times a Brownian increment.
async fn add_noise(m: &Model, x: &mut [f64], sigma: f64, next: f64, h: f64, s: &Settings) {
    let (eta, s_noise) = (s.num("eta"), s.num("s_noise"));
    if eta > 0.0 && s_noise > 0.0 {
        let z = m.brownian(sigma, next).await;
        add(x, next * (-(-2.0 * h * eta).exp_m1()).sqrt() * s_noise, &z);
    }
}

async fn sample_2m(m: Model, start: Start) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let eta = s.num("eta");
    let heun = s.text("solver_type") == "heun";
    let mut old: Option<(Vec<f64>, f64)> = None;
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = m.denoise(&x, sigma).await.guided;
        if next == 0.0 {
            x = denoised;
            break;
        }
        let h = t_of(next) - t_of(sigma);
        let h_eta = h * (eta + 1.0);
        let e = -(-h_eta).exp_m1();
        x = lin(&[(next / sigma * (-h * eta).exp(), &x), (e, &denoised)]);
        if let Some((old_denoised, h_last)) = &old {
            let r = h_last / h;
            let c = match heun {
                true => e / -h_eta + 1.0,
                false => 0.5 * e,
            };
            add(&mut x, c / r, &sub(&denoised, old_denoised));
        }
        add_noise(&m, &mut x, sigma, next, h, &s).await;
        old = Some((denoised, h));
    }
    x
}

async fn sample_3m(m: Model, start: Start) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let eta = s.num("eta");
    // The last two steps' denoised samples and step sizes, newest first.
    let mut history: Vec<(Vec<f64>, f64)> = Vec::new();
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = m.denoise(&x, sigma).await.guided;
        if next == 0.0 {
            x = denoised;
            break;
        }
        let h = t_of(next) - t_of(sigma);
        let h_eta = h * (eta + 1.0);
        x = lin(&[((-h_eta).exp(), &x), (-(-h_eta).exp_m1(), &denoised)]);
        let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
        match history.as_slice() {
            [(d_1, h_1), (d_2, h_2), ..] => {
                let (r0, r1) = (h_1 / h, h_2 / h);
                let d1_0: Vec<f64> = sub(&denoised, d_1).iter().map(|v| v / r0).collect();
                let d1_1: Vec<f64> = sub(d_1, d_2).iter().map(|v| v / r1).collect();
                let diff = sub(&d1_0, &d1_1);
                let d1 = lin(&[(1.0, &d1_0), (r0 / (r0 + r1), &diff)]);
                let phi_3 = phi_2 / h_eta - 0.5;
                add(&mut x, phi_2, &d1);
                add(&mut x, -phi_3 / (r0 + r1), &diff);
            }
            [(d_1, h_1)] => {
                let r = h_1 / h;
                add(&mut x, phi_2 / r, &sub(&denoised, d_1));
            }
            [] => {}
        }
        add_noise(&m, &mut x, sigma, next, h, &s).await;
        history.insert(0, (denoised, h));
        history.truncate(2);
    }
    x
}
