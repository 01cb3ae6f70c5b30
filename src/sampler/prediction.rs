use serde::{Deserialize, Serialize};

/// What a model's output means (diffusers' `prediction_type`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PredictionType {
    /// The noise that was added (epsilon).
    Epsilon,
    /// v = sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x0 (Salimans & Ho).
    VPrediction,
    /// The clean sample x0 itself.
    Sample,
    /// The flow velocity eps − x0 of rectified-flow models (SD3, Flux), with x = (1 − s)·x0 + s·eps.
    FlowPrediction,
    /// The score ∇ log p_σ(x) of a variance-exploding model (NCSN++, diffusers' ScoreSdeVePipeline), which takes
    /// x = x0 + σ·eps as it is and σ as its timestep: x0 = x + σ²·score.
    Score,
}

impl PredictionType {
    /// Every name, as diffusers' configs spell them.
    pub const NAMES: &'static [&'static str] = <Self as strum::VariantNames>::VARIANTS;

    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}

/// What happens to the x0 prediction before it is used: diffusers' `clip_sample` (+ `clip_sample_range`)
/// or `thresholding` (Imagen's dynamic thresholding, + `dynamic_thresholding_ratio`, `sample_max_value`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum X0Clip {
    None,
    Clip { range: f64 },
    Threshold { ratio: f64, max: f64 },
}

impl X0Clip {
    /// Whether the clip acts on each value alone (and so can be fused into a step's single pass).
    pub fn is_elementwise(self) -> bool {
        !matches!(self, Self::Threshold { .. })
    }

    /// The clip of one value, for elementwise clips (thresholding passes values through).
    #[inline]
    pub fn clip_value(self, v: f64) -> f64 {
        match self {
            Self::Clip { range } => v.clamp(-range, range),
            _ => v,
        }
    }

    /// Applies the clip to a batch of `batch` x0 predictions in place.
    pub fn apply(self, x0: &mut [f32], batch: usize) {
        match self {
            Self::None => {}
            Self::Clip { range } => {
                let r = range as f32;
                for v in x0 {
                    *v = v.clamp(-r, r);
                }
            }
            Self::Threshold { ratio, max } => {
                let item_len = x0.len() / batch.max(1);
                if item_len == 0 {
                    return;
                }
                let mut sorted = Vec::with_capacity(item_len);
                for item in x0.chunks_mut(item_len) {
                    sorted.clear();
                    sorted.extend(item.iter().map(|v| v.abs()));
                    sorted.sort_by(f32::total_cmp);
                    let s = quantile_sorted(&sorted, ratio).clamp(1.0, max) as f32;
                    for v in item {
                        *v = v.clamp(-s, s) / s;
                    }
                }
            }
        }
    }
}

/// `torch.quantile` with linear interpolation, on sorted values.
fn quantile_sorted(sorted: &[f32], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let w = pos - lo as f64;
    sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * w
}

impl PredictionType {
    /// Reads a model output as (x0, epsilon) for `x = alpha * x0 + sigma * eps`.
    #[inline]
    pub fn x0_eps(self, out: f64, x: f64, alpha: f64, sigma: f64) -> (f64, f64) {
        match self {
            Self::Epsilon => ((x - sigma * out) / alpha, out),
            Self::VPrediction => (alpha * x - sigma * out, alpha * out + sigma * x),
            Self::Sample => (out, (x - alpha * out) / sigma),
            // alpha = 1 − s, sigma = s on the flow path.
            Self::FlowPrediction => (x - sigma * out, x + alpha * out),
            // The score at x / alpha on the VE path with σ_VE = sigma / alpha: eps = −σ_VE·score.
            Self::Score => {
                let eps = -sigma / alpha * out;
                ((x - sigma * eps) / alpha, eps)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholding_scales_each_item_by_its_own_quantile() {
        // item 0: |x| quantile 0.5 of [0.5, 2, 3, 4] = 2.5 -> clamp to ±2.5 then divide.
        let mut x = vec![0.5, -2.0, 3.0, 4.0, 0.1, 0.2, 0.3, 0.4];
        X0Clip::Threshold {
            ratio: 0.5,
            max: 10.0,
        }
        .apply(&mut x, 2);
        assert_eq!(&x[..4], &[0.2, -0.8, 1.0, 1.0]);
        // item 1: quantile 0.25 is below 1, so s = 1 and nothing changes.
        assert_eq!(&x[4..], &[0.1, 0.2, 0.3, 0.4]);
    }
}
