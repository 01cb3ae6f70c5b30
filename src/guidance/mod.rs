//! Guidance methods: how a guided prediction is made of the model's conditional and unconditional ones, as
//! diffusers' guiders and ComfyUI's guidance nodes make it. Each method is a pure function of one call's
//! predictions, with the state it keeps between calls (APG's momentum); one file per method.
//!
//! The predictions are whatever the caller guides in (diffusers: the model's output; ComfyUI: denoised x0);
//! items are laid out one after another, `item_shape` = [C, H, W] values each.

mod apg;
mod cfg;
mod cfg_norm;
mod cfg_zero_star;
mod interval;
mod method;
mod perp_neg;
mod rescale_cfg;

pub use apg::{ApgComfy, ApgDiffusers};
pub use cfg::Cfg;
pub use cfg_norm::CfgNorm;
pub use cfg_zero_star::{CfgZeroStarComfy, CfgZeroStarDiffusers};
pub use interval::{Interval, Window};
pub use method::{GuidanceMethod, MethodName};
pub use perp_neg::PerpNeg;
pub use rescale_cfg::RescaleCfg;

/// One guided model call.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub cond: &'a [f64],
    pub uncond: &'a [f64],
    /// The empty prompt's prediction (Perp-Neg's third one), when the run makes it.
    pub empty: Option<&'a [f64]>,
    /// The sample the model was called on, and its σ.
    pub x: &'a [f64],
    pub sigma: f64,
    /// The 0-based step and the run's step count.
    pub step: usize,
    pub steps: usize,
    /// One item's [C, H, W].
    pub item_shape: [usize; 3],
}

impl Call<'_> {
    fn item(&self) -> usize {
        self.item_shape.iter().product()
    }
}

/// A guidance method: the guided prediction of a call at guidance scale `scale`.
pub trait Guide {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64>;
}

/// `uncond + scale·(cond − uncond)`.
fn cfg(uncond: &[f64], cond: &[f64], scale: f64) -> Vec<f64> {
    uncond
        .iter()
        .zip(cond)
        .map(|(&u, &c)| u + (c - u) * scale)
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// torch's `std` of one item (Bessel-corrected).
fn std(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    var.sqrt()
}
