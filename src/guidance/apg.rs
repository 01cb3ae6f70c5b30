//! Adaptive projected guidance (Sadat et al. 2024): the guidance direction cond − uncond, averaged with
//! momentum, clipped to a norm, split into its part along the conditional prediction and the rest, the
//! parallel part weighted by η. Two forms users have:
//! - ComfyUI's APG node: momentum `avg = m·avg + g` starting from the first g, reset when σ rises (a new run);
//!   the result is `cond + s·g'` (the node hands CFG a modified cond);
//! - diffusers' `AdaptiveProjectedGuidance`: `avg = g + m·avg` from 0, result `uncond + s·g'`.

use super::{Call, Guide, dot, norm};

/// `g` clipped to L2 norm `threshold` per item (0: no clipping), then `orthogonal + eta·parallel` to `cond`
/// per item (the projection in f64, as both implementations compute it).
fn project(g: &mut [f64], cond: &[f64], item: usize, threshold: f64, eta: f64) {
    for (g, c) in g.chunks_mut(item).zip(cond.chunks(item)) {
        if threshold > 0.0 {
            let factor = (threshold / norm(g)).min(1.0);
            g.iter_mut().for_each(|v| *v *= factor);
        }
        let unit = norm(c).max(1e-12);
        let along = dot(g, c) / unit;
        for (v, &ci) in g.iter_mut().zip(c) {
            let parallel = along * ci / unit;
            *v = (*v - parallel) + eta * parallel;
        }
    }
}

fn direction(call: &Call) -> Vec<f64> {
    call.cond
        .iter()
        .zip(call.uncond)
        .map(|(c, u)| c - u)
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApgComfy {
    pub eta: f64,
    pub norm_threshold: f64,
    pub momentum: f64,
    average: Option<Vec<f64>>,
    previous_sigma: Option<f64>,
}

impl ApgComfy {
    pub fn new(eta: f64, norm_threshold: f64, momentum: f64) -> Self {
        Self {
            eta,
            norm_threshold,
            momentum,
            average: None,
            previous_sigma: None,
        }
    }
}

impl Guide for ApgComfy {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64> {
        if self.previous_sigma.is_some_and(|p| call.sigma > p) {
            self.average = None;
        }
        self.previous_sigma = Some(call.sigma);
        let mut g = direction(call);
        if self.momentum != 0.0 {
            let average = match self.average.take() {
                None => g.clone(),
                Some(avg) => avg
                    .iter()
                    .zip(&g)
                    .map(|(a, gi)| self.momentum * a + gi)
                    .collect(),
            };
            g.clone_from(&average);
            self.average = Some(average);
        }
        project(
            &mut g,
            call.cond,
            call.item(),
            self.norm_threshold,
            self.eta,
        );
        // CFG of the node's modified cond, `uncond + g + (cond − uncond)/s`, is `cond + s·g`.
        let modified: Vec<f64> = call
            .uncond
            .iter()
            .zip(call.cond.iter().zip(&g))
            .map(|(&u, (&c, &gi))| u + gi + (c - u) / scale)
            .collect();
        call.uncond
            .iter()
            .zip(&modified)
            .map(|(&u, &m)| u + (m - u) * scale)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApgDiffusers {
    pub eta: f64,
    pub norm_threshold: f64,
    pub momentum: f64,
    average: Option<Vec<f64>>,
}

impl ApgDiffusers {
    pub fn new(eta: f64, norm_threshold: f64, momentum: f64) -> Self {
        Self {
            eta,
            norm_threshold,
            momentum,
            average: None,
        }
    }
}

impl Guide for ApgDiffusers {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64> {
        if call.step == 0 {
            self.average = None;
        }
        let g = direction(call);
        let average: Vec<f64> = match self.average.take() {
            None => g,
            Some(avg) => g
                .iter()
                .zip(&avg)
                .map(|(gi, a)| gi + self.momentum * a)
                .collect(),
        };
        let mut g = average.clone();
        self.average = Some(average);
        project(
            &mut g,
            call.cond,
            call.item(),
            self.norm_threshold,
            self.eta,
        );
        call.uncond
            .iter()
            .zip(&g)
            .map(|(u, gi)| u + scale * gi)
            .collect()
    }
}
