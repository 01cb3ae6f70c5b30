//! ComfyUI's CFGNorm: the guided prediction scaled down, pixel by pixel, to the conditional prediction's norm
//! over the channels (never up), times `strength`.

use super::{Call, Guide, cfg};

#[derive(Debug, Clone, PartialEq)]
pub struct CfgNorm {
    pub strength: f64,
}

impl Guide for CfgNorm {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64> {
        let mut out = cfg(call.uncond, call.cond, scale);
        let [c, h, w] = call.item_shape;
        let plane = h * w;
        for (item, cond) in out.chunks_mut(c * plane).zip(call.cond.chunks(c * plane)) {
            for p in 0..plane {
                let channel_norm =
                    |v: &[f64]| (0..c).map(|k| v[k * plane + p].powi(2)).sum::<f64>().sqrt();
                let factor = (channel_norm(cond) / (channel_norm(item) + 1e-8)).clamp(0.0, 1.0);
                for k in 0..c {
                    item[k * plane + p] *= factor * self.strength;
                }
            }
        }
        out
    }
}
