//! Guidance only part of the way (Kynkäänniemi et al. 2024): inside the window the inner method guides,
//! outside it the conditional prediction goes through unguided. The window is a σ range (both ends
//! included) or, as diffusers' guiders take it, step fractions: on iff `⌊start·n⌋ ≤ step < ⌊stop·n⌋`.

use super::{Call, Guide};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    Sigma { lo: f64, hi: f64 },
    Steps { start: f64, stop: f64 },
}

impl Window {
    pub fn contains(self, call: &Call) -> bool {
        match self {
            Self::Sigma { lo, hi } => lo <= call.sigma && call.sigma <= hi,
            Self::Steps { start, stop } => {
                let n = call.steps as f64;
                (start * n) as usize <= call.step && call.step < (stop * n) as usize
            }
        }
    }
}

pub struct Interval {
    pub window: Window,
    pub inner: Box<dyn Guide + Send>,
}

impl Guide for Interval {
    fn guide(&mut self, call: &Call, scale: f64) -> Vec<f64> {
        match self.window.contains(call) {
            true => self.inner.guide(call, scale),
            false => call.cond.to_vec(),
        }
    }
}
