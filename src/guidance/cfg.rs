//! Classifier-free guidance (Ho & Salimans 2022) as diffusers' `ClassifierFreeGuidance` makes it:
//! `uncond + s·(cond − uncond)`, or from the conditional prediction (`use_original_formulation`:
//! `cond + s·(cond − uncond)`), then `guidance_rescale` φ (Lin et al. 2023): the result rescaled to the
//! conditional prediction's standard deviation per item and mixed by φ.

use super::{Call, Guide, std};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cfg {
    pub original_formulation: bool,
    pub rescale: f64,
}

impl Guide for Cfg {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64> {
        let base = if self.original_formulation {
            call.cond
        } else {
            call.uncond
        };
        let mut out: Vec<f64> = base
            .iter()
            .zip(call.cond.iter().zip(call.uncond))
            .map(|(&b, (&c, &u))| b + scale * (c - u))
            .collect();
        if self.rescale > 0.0 {
            let item = call.item();
            for (guided, cond) in out.chunks_mut(item).zip(call.cond.chunks(item)) {
                let ratio = std(cond) / std(guided);
                for v in guided {
                    *v = self.rescale * (*v * ratio) + (1.0 - self.rescale) * *v;
                }
            }
        }
        out
    }
}
