//! Classifier-free guidance as diffusers computes it: `uncond + g·(cond − uncond)`, then `guidance_rescale`
//! (φ) as `rescale_noise_cfg` (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
//! Flawed", §3.4): the guided prediction rescaled to the conditional one's standard deviation, mixed by φ.

/// Guides one batch: `uncond` and `cond` hold the model's predictions for the same items (`item` values each);
/// the guided prediction goes to `out`. `g = 1` gives `cond` (diffusers skips the unconditional half then).
pub fn guide(uncond: &[f32], cond: &[f32], g: f32, rescale: f32, item: usize, out: &mut [f32]) {
    for ((o, &u), &c) in out.iter_mut().zip(uncond).zip(cond) {
        *o = u + g * (c - u);
    }
    if rescale > 0.0 {
        for (guided, cond) in out.chunks_mut(item).zip(cond.chunks(item)) {
            rescale_item(guided, cond, rescale);
        }
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
    use super::guide;

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
