//! CFG-Zero* (Fan et al. 2025): the unconditional prediction scaled by α, the projection of the conditional
//! one on it, before guiding. ComfyUI's node takes α of the velocity-like `x − denoised` vectors and returns
//! `α·uncond + s·(cond − α·uncond)`; diffusers' guider takes α of the predictions themselves (in float32),
//! and zeros the first `zero_init_steps` steps.

use super::{Call, Guide, dot};

/// α per item: `<a, b> / (‖b‖² + 1e-8)`.
fn alphas(a: &[f64], b: &[f64], item: usize) -> Vec<f64> {
    a.chunks(item)
        .zip(b.chunks(item))
        .map(|(a, b)| dot(a, b) / (dot(b, b) + 1e-8))
        .collect()
}

fn scaled_cfg(call: &Call, scale: f64, alpha: &[f64]) -> Vec<f64> {
    let item = call.item();
    call.uncond
        .iter()
        .zip(call.cond)
        .enumerate()
        .map(|(i, (&u, &c))| {
            let au = alpha[i / item] * u;
            au + scale * (c - au)
        })
        .collect()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CfgZeroStarComfy;

impl Guide for CfgZeroStarComfy {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64> {
        let from_x = |d: &[f64]| -> Vec<f64> { call.x.iter().zip(d).map(|(x, d)| x - d).collect() };
        let alpha = alphas(&from_x(call.cond), &from_x(call.uncond), call.item());
        scaled_cfg(call, scale, &alpha)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CfgZeroStarDiffusers {
    pub zero_init_steps: usize,
}

impl Guide for CfgZeroStarDiffusers {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64> {
        if call.step < self.zero_init_steps {
            return vec![0.0; call.cond.len()];
        }
        let item = call.item();
        let alpha: Vec<f64> = call
            .cond
            .chunks(item)
            .zip(call.uncond.chunks(item))
            .map(|(c, u)| {
                let (c32, u32): (Vec<f32>, Vec<f32>) = (
                    c.iter().map(|&v| v as f32).collect(),
                    u.iter().map(|&v| v as f32).collect(),
                );
                let dot: f32 = c32.iter().zip(&u32).map(|(a, b)| a * b).sum();
                let sq: f32 = u32.iter().map(|b| b * b).sum::<f32>() + 1e-8;
                f64::from(dot / sq)
            })
            .collect();
        scaled_cfg(call, scale, &alpha)
    }
}
