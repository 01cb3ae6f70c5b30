//! Perp-Neg (Armandpour et al. 2023) as ComfyUI's node makes it: the negative prompt's direction from the empty
//! prompt, less its part along the positive direction, subtracted: `empty + s·(pos − neg_scale·perp)`, the
//! projection over the whole batch at once.

use super::{Call, Guide, cfg, dot};

#[derive(Debug, Clone, PartialEq)]
pub struct PerpNeg {
    pub neg_scale: f64,
}

impl Guide for PerpNeg {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64> {
        // Without the empty prompt's prediction there is nothing to project from: plain CFG.
        let Some(empty) = call.empty else {
            return cfg(call.uncond, call.cond, scale);
        };
        let pos: Vec<f64> = call.cond.iter().zip(empty).map(|(c, e)| c - e).collect();
        let neg: Vec<f64> = call.uncond.iter().zip(empty).map(|(u, e)| u - e).collect();
        let along = dot(&neg, &pos) / dot(&pos, &pos);
        empty
            .iter()
            .zip(pos.iter().zip(&neg))
            .map(|(e, (p, n))| e + scale * (p - self.neg_scale * (n - along * p)))
            .collect()
    }
}
