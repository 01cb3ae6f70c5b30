//! `cells/<cell>.gif`: a video model's cell as an animated grid, each sample's clip playing in its place of the
//! cell's PNG grid (seeds across, as `cells/<cell>.png`), looping at the experiment's frame rate.

use std::path::Path;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbaImage};

use super::images::{grid, upscale, upscale_factor};
use crate::engine::frames::{clips_to_frames, frame_shape};
use crate::path_error::PathError;

/// Writes `count` clips (`clips`, items of `shape` = C, F·H, W in [-1, 1]) as an animated grid `columns` wide,
/// `fps` frames a second.
pub fn write_clip_gif(
    path: &Path,
    clips: &[f32],
    (shape, frames): ([usize; 3], usize),
    (count, columns): (usize, usize),
    fps: f64,
) -> Result<(), PathError> {
    let frame = frame_shape(shape, frames);
    let per_frame: usize = frame.iter().product();
    let all_frames = clips_to_frames(clips, shape, frames);
    let delay = Delay::from_numer_denom_ms((1000.0 / fps).round().max(10.0) as u32, 1);
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(|e| PathError::other("encode", path, e))?;
        for k in 0..frames {
            // Frame k of every clip: every `frames`-th image from the k-th.
            let frame_k: Vec<f32> = (all_frames.chunks(per_frame))
                .skip(k)
                .step_by(frames)
                .flatten()
                .copied()
                .collect();
            let img = upscale(
                &grid(&frame_k, frame, count, columns),
                upscale_factor(frame),
            );
            let rgba = RgbaImage::from_fn(img.width(), img.height(), |x, y| {
                let [r, g, b] = img.get_pixel(x, y).0;
                image::Rgba([r, g, b, 255])
            });
            encoder
                .encode_frame(Frame::from_parts(rgba, 0, 0, delay))
                .map_err(|e| PathError::other("encode", path, e))?;
        }
    }
    crate::atomic_file::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gif_has_one_frame_per_clip_frame() {
        let dir = std::env::temp_dir().join(format!("difflab-clip-gif-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cell.gif");
        // Two clips of 3 frames, 1 channel 4×4: frame k is k/2 - 0.5 (black, grey, white).
        let clip: Vec<f32> = (0..3)
            .flat_map(|k| vec![k as f32 / 2.0 - 0.5; 16])
            .collect();
        let clips = [clip.clone(), clip].concat();
        write_clip_gif(&path, &clips, ([1, 12, 4], 3), (2, 2), 8.0).unwrap();
        let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let decoder = image::codecs::gif::GifDecoder::new(file).unwrap();
        let frames = image::AnimationDecoder::into_frames(decoder)
            .collect_frames()
            .unwrap();
        assert_eq!(frames.len(), 3);
        // GIF keeps hundredths of a second: 125 ms is 120 or 130.
        let (ms, per) = frames[0].delay().numer_denom_ms();
        assert!((ms as f64 / per as f64 - 125.0).abs() <= 5.0, "{ms}/{per}");
        // The first clip's centre: 4×4 upscaled 16 times, after a 2-pixel gutter.
        let centre = |f: &Frame| f.buffer().get_pixel(2 * 16 + 32, 2 * 16 + 32).0[0];
        assert!(centre(&frames[0]) < centre(&frames[1]) && centre(&frames[1]) < centre(&frames[2]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
