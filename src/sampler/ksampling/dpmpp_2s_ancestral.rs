//! DPM++ 2S a (A1111 "DPM++ 2S a", ComfyUI `dpmpp_2s_ancestral`): a second-order single-step DPM-Solver++
//! step through the midpoint in log sigma down to the ancestral step's sigma, then the ancestral noise back.
//! Two model calls a step; the last step, down to 0, is one Euler step.

use super::common::{ancestral_step, sigma_of, t_of};
use super::vector::{lin, to_d};
use super::{KSampler, Model, Start};

pub const SAMPLER: KSampler = KSampler {
    name: "dpmpp_2s_ancestral",
    defaults: r#"{"eta": 1.0, "s_noise": 1.0}"#,
    stochastic: |s| s.num("eta") > 0.0 && s.num("s_noise") > 0.0,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start)),
};

async fn sample(m: Model, start: Start) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let (eta, s_noise) = (s.num("eta"), s.num("s_noise"));
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = m.denoise(&x, sigma).await.guided;
        let (down, up) = ancestral_step(sigma, next, eta);
        if down == 0.0 {
            let d = to_d(&x, sigma, &denoised);
            x = lin(&[(1.0, &x), (down - sigma, &d)]);
        } else {
            let (t, t_next) = (t_of(sigma), t_of(down));
            let h = t_next - t;
            let mid = t + h / 2.0;
            let x_2 = lin(&[
                (sigma_of(mid) / sigma_of(t), &x),
                (-(-h / 2.0).exp_m1(), &denoised),
            ]);
            let denoised_2 = m.denoise(&x_2, sigma_of(mid)).await.guided;
            x = lin(&[
                (sigma_of(t_next) / sigma_of(t), &x),
                (-(-h).exp_m1(), &denoised_2),
            ]);
        }
        if next > 0.0 {
            let z = m.noise(sigma, next).await;
            super::vector::add(&mut x, s_noise * up, &z);
        }
    }
    x
}
