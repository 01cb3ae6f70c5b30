//! The size images are sent at to the dashboard and the comparison grid: a terminal shows a few hundred
//! pixels per sample at most, so a 1024² SDXL image (12 MB as floats) is sent shrunk, never at full size
//! each step. Files of their own (cells/*.png, samples/*.npy) keep the full size.

use super::resize::fit;

/// The longest side of a sample as displayed.
pub const DISPLAY_MAX: usize = 256;

/// `image` shrunk by the smallest whole factor that brings both sides within [`DISPLAY_MAX`].
pub fn display_shape(image: [usize; 3]) -> [usize; 3] {
    let [c, h, w] = image;
    let factor = h.max(w).div_ceil(DISPLAY_MAX).max(1);
    [c, (h / factor).max(1), (w / factor).max(1)]
}

/// `images` (items of `from`) at the display size.
pub fn for_display(images: Vec<f32>, from: [usize; 3]) -> Vec<f32> {
    let to = display_shape(from);
    if to == from {
        return images;
    }
    fit(&images, from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_images_are_displayed_as_they_are() {
        assert_eq!(display_shape([3, 64, 64]), [3, 64, 64]);
        assert_eq!(display_shape([1, 256, 200]), [1, 256, 200]);
        let images = vec![0.5; 2 * 64];
        assert_eq!(for_display(images.clone(), [1, 8, 8]), images);
    }

    #[test]
    fn large_images_shrink_by_a_whole_factor() {
        assert_eq!(display_shape([3, 512, 512]), [3, 256, 256]);
        assert_eq!(display_shape([3, 1024, 1024]), [3, 256, 256]);
        assert_eq!(display_shape([3, 768, 512]), [3, 256, 170]);
        // A block-averaged shrink keeps a flat image flat.
        let shrunk = for_display(vec![0.25; 2 * 3 * 512 * 512], [3, 512, 512]);
        assert_eq!(shrunk.len(), 2 * 3 * 256 * 256);
        assert!(shrunk.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }
}
