//! A cell's preview samples at every step (the x0 prediction), kept as small 8-bit thumbnails within a
//! fixed budget, so the dashboard can step back through a run and `difflab run --save-steps` can draw it.

/// Thumbnails are at most this many pixels on a side.
const MAX_SIDE: usize = 64;
/// A cell's trajectory never holds more than this; past it, every other step is dropped.
const BUDGET: usize = 4 << 20;

/// One step's thumbnails of every preview sample, in preview order (C × H × W each, [`Trajectory::shape`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The number of steps taken (1 after the first).
    pub step: usize,
    pub pixels: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trajectory {
    /// One thumbnail's C, H, W.
    pub shape: [usize; 3],
    pub frames: Vec<Frame>,
    /// Steps kept: every `stride`-th (and the last), doubled whenever the budget is reached.
    stride: usize,
}

impl Trajectory {
    /// Records step `step`'s previews `images` (samples of `shape`, display space [-1, 1]) of the preview
    /// samples from `first` on, of `previews` in all.
    pub fn record(
        &mut self,
        step: usize,
        steps: usize,
        first: usize,
        images: &[f32],
        shape: [usize; 3],
        previews: usize,
    ) {
        let item = shape.iter().product::<usize>().max(1);
        let thumb = thumb_shape(shape);
        if self.shape != thumb {
            *self = Trajectory {
                shape: thumb,
                stride: 1,
                ..Trajectory::default()
            };
        }
        let stride = self.stride.max(1);
        if !step.is_multiple_of(stride) && step != steps {
            return;
        }
        let size = thumb.iter().product::<usize>();
        let at = match self.frames.iter().position(|f| f.step == step) {
            Some(at) => at,
            None => {
                self.frames.push(Frame {
                    step,
                    pixels: vec![0; previews * size],
                });
                self.frames.sort_by_key(|f| f.step);
                self.frames.iter().position(|f| f.step == step).unwrap_or(0)
            }
        };
        let frame = &mut self.frames[at];
        for (k, sample) in images.chunks(item).enumerate() {
            let i = first + k;
            if i >= previews {
                break;
            }
            let out = &mut frame.pixels[i * size..(i + 1) * size];
            shrink(sample, shape, thumb, out);
        }
        self.keep_within_budget(previews * size);
    }

    /// Drops every other step (never the last) while the frames exceed the budget.
    fn keep_within_budget(&mut self, frame_bytes: usize) {
        while self.frames.len() > 2 && self.frames.len() * frame_bytes > BUDGET {
            self.stride = self.stride.max(1) * 2;
            let last = self.frames.last().map(|f| f.step);
            let stride = self.stride;
            self.frames
                .retain(|f| f.step.is_multiple_of(stride) || Some(f.step) == last);
        }
    }

    /// Preview sample `item` of frame `k` as a display-space sample ([-1, 1], [`Trajectory::shape`]).
    pub fn sample(&self, k: usize, item: usize) -> Option<Vec<f32>> {
        let size = self.shape.iter().product::<usize>();
        let pixels = self
            .frames
            .get(k)?
            .pixels
            .get(item * size..(item + 1) * size)?;
        Some(pixels.iter().map(|&p| f32::from(p) / 127.5 - 1.0).collect())
    }
}

/// The thumbnail shape of samples of `shape`: the same channels, at most [`MAX_SIDE`] on a side.
fn thumb_shape(shape: [usize; 3]) -> [usize; 3] {
    let [c, h, w] = shape;
    let factor = h.max(w).div_ceil(MAX_SIDE).max(1);
    [c, h.div_ceil(factor), w.div_ceil(factor)]
}

/// Box-averages one sample of `shape` into `out` (`thumb`), as 8-bit values.
fn shrink(sample: &[f32], shape: [usize; 3], thumb: [usize; 3], out: &mut [u8]) {
    let [c, h, w] = shape;
    let [_, th, tw] = thumb;
    let (fy, fx) = (h.div_ceil(th), w.div_ceil(tw));
    for ch in 0..c {
        for ty in 0..th {
            for tx in 0..tw {
                let (mut sum, mut n) = (0.0f32, 0u32);
                for y in ty * fy..((ty + 1) * fy).min(h) {
                    for x in tx * fx..((tx + 1) * fx).min(w) {
                        sum += sample[ch * h * w + y * w + x];
                        n += 1;
                    }
                }
                let v = if n == 0 { -1.0 } else { sum / n as f32 };
                out[ch * th * tw + ty * tw + tx] =
                    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_samples_are_kept_as_they_are_and_large_ones_shrunk() {
        assert_eq!(thumb_shape([1, 32, 32]), [1, 32, 32]);
        assert_eq!(thumb_shape([3, 512, 512]), [3, 64, 64]);
        assert_eq!(thumb_shape([3, 512, 768]), [3, 43, 64]);
    }

    #[test]
    fn every_step_is_recorded_and_read_back() {
        let mut t = Trajectory::default();
        for step in 1..=10 {
            let v = step as f32 / 10.0;
            t.record(step, 10, 0, &[v; 2 * 4], [1, 2, 2], 2);
        }
        assert_eq!(t.frames.len(), 10);
        let last = t.sample(9, 1).expect("frame 9, sample 1");
        assert!(last.iter().all(|&p| (p - 1.0).abs() < 1e-2), "{last:?}");
        let first = t.sample(0, 0).expect("frame 0");
        assert!(first.iter().all(|&p| (p - 0.1).abs() < 1e-2), "{first:?}");
    }

    #[test]
    fn a_long_run_stays_within_the_budget_and_keeps_its_last_step() {
        let mut t = Trajectory::default();
        let shape = [3, 64, 64];
        let previews = 40;
        let images = vec![0.0; previews * 3 * 64 * 64];
        for step in 1..=1000 {
            t.record(step, 1000, 0, &images, shape, previews);
        }
        let bytes: usize = t.frames.iter().map(|f| f.pixels.len()).sum();
        assert!(bytes <= BUDGET, "{bytes}");
        assert!(t.frames.len() >= 4, "{}", t.frames.len());
        assert_eq!(t.frames.last().map(|f| f.step), Some(1000));
    }
}
