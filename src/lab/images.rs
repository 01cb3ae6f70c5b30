//! Sample grids as PNG: model space [-1, 1] to 8-bit pixels.

use std::path::Path;

use image::{ImageBuffer, Rgb, RgbImage};

/// The gutter between samples in a grid, in sample pixels (before upscaling).
pub const GAP: usize = 2;

/// Enough to make small samples visible in a grid (16×16 digits become 64×64).
pub fn upscale_factor(shape: [usize; 3]) -> u32 {
    (64 / shape[1].max(shape[2]).max(1)).max(1) as u32
}

/// A grid of `count` samples of shape (C, H, W), `columns` wide, with a [`GAP`]-pixel gutter.
/// One channel is grey; three are RGB; any other count shows the first channel.
pub fn grid(samples: &[f32], shape: [usize; 3], count: usize, columns: usize) -> RgbImage {
    let [c, h, w] = shape;
    let columns = columns.clamp(1, count.max(1));
    let rows = count.div_ceil(columns).max(1);
    let gap = GAP;
    let mut img: RgbImage = ImageBuffer::from_pixel(
        (columns * (w + gap) + gap) as u32,
        (rows * (h + gap) + gap) as u32,
        Rgb([40, 40, 40]),
    );
    let item = c * h * w;
    for (k, sample) in samples.chunks(item).take(count).enumerate() {
        let (ox, oy) = (
            (k % columns) * (w + gap) + gap,
            (k / columns) * (h + gap) + gap,
        );
        for y in 0..h {
            for x in 0..w {
                let at = |ch: usize| to_u8(sample[ch * h * w + y * w + x]);
                let px = if c == 3 {
                    [at(0), at(1), at(2)]
                } else {
                    [at(0); 3]
                };
                img.put_pixel((ox + x) as u32, (oy + y) as u32, Rgb(px));
            }
        }
    }
    img
}

/// Scales an image up by an integer factor (nearest neighbour), so small samples are visible.
pub fn upscale(img: &RgbImage, factor: u32) -> RgbImage {
    image::imageops::resize(
        img,
        img.width() * factor,
        img.height() * factor,
        image::imageops::FilterType::Nearest,
    )
}

fn to_u8(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Writes a PNG atomically.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<(), crate::path_error::PathError> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| crate::path_error::PathError::other("encode the image", path, e))?;
    crate::atomic_file::write_atomic(path, &bytes)
}
