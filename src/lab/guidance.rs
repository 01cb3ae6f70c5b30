//! Classifier-free guidance as diffusers computes it: `uncond + g·(cond − uncond)`, then `guidance_rescale`
//! (φ) as `rescale_noise_cfg` (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
//! Flawed", §3.4): the guided prediction rescaled to the conditional one's standard deviation, mixed by φ.
//! The other guidance methods ([`crate::guidance`]) run through [`guide_method`], on the model's output or,
//! as ComfyUI's nodes, on the denoised prediction made from it.

use crate::guidance::{Call, Guide};
use crate::sampler::PredictionType;

/// Guides one batch: `uncond` and `cond` hold the model's predictions for the same items (`item` values each);
/// the guided prediction goes to `out`. `g = 1` gives `cond` (diffusers skips the unconditional half then).
pub fn guide(uncond: &[f32], cond: &[f32], g: f32, rescale: f32, item: usize, out: &mut [f32]) {
    for ((o, &u), &c) in out.iter_mut().zip(uncond).zip(cond) {
        *o = u + g * (c - u);
    }
    rescale_all(out, cond, rescale, item);
}

fn rescale_all(out: &mut [f32], cond: &[f32], rescale: f32, item: usize) {
    if rescale > 0.0 {
        for (guided, cond) in out.chunks_mut(item).zip(cond.chunks(item)) {
            rescale_item(guided, cond, rescale);
        }
    }
}

/// One guided model call of a lane, for a guidance method.
pub struct MethodCall<'a> {
    pub uncond: &'a [f32],
    pub cond: &'a [f32],
    /// The empty prompt's prediction, for the methods that take it (Perp-Neg).
    pub empty: Option<&'a [f32]>,
    /// What the model was given (the sample scaled to unit variance) and the call's noise level σ.
    pub input: &'a [f32],
    pub sigma: f64,
    pub prediction: PredictionType,
    pub step: usize,
    pub steps: usize,
    pub item_shape: [usize; 3],
}

/// Guides one lane's call with `method` at scale `g` (then φ = `rescale` as [`guide`]): on the denoised
/// predictions when `on_denoised` (converted back to the model's output after), else on the outputs.
pub fn guide_method(
    method: &mut dyn Guide,
    on_denoised: bool,
    g: f32,
    rescale: f32,
    call: &MethodCall,
    out: &mut [f32],
) {
    let item: usize = call.item_shape.iter().product();
    // At σ = 0 the output says nothing about the denoised sample: plain CFG there.
    let convert = on_denoised && call.sigma > 0.0;
    let space = |o: &[f32]| -> Vec<f64> {
        o.iter()
            .zip(call.input)
            .map(|(&o, &u)| match convert {
                true => to_denoised(call.prediction, f64::from(o), f64::from(u), call.sigma),
                false => f64::from(o),
            })
            .collect()
    };
    let (cond, uncond) = (space(call.cond), space(call.uncond));
    let empty = call.empty.map(space);
    let scale = (1.0 + call.sigma * call.sigma).sqrt();
    let x: Vec<f64> = call
        .input
        .iter()
        .map(|&u| f64::from(u) * sample_scale(call.prediction, scale))
        .collect();
    let guided = method.guide(
        &Call {
            cond: &cond,
            uncond: &uncond,
            empty: empty.as_deref(),
            x: &x,
            sigma: call.sigma,
            step: call.step,
            steps: call.steps,
            item_shape: call.item_shape,
        },
        f64::from(g),
    );
    for ((o, &gv), &u) in out.iter_mut().zip(&guided).zip(call.input) {
        *o = match convert {
            true => from_denoised(call.prediction, gv, f64::from(u), call.sigma),
            false => gv,
        } as f32;
    }
    rescale_all(out, call.cond, rescale, item);
}

/// How the sampler's sample relates to the model's input: σ-space samples are the input times √(1 + σ²);
/// a flow model's and a VE score model's are its input.
fn sample_scale(prediction: PredictionType, scale: f64) -> f64 {
    match prediction {
        PredictionType::FlowPrediction | PredictionType::Score => 1.0,
        _ => scale,
    }
}

