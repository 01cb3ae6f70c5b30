//! Gradient estimation (ComfyUI `gradient_estimation`, `gradient_estimation_cfg_pp`; not in A1111): Euler
//! steps whose derivative is extrapolated from the previous one by `ge_gamma` (Permenter & Yuan, "Interpreting
//! and improving diffusion models from an optimization perspective"). One model call a step, no noise; the
//! step to sigma 0 returns the denoised sample. The CFG++ form takes the derivative from the unconditional
//! prediction and re-noises the guided one along it.

use super::vector::{add, lin, sub, to_d};
use super::{KSampler, Model, Start};

pub const GRADIENT_ESTIMATION: KSampler = KSampler {
    name: "gradient_estimation",
    defaults: r#"{"ge_gamma": 2.0}"#,
    stochastic: |_| false,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start, false)),
};

pub const GRADIENT_ESTIMATION_CFG_PP: KSampler = KSampler {
    name: "gradient_estimation_cfg_pp",
    defaults: r#"{"ge_gamma": 2.0}"#,
    stochastic: |_| false,
    takes_uncond: true,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start, true)),
};

async fn sample(m: Model, start: Start, cfg_pp: bool) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let ge_gamma = s.num("ge_gamma");
    let mut old_d: Option<Vec<f64>> = None;
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let out = m.denoise(&x, sigma).await;
        let denoised = out.guided;
        let d = match (cfg_pp, &out.uncond) {
            (true, Some(uncond)) => to_d(&x, sigma, uncond),
            _ => to_d(&x, sigma, &denoised),
        };
        let dt = next - sigma;
        if next == 0.0 {
            x = denoised;
        } else {
            x = match cfg_pp {
                true => lin(&[(1.0, &denoised), (next, &d)]),
                false => lin(&[(1.0, &x), (dt, &d)]),
            };
            if let Some(old) = &old_d {
                add(&mut x, (ge_gamma - 1.0) * dt, &sub(&d, old));
            }
        }
        old_d = Some(d);
    }
    x
}
