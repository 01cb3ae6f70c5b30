//! img2img's start images: read, fitted to the run's image size, encoded by the VAE encoder (a pixel model takes
//! them as they are), and each lane's noised start as diffusers makes it: the VAE's sample of the image's
//! latent distribution, then the sampler's `add_noise` at the strength's first timestep.

use std::path::Path;

use image::imageops::FilterType;

use super::plan::Item;
use crate::engine::{EncodedImage, VaeEncoder};
use crate::experiment::InitPer;
use crate::sampler::Noising;
use crate::sampler::torch_noise::TorchGenerator;

/// A run's start images, encoded, and which sample takes which.
#[derive(Debug, Clone, PartialEq)]
pub struct StartImages {
    pub images: Vec<EncodedImage>,
    pub per: InitPer,
}

/// Where a lane's draws come from: torch's generator per seed (the VAE's sample, then the noise, as one
/// `torch.Generator` gives them to the pipeline), or difflab's streams (unit noise and the VAE's noise).
pub enum StartDraws {
    Torch,
    Given { noise: Vec<f32>, encoder: Vec<f32> },
}

impl StartImages {
    /// The start image of `item`.
    pub fn of(&self, item: &Item) -> &EncodedImage {
        let n = self.images.len();
        &self.images[match self.per {
            InitPer::All => 0,
            InitPer::Condition => item.condition % n,
            InitPer::Seed => item.seed_index % n,
        }]
    }

    /// The lane's first sample: each item's latents (a sample of its image's distribution) noised by
    /// `noising`.
    pub fn noised(&self, items: &[Item], noising: Noising, draws: StartDraws) -> Vec<f32> {
        let len = self.images[0].len();
        let mut x = vec![0.0; items.len() * len];
        let mut latents = Vec::with_capacity(len);
        for (k, (item, out)) in items.iter().zip(x.chunks_mut(len)).enumerate() {
            let image = self.of(item);
            let (encoder, noise) = match &draws {
                StartDraws::Torch => {
                    let mut g = TorchGenerator::new(item.seed);
                    let mut draw = || g.randn(len).unwrap_or_else(|| vec![0.0; len]);
                    let encoder = image.std.as_ref().map(|_| draw());
                    (encoder.unwrap_or_default(), draw())
                }
                StartDraws::Given { noise, encoder } => (
                    encoder[k * len..(k + 1) * len].to_vec(),
                    noise[k * len..(k + 1) * len].to_vec(),
                ),
            };
            image.latents(&encoder, &mut latents);
            noising.apply(&latents, &noise, out);
        }
        x
    }
}

/// Reads every start image, fits it to `image_shape` (C × H × W of the run's images) and encodes it; `notes`
/// hears of images resized.
pub fn encode(
    paths: &[impl AsRef<Path>],
    image_shape: [usize; 3],
    mut encoder: Option<&mut VaeEncoder>,
    notes: &mut Vec<String>,
) -> Result<Vec<EncodedImage>, String> {
    paths
        .iter()
        .map(|path| {
            let path = path.as_ref();
            let (pixels, note) = read_image(path, image_shape)?;
            notes.extend(note);
            match encoder.as_deref_mut() {
                Some(e) => e
                    .encode(&pixels, image_shape)
                    .map_err(|e| format!("{}: {e}", path.display())),
                None => Ok(EncodedImage {
                    shape: image_shape,
                    mean: pixels,
                    std: None,
                    scaling_factor: 1.0,
                    shift_factor: 0.0,
                }),
            }
        })
        .collect()
}

/// An image file as C × H × W values in [-1, 1] (`v / 255 · 2 − 1`, as diffusers' image processor makes them),
/// gray for one channel, resized (Lanczos) when its size is not the run's, with a note saying so.
pub fn read_image(
    path: &Path,
    [c, h, w]: [usize; 3],
) -> Result<(Vec<f32>, Option<String>), String> {
    let image = image::open(path).map_err(|e| {
        format!(
            "[conditioning] init_image {}: {e}; give a PNG or JPEG image",
            path.display()
        )
    })?;
    let (iw, ih) = (image.width() as usize, image.height() as usize);
    let note = ((iw, ih) != (w, h)).then(|| {
        format!(
            "{}: {iw}×{ih} resized to the run's {w}×{h} (Lanczos; diffusers resizes with PIL, whose pixels differ slightly)",
            path.display()
        )
    });
    let image = match note {
        Some(_) => image.resize_exact(w as u32, h as u32, FilterType::Lanczos3),
        None => image,
    };
    let planes: Vec<Vec<u8>> = match c {
        1 => vec![image.to_luma8().into_raw()],
        3 => {
            let rgb = image.to_rgb8().into_raw();
            (0..3)
                .map(|k| rgb.iter().skip(k).step_by(3).copied().collect())
                .collect()
        }
        _ => {
            return Err(format!(
                "[conditioning] init_image {}: the model's images have {c} channels; start images are gray (1) or RGB (3)",
                path.display()
            ));
        }
    };
    let pixels = planes
        .iter()
        .flatten()
        .map(|&v| 2.0 * (v as f32 / 255.0) - 1.0)
        .collect();
    Ok((pixels, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_are_planes_in_minus_one_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.png");
        let mut img = image::RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([0, 255, 51]));
        img.put_pixel(1, 0, image::Rgb([255, 0, 102]));
        img.save(&path).unwrap();
        let (pixels, note) = read_image(&path, [3, 1, 2]).unwrap();
        assert_eq!(note, None);
        assert_eq!(
            pixels,
            [-1.0, 1.0, 1.0, -1.0, 2.0 * 0.2 - 1.0, 2.0 * 0.4 - 1.0]
        );
        let (_, note) = read_image(&path, [3, 2, 4]).unwrap();
        assert!(note.unwrap().contains("2×1 resized to the run's 4×2"));
    }

    #[test]
    fn a_missing_or_broken_image_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.png");
        std::fs::write(&path, b"not a png").unwrap();
        let e = read_image(&path, [3, 8, 8]).unwrap_err();
        assert!(e.contains("broken.png") && e.contains("PNG or JPEG"), "{e}");
    }
}
