//! Heun++ (ComfyUI `heunpp2`; from the sd-webui-samplers-scheduler extension for A1111): Karras-style steps
//! with optional churn that average the derivatives at `sigma`, `sigma_next` and the sigma after it, weighted
//! by those sigmas over the first. Three model calls a step, two (Heun) on the next-to-last step, one (Euler)
//! on the last. Fresh noise is drawn before every step's first call, also when churn is off (then unused).

use serde_json::Value;

use super::vector::{add, lin, to_d};
use super::{KSampler, Model, Settings, Start};

/// `s_tmax` null stands for the reference's `inf` (no upper bound), which JSON cannot spell.
pub const SAMPLER: KSampler = KSampler {
    name: "heunpp2",
    defaults: r#"{"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": null, "s_noise": 1.0}"#,
    stochastic: |s| {
        s.num("s_churn") > 0.0 && s.num("s_noise") != 0.0 && s.num("s_tmin") <= s_tmax(s)
    },
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start)),
};

/// The upper sigma bound of the churn: a number, or no bound (null, or any non-number such as "inf").
fn s_tmax(s: &Settings) -> f64 {
    s.0.get("s_tmax")
        .and_then(Value::as_f64)
        .unwrap_or(f64::INFINITY)
}

async fn sample(m: Model, start: Start) -> Vec<f64> {
    let Start {
        mut x,
        sigmas,
        settings: s,
        ..
    } = start;
    let (s_churn, s_tmin, s_noise) = (s.num("s_churn"), s.num("s_tmin"), s.num("s_noise"));
    let s_tmax = s_tmax(&s);
    let (Some(&first), Some(&end)) = (sigmas.first(), sigmas.last()) else {
        return x;
    };
    let steps = sigmas.len().saturating_sub(1);
    for i in 0..steps {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let gamma = match s_tmin <= sigma && sigma <= s_tmax {
            true => (s_churn / steps as f64).min(2f64.sqrt() - 1.0),
            false => 0.0,
        };
        // Drawn every step, as the reference does, so later draws line up.
        let eps = m.noise(sigma, next).await;
        let sigma_hat = sigma * (gamma + 1.0);
        if gamma > 0.0 {
            add(
                &mut x,
                s_noise * (sigma_hat * sigma_hat - sigma * sigma).sqrt(),
                &eps,
            );
        }
        let denoised = m.denoise(&x, sigma_hat).await.guided;
        let d = to_d(&x, sigma_hat, &denoised);
        let dt = next - sigma_hat;
        let after = sigmas.get(i + 2).copied().filter(|_| next != end);
        let slope = match after {
            None => d,
            Some(after) => {
                let x_2 = lin(&[(1.0, &x), (dt, &d)]);
                let d_2 = to_d(&x_2, next, &m.denoise(&x_2, next).await.guided);
                if after == end {
                    let w2 = next / (2.0 * first);
                    lin(&[(1.0 - w2, &d), (w2, &d_2)])
                } else {
                    let x_3 = lin(&[(1.0, &x_2), (after - next, &d_2)]);
                    let d_3 = to_d(&x_3, after, &m.denoise(&x_3, after).await.guided);
                    let (w2, w3) = (next / (3.0 * first), after / (3.0 * first));
                    lin(&[(1.0 - w2 - w3, &d), (w2, &d_2), (w3, &d_3)])
                }
            }
        };
        add(&mut x, dt, &slope);
    }
    x
}
