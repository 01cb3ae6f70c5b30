//! The size images are sent at to the dashboard and the comparison grid: a terminal shows a few hundred
//! pixels per sample at most, so a 1024² SDXL image (12 MB as floats) is sent shrunk, never at full size
//! each step. Files of their own (cells/*.png, samples/*.npy) keep the full size. A video model's clip (held as
//! its frames stacked top to bottom, see [`crate::engine::frames`]) is displayed as a strip of its frames left to
//! right, each frame shrunk within [`FRAME_MAX`].

use super::resize::fit;
use crate::engine::frames::{clip_shape, frame_shape, frames_side_by_side};

/// The longest side of a sample as displayed.
pub const DISPLAY_MAX: usize = 256;

/// The longest side of one frame of a clip as displayed: a strip of 16 frames stays a few MB.
pub const FRAME_MAX: usize = 128;

/// The displayed shape of an image (`frames` = 1) or of a clip of `frames` frames (C, F·H, W): the image shrunk
/// by the smallest whole factor that brings both sides within [`DISPLAY_MAX`]; a clip as a strip C × h × F·w of
/// its frames, each shrunk within [`FRAME_MAX`].
pub fn display_shape(image: [usize; 3], frames: usize) -> [usize; 3] {
    if frames <= 1 {
        return shrunk(image, DISPLAY_MAX);
    }
    let [c, h, w] = shrunk(frame_shape(image, frames), FRAME_MAX);
    [c, h, frames * w]
}

fn shrunk([c, h, w]: [usize; 3], max: usize) -> [usize; 3] {
    let factor = h.max(w).div_ceil(max).max(1);
    [c, (h / factor).max(1), (w / factor).max(1)]
}

/// `images` (items of `from`) at the display size: [`display_shape`]'s.
pub fn for_display(images: Vec<f32>, from: [usize; 3], frames: usize) -> Vec<f32> {
    fit_display(images, from, display_shape(from, frames), frames)
}

/// `images` (items of `from`, clips of `frames` frames stacked top to bottom) resampled to `display`, a shape
/// [`display_shape`] gave: clips as strips of their frames.
pub fn fit_display(
    images: Vec<f32>,
    from: [usize; 3],
    display: [usize; 3],
    frames: usize,
) -> Vec<f32> {
    let frames = frames.max(1);
    let [c, h, strip_w] = display;
    let frame = [c, h, strip_w / frames];
    let stacked = clip_shape(frame, frames);
    let fitted = match stacked == from {
        true => images,
        false => fit(&images, from, stacked),
    };
    match frames {
        1 => fitted,
        f => frames_side_by_side(&fitted, frame, f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_images_are_displayed_as_they_are() {
        assert_eq!(display_shape([3, 64, 64], 1), [3, 64, 64]);
        assert_eq!(display_shape([1, 256, 200], 1), [1, 256, 200]);
        let images = vec![0.5; 2 * 64];
        assert_eq!(for_display(images.clone(), [1, 8, 8], 1), images);
    }

    #[test]
    fn large_images_shrink_by_a_whole_factor() {
        assert_eq!(display_shape([3, 512, 512], 1), [3, 256, 256]);
        assert_eq!(display_shape([3, 1024, 1024], 1), [3, 256, 256]);
        assert_eq!(display_shape([3, 768, 512], 1), [3, 256, 170]);
        // A block-averaged shrink keeps a flat image flat.
        let shrunk = for_display(vec![0.25; 2 * 3 * 512 * 512], [3, 512, 512], 1);
        assert_eq!(shrunk.len(), 2 * 3 * 256 * 256);
        assert!(shrunk.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn a_clip_is_displayed_as_a_strip_of_its_frames() {
        // 2 frames of 1 channel, 256×256 each, frame f filled with f.
        let clip: Vec<f32> = (0..2).flat_map(|f| vec![f as f32; 256 * 256]).collect();
        assert_eq!(display_shape([1, 512, 256], 2), [1, 128, 256]);
        let strip = for_display(clip, [1, 512, 256], 2);
        assert_eq!(strip.len(), 128 * 256);
        // Each row runs through frame 0 then frame 1.
        for row in strip.chunks(256) {
            assert!(row[..128].iter().all(|&v| v == 0.0) && row[128..].iter().all(|&v| v == 1.0));
        }
    }
}
