//! Perp-Neg (Armandpour et al. 2023) as ComfyUI's node makes it: the negative prompt's direction from the empty
//! prompt, less its part along the positive direction, subtracted: `empty + s·(pos − neg_scale·perp)`. ComfyUI
//! projects over the whole batch at once; `per_item` projects each item on its own, so that no sample depends
//! on its batch (the lab's way).

use super::{Call, Guide, cfg, dot};

#[derive(Debug, Clone, PartialEq)]
pub struct PerpNeg {
    pub neg_scale: f64,
    pub per_item: bool,
}

impl Guide for PerpNeg {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64> {
        // Without the empty prompt's prediction there is nothing to project from: plain CFG.
        let Some(empty) = call.empty else {
            return cfg(call.uncond, call.cond, scale);
        };
        let pos: Vec<f64> = call.cond.iter().zip(empty).map(|(c, e)| c - e).collect();
        let neg: Vec<f64> = call.uncond.iter().zip(empty).map(|(u, e)| u - e).collect();
        let chunk = match self.per_item {
            true => call.item().max(1),
            false => pos.len().max(1),
        };
        let mut out = Vec::with_capacity(pos.len());
        for ((e, p), n) in empty
            .chunks(chunk)
            .zip(pos.chunks(chunk))
            .zip(neg.chunks(chunk))
        {
            let along = dot(n, p) / dot(p, p);
            // The positive and empty predictions agree: no direction to keep the negative off.
            let along = if along.is_finite() { along } else { 0.0 };
            out.extend(
                e.iter()
                    .zip(p.iter().zip(n))
                    .map(|(e, (p, n))| e + scale * (p - self.neg_scale * (n - along * p))),
            );
        }
        out
    }
}