/// The denoised sample x0 from output `o` at input `u` (variance-preserving, a flow's or a VE score model's) and noise level σ.
fn to_denoised(prediction: PredictionType, o: f64, u: f64, sigma: f64) -> f64 {
    let scale = (1.0 + sigma * sigma).sqrt();
    match prediction {
        PredictionType::Epsilon => u * scale - sigma * o,
        PredictionType::VPrediction => (u - sigma * o) / scale,
        PredictionType::Sample => o,
        PredictionType::FlowPrediction => u - sigma * o,
        PredictionType::Score => u + sigma * sigma * o,
    }
}

/// The output that gives denoised sample `d` at input `u` and σ: [`to_denoised`] inverted.
fn from_denoised(prediction: PredictionType, d: f64, u: f64, sigma: f64) -> f64 {
    let scale = (1.0 + sigma * sigma).sqrt();
    match prediction {
        PredictionType::Epsilon => (u * scale - d) / sigma,
        PredictionType::VPrediction => (u - d * scale) / sigma,
        PredictionType::Sample => d,
        PredictionType::FlowPrediction => (u - d) / sigma,
        PredictionType::Score => (d - u) / (sigma * sigma),
    }
}

/// `rescale_noise_cfg` on one item: torch's `std` over all but the batch dim (Bessel-corrected).
fn rescale_item(guided: &mut [f32], cond: &[f32], rescale: f32) {
    let ratio = (std(cond) / std(guided)) as f32;
    if !ratio.is_finite() {
        return;
    }
    for v in guided {
        let rescaled = *v * ratio;
        *v = rescale * rescaled + (1.0 - rescale) * *v;
    }
}

fn std(values: &[f32]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    var.sqrt()
}

#[cfg(test)]
mod tests {
    use super::{from_denoised, guide, to_denoised};
    use crate::sampler::PredictionType;

    #[test]
    fn denoised_and_back_is_the_output() {
        for prediction in [
            PredictionType::Epsilon,
            PredictionType::VPrediction,
            PredictionType::Sample,
            PredictionType::FlowPrediction,
            PredictionType::Score,
        ] {
            let d = to_denoised(prediction, 0.3, -1.2, 2.5);
            assert!(
                (from_denoised(prediction, d, -1.2, 2.5) - 0.3).abs() < 1e-12,
                "{prediction:?}"
            );
        }
        // ε: x_t = √ᾱ(x0 + σ ε) with σ = 0.75 (ᾱ = 0.64): x0 = 1, ε = 2 give x_t = 0.8·2.5 = 2.
        assert!((to_denoised(PredictionType::Epsilon, 2.0, 2.0, 0.75) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn guidance_extrapolates_from_uncond_through_cond() {
        let (u, c) = ([0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 0.0, 5.0]);
        let mut out = [0.0; 4];
        guide(&u, &c, 1.0, 0.0, 2, &mut out);
        assert_eq!(out, c);
        guide(&u, &c, 0.0, 0.0, 2, &mut out);
        assert_eq!(out, u);
        guide(&u, &c, 7.5, 0.0, 2, &mut out);
        assert_eq!(out, [7.5, 1.0, -13.0, 18.0]);
    }

    #[test]
    fn full_rescale_matches_the_conditional_std_per_item() {
        let u = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let c = [1.0, 2.0, 3.0, 1.0, 1.5, 2.0];
        let mut out = [0.0; 6];
        guide(&u, &c, 5.0, 1.0, 3, &mut out);
        // Item 0: guided [5, 10, 15] has std 5, cond std 1, so the result is [1, 2, 3].
        for (o, w) in out[..3].iter().zip([1.0, 2.0, 3.0]) {
            assert!((o - w).abs() < 1e-5, "{out:?}");
        }
        // Item 1: guided [1, 3.5, 6] (std 2.5) scaled by 0.5/2.5.
        for (o, w) in out[3..].iter().zip([0.2, 0.7, 1.2]) {
            assert!((o - w).abs() < 1e-5, "{out:?}");
        }
        // φ = 0.7 mixes: 0.7·rescaled + 0.3·guided.
        guide(&u, &c, 5.0, 0.7, 3, &mut out);
        assert!((out[2] - (0.7 * 3.0 + 0.3 * 15.0)).abs() < 1e-4, "{out:?}");
    }
}
