//! How much a video model's clips change from frame to frame: the mean absolute difference between
//! consecutive frames, pixels in [0, 1]. A steady clip scores near 0; flicker and unrelated frames score high.
//! It adds up across samples and shards as a sum over frame pairs.

use serde::{Deserialize, Serialize};

/// The sum of per-pair mean absolute differences, and how many consecutive frame pairs it covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameChange {
    pub sum: f64,
    pub pairs: usize,
}

impl FrameChange {
    /// Adds `clips` (items of `shape` = C, F·H, W in model space: each clip's [C, F, H, W]) of `frames`
    /// frames, each value clamped to [-1, 1] as the saved pixels are.
    pub fn add_clips(&mut self, clips: &[f32], [c, fh, w]: [usize; 3], frames: usize) {
        let plane = fh / frames.max(1) * w;
        for clip in clips.chunks_exact(c * fh * w) {
            for f in 1..frames {
                let total: f64 = (0..c)
                    .map(|ch| {
                        let at = |k: usize| {
                            &clip[(ch * frames + k) * plane..(ch * frames + k + 1) * plane]
                        };
                        (at(f).iter().zip(at(f - 1)))
                            .map(|(a, b)| {
                                f64::from((a.clamp(-1.0, 1.0) - b.clamp(-1.0, 1.0)).abs())
                            })
                            .sum::<f64>()
                    })
                    .sum();
                // Model space [-1, 1] is twice the pixel range.
                self.sum += total / (2.0 * (c * plane) as f64);
                self.pairs += 1;
            }
        }
    }

    pub fn merge(&mut self, other: &FrameChange) {
        self.sum += other.sum;
        self.pairs += other.pairs;
    }

    /// The mean over every frame pair; `None` without pairs.
    pub fn mean(&self) -> Option<f64> {
        (self.pairs > 0).then(|| self.sum / self.pairs as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_still_clip_does_not_change_and_a_cut_changes_fully() {
        let mut still = FrameChange::default();
        still.add_clips(&[0.3; 2 * 3 * 4], [2, 3 * 2, 2], 3);
        assert_eq!((still.mean(), still.pairs), (Some(0.0), 2));
        // One channel, 2 frames of 2 pixels: black then white, a full change.
        let mut cut = FrameChange::default();
        cut.add_clips(&[-1.0, -1.0, 1.0, 1.0], [1, 2, 2], 2);
        assert_eq!(cut.mean(), Some(1.0));
        cut.merge(&still);
        assert_eq!((cut.mean(), cut.pairs), (Some(1.0 / 3.0), 3));
        assert_eq!(FrameChange::default().mean(), None);
        // Values beyond the pixel range count as the pixels they are saved as.
        let mut beyond = FrameChange::default();
        beyond.add_clips(&[-5.0, 5.0], [1, 2, 1], 2);
        assert_eq!(beyond.mean(), Some(1.0));
    }
}
