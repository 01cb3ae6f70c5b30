//! ComfyUI's RescaleCFG: classifier-free guidance on v-prediction made of the denoised predictions with σ and
//! the sample, the result rescaled to the conditional v's standard deviation per item and mixed by
//! `multiplier`, turned back into a denoised prediction.

use super::{Call, Guide, cfg, std};

#[derive(Debug, Clone, PartialEq)]
pub struct RescaleCfg {
    pub multiplier: f64,
}

impl Guide for RescaleCfg {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64> {
        let s = call.sigma;
        let root = (s * s + 1.0).sqrt();
        let scaled: Vec<f64> = call.x.iter().map(|x| x / (s * s + 1.0)).collect();
        let v = |denoised: &[f64]| -> Vec<f64> {
            scaled
                .iter()
                .zip(denoised)
                .map(|(x, d)| (x - d) * root / s)
                .collect()
        };
        let (v_cond, v_uncond) = (v(call.cond), v(call.uncond));
        let mut guided = cfg(&v_uncond, &v_cond, scale);
        let item = call.item();
        for (g, c) in guided.chunks_mut(item).zip(v_cond.chunks(item)) {
            let ratio = std(c) / std(g);
            for value in g {
                *value = self.multiplier * (*value * ratio) + (1.0 - self.multiplier) * *value;
            }
        }
        scaled
            .iter()
            .zip(&guided)
            .map(|(x, v)| x - v * s / root)
            .collect()
    }
}
