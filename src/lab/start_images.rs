//! img2img's and inpainting's start images: read, fitted to the run's image size, encoded by the VAE encoder (a
//! pixel model takes them as they are), and each lane's noised start as diffusers makes it: the VAE's sample of
//! the image's latent distribution, then the sampler's `add_noise` at the strength's first timestep. Inpainting
//! masks are binarized and brought to the latents' size as diffusers does.

use std::path::Path;

use image::imageops::FilterType;

use super::plan::Item;
use crate::engine::{EncodedImage, VaeEncoder};
use crate::experiment::{ConditioningSpec, ControlImageSet, InitPer};
use crate::sampler::Noising;
use crate::sampler::torch_noise::TorchGenerator;

/// A run's start images, encoded, and which sample takes which.
#[derive(Debug, Clone, PartialEq)]
pub struct StartImages {
    pub images: Vec<EncodedImage>,
    pub per: InitPer,
    /// Inpainting masks at the latents' size (1: repaint, 0: keep), one for every start image or one each.
    pub masks: Vec<Vec<f32>>,
    /// For an inpainting U-Net (9 input channels), each start image with its mask's region blanked, encoded:
    /// the model takes the mask and a sample of these latents beside each sample. Empty for a plain U-Net.
    pub masked: Vec<EncodedImage>,
}

/// A run's ControlNet control images (3 × H × W in [0, 1] each): for each ControlNet in the model's order, its
/// images and which sample takes which.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlImages {
    pub sets: Vec<(Vec<Vec<f32>>, InitPer)>,
}

impl ControlImages {
    /// Reads each ControlNet's control images at `image_shape`; notes say where an image was resized.
    pub fn read(
        sets: &[ControlImageSet],
        image_shape: [usize; 3],
        notes: &mut Vec<String>,
    ) -> Result<Self, String> {
        let mut read = Vec::new();
        for set in sets {
            let mut images = Vec::new();
            for path in &set.images {
                let (image, note) = read_control_image(path, image_shape)?;
                notes.extend(note);
                images.push(image);
            }
            read.push((images, set.per));
        }
        Ok(Self { sets: read })
    }

    /// The control images of `items`, one after another: each item's image for every ControlNet in turn.
    pub fn of(&self, items: &[Item]) -> Vec<f32> {
        items
            .iter()
            .flat_map(|item| {
                self.sets.iter().flat_map(|(images, per)| {
                    let k = per.pick(images.len(), item.condition, item.seed_index);
                    images[k].iter().copied()
                })
            })
            .collect()
    }
}

/// A lane's first sample, and for inpainting what every step blends the known region from (a plain U-Net) or
/// what the model takes beside each sample (an inpainting U-Net: mask, then masked-image latents, per item).
pub struct LaneStart {
    pub x: Vec<f32>,
    pub inpaint: Option<Inpaint>,
    pub concat: Option<Vec<f32>>,
}

/// Inpainting with a plain U-Net: after each step the known region (mask 0) is the clean latents noised to the
/// next call's level, as StableDiffusionInpaintPipeline blends them.
pub struct Inpaint {
    pub clean: Vec<f32>,
    pub noise: Vec<f32>,
    pub mask: Vec<f32>,
}

impl Inpaint {
    /// Blends `x` with the known region, noised by `noising` (`None`: the clean latents, after the last call).
    pub fn blend(&self, noising: Option<Noising>, x: &mut [f32]) {
        // Computed in place, as `Noising::apply` computes it: this runs every step of every inpainting lane.
        let (a, s) = noising.map_or((1.0, 0.0), |n| (n.signal as f32, n.noise as f32));
        let known = self
            .clean
            .iter()
            .zip(&self.noise)
            .map(|(&c, &z)| a * c + s * z);
        for ((v, k), &m) in x.iter_mut().zip(known).zip(&self.mask) {
            *v = (1.0 - m) * k + m * *v;
        }
    }
}

/// Where a lane's draws come from: torch's generator per seed (the VAE's sample of the start image, the noise,
/// then the VAE's sample of the masked image, as one `torch.Generator` gives them to the pipeline), or
/// difflab's streams (unit noise and the VAE's noises).
pub enum StartDraws {
    Torch,
    Given {
        noise: Vec<f32>,
        encoder: Vec<f32>,
        masked: Vec<f32>,
    },
}

impl StartImages {
    /// The start image of `item`, by index.
    fn index_of(&self, item: &Item) -> usize {
        let n = self.images.len();
        match self.per {
            InitPer::All => 0,
            InitPer::Condition => item.condition % n,
            InitPer::Seed => item.seed_index % n,
        }
    }

    /// The start image of `item`.
    pub fn of(&self, item: &Item) -> &EncodedImage {
        &self.images[self.index_of(item)]
    }

    /// The mask of `item`'s start image, when the run inpaints.
    fn mask_of(&self, item: &Item) -> Option<&[f32]> {
        let n = self.masks.len();
        (n > 0).then(|| self.masks[self.index_of(item) % n].as_slice())
    }

    /// The lane's first sample: each item's latents (a sample of its image's distribution) noised by `noising`,
    /// or for inpainting from pure noise (`None`: strength 1) the noise times `init_sigma`, as the pipelines
    /// start; with masks, what its steps blend from or what its model takes beside it.
    pub fn start(
        &self,
        items: &[Item],
        noising: Option<Noising>,
        init_sigma: f32,
        draws: StartDraws,
    ) -> LaneStart {
        let len = self.images[0].len();
        let concat = !self.masked.is_empty();
        let (mut x, mut clean, mut noises, mut extra) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut latents = Vec::with_capacity(len);
        let mut out = vec![0.0; len];
        for (k, item) in items.iter().enumerate() {
            let image = self.of(item);
            let masked = self
                .masked
                .get(self.index_of(item) % self.masked.len().max(1));
            let (encoder, noise, masked_noise) = match &draws {
                StartDraws::Torch => {
                    let mut g = TorchGenerator::new(item.seed);
                    let mut draw = || g.randn(len).unwrap_or_else(|| vec![0.0; len]);
                    // An inpainting U-Net at strength 1 starts from noise alone: the image is not encoded then.
                    let encoded = image.std.is_some() && !(concat && noising.is_none());
                    let encoder = encoded.then(&mut draw).unwrap_or_default();
                    let noise = draw();
                    let masked_noise = masked.and_then(|m| m.std.as_ref()).map(|_| draw());
                    (encoder, noise, masked_noise.unwrap_or_default())
                }
                StartDraws::Given {
                    noise,
                    encoder,
                    masked,
                } => (
                    encoder[k * len..(k + 1) * len].to_vec(),
                    noise[k * len..(k + 1) * len].to_vec(),
                    masked[k * len..(k + 1) * len].to_vec(),
                ),
            };
            image.latents(&encoder, &mut latents);
            match noising {
                Some(n) => n.apply(&latents, &noise, &mut out),
                None => out
                    .iter_mut()
                    .zip(&noise)
                    .for_each(|(o, &z)| *o = z * init_sigma),
            }
            x.extend_from_slice(&out);
            clean.extend_from_slice(&latents);
            noises.extend_from_slice(&noise);
            if let Some(m) = masked {
                extra.extend_from_slice(self.mask_of(item).unwrap_or_default());
                m.latents(&masked_noise, &mut latents);
                extra.extend_from_slice(&latents);
            }
        }
        let blend = !self.masks.is_empty() && !concat;
        let inpaint = blend.then(|| Inpaint {
            // The mask holds for every channel of the latents.
            mask: items
                .iter()
                .flat_map(|i| {
                    let mask = self.mask_of(i).unwrap_or_default();
                    std::iter::repeat_n(mask, len / mask.len().max(1))
                        .flatten()
                        .copied()
                })
                .collect(),
            clean,
            noise: noises,
        });
        LaneStart {
            x,
            inpaint,
            concat: concat.then_some(extra),
        }
    }
}

/// The run's start images (and masks) ready for its lanes: each image read and fitted to `image_shape` (C × H × W
/// of the run's images) and encoded; masks at the latents' `[h, w]`; for an inpainting U-Net (`concat`) the masked
/// images encoded too. `notes` hears of images resized.
pub fn prepare(
    spec: &ConditioningSpec,
    image_shape: [usize; 3],
    latent_hw: [usize; 2],
    mut encoder: Option<&mut VaeEncoder>,
    concat: bool,
    notes: &mut Vec<String>,
) -> Result<StartImages, String> {
    let image_hw = [image_shape[1], image_shape[2]];
    let mut pixels = Vec::new();
    for path in &spec.init_images {
        let (p, note) = read_image(path, image_shape)?;
        notes.extend(note);
        pixels.push(p);
    }
    let mut encode = |p: &[f32]| encode_pixels(p, image_shape, encoder.as_deref_mut());
    let images = pixels.iter().map(|p| encode(p)).collect::<Result<_, _>>()?;
    let full: Vec<Vec<f32>> = (spec.masks.iter())
        .map(|p| read_mask(p, image_hw))
        .collect::<Result<_, _>>()?;
    let masked = match concat && !full.is_empty() {
        true => (pixels.iter().enumerate())
            .map(|(k, p)| encode(&masked_image(p, &full[k % full.len()])))
            .collect::<Result<_, _>>()?,
        false => Vec::new(),
    };
    Ok(StartImages {
        images,
        per: spec.init_per,
        masks: full
            .iter()
            .map(|m| latent_mask(m, image_hw, latent_hw))
            .collect(),
        masked,
    })
}

/// The start image of each of `items` (display order), at `image_shape`, with the region its mask repaints
/// tinted red, for the dashboard's start column.
pub fn preview_tiles(
    spec: &ConditioningSpec,
    items: &[Item],
    image_shape: [usize; 3],
) -> Result<Vec<f32>, String> {
    let [c, h, w] = image_shape;
    let mut images = Vec::new();
    for path in &spec.init_images {
        images.push(read_image(path, image_shape)?.0);
    }
    let masks: Vec<Vec<f32>> = (spec.masks.iter())
        .map(|p| read_mask(p, [h, w]))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(items.len() * c * h * w);
    for item in items {
        let k = spec
            .init_image_index(item.condition, item.seed_index)
            .unwrap_or(0);
        let mut tile = images[k].clone();
        if let Some(mask) = masks.get(k % masks.len().max(1)) {
            tint(&mut tile, mask);
        }
        out.extend(tile);
    }
    Ok(out)
}

/// The control image of each of `items` (display order), at `image_shape` in [-1, 1] like the previews, for the
/// dashboard's control column; with several ControlNets, their images' mean, so that each shows.
pub fn control_tiles(
    spec: &ConditioningSpec,
    items: &[Item],
    image_shape: [usize; 3],
) -> Result<Vec<f32>, String> {
    let control = ControlImages::read(&spec.controls, image_shape, &mut Vec::new())?;
    let nets = control.sets.len().max(1);
    let per = image_shape.iter().product::<usize>();
    let all = control.of(items);
    Ok(all
        .chunks(per * nets)
        .flat_map(|item| {
            (0..per).map(move |i| {
                let mean = (0..nets).map(|k| item[k * per + i]).sum::<f32>() / nets as f32;
                mean * 2.0 - 1.0
            })
        })
        .collect())
}

/// Halfway to red (gray's mid-tone for one channel) where `mask` repaints.
fn tint(pixels: &mut [f32], mask: &[f32]) {
    let plane = mask.len();
    let channels = pixels.len() / plane.max(1);
    for (i, v) in pixels.iter_mut().enumerate() {
        let to = match (channels, i / plane) {
            (3, 0) => 1.0,
            (3, _) => -1.0,
            _ => 0.0,
        };
        if mask[i % plane] >= 0.5 {
            *v = 0.5 * (*v + to);
        }
    }
}

/// One image's pixels through the VAE encoder, or as they are for a pixel model.
fn encode_pixels(
    pixels: &[f32],
    image_shape: [usize; 3],
    encoder: Option<&mut VaeEncoder>,
) -> Result<EncodedImage, String> {
    match encoder {
        Some(e) => e.encode(pixels, image_shape).map_err(|e| e.to_string()),
        None => Ok(EncodedImage {
            shape: image_shape,
            mean: pixels.to_vec(),
            std: None,
            scaling_factor: 1.0,
            shift_factor: 0.0,
        }),
    }
}

/// An inpainting mask at the run's `[H, W]`: gray as PIL converts it, binarized at one half (1: repaint), as
/// diffusers' mask processor makes it; resized like a start image when its size differs.
pub fn read_mask(path: &Path, [h, w]: [usize; 2]) -> Result<Vec<f32>, String> {
    let image = image::open(path).map_err(|e| {
        format!(
            "[conditioning] mask {}: {e}; give a PNG or JPEG image",
            path.display()
        )
    })?;
    let image = match (image.width() as usize, image.height() as usize) == (w, h) {
        true => image,
        false => image.resize_exact(w as u32, h as u32, FilterType::Lanczos3),
    };
    // PIL's "L": (19595 R + 38470 G + 7471 B + 2^15) >> 16.
    let gray = |[r, g, b]: [u8; 3]| {
        let [r, g, b] = [r, g, b].map(u32::from);
        ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) as f32 / 255.0
    };
    Ok(image
        .to_rgb8()
        .pixels()
        .map(|p| if gray(p.0) < 0.5 { 0.0 } else { 1.0 })
        .collect())
}

/// A mask at the latents' `[h, w]`: every `H/h`-th pixel, torch's nearest interpolation in
/// `prepare_mask_latents`.
pub fn latent_mask(mask: &[f32], [h, w]: [usize; 2], [lh, lw]: [usize; 2]) -> Vec<f32> {
    (0..lh)
        .flat_map(|i| (0..lw).map(move |j| mask[(i * h / lh) * w + j * w / lw]))
        .collect()
}

/// The start image with the mask's region blanked (0, mid-gray in [-1, 1]), as the inpainting pipeline makes
/// the masked image an inpainting U-Net takes.
pub fn masked_image(pixels: &[f32], mask: &[f32]) -> Vec<f32> {
    let plane = mask.len();
    pixels
        .iter()
        .enumerate()
        .map(|(i, &v)| if mask[i % plane] < 0.5 { v } else { 0.0 })
        .collect()
}

/// An image file as C × H × W values in [-1, 1] (`v / 255 · 2 − 1`, as diffusers' image processor makes them),
/// gray for one channel, resized (Lanczos) when its size is not the run's, with a note saying so.
pub fn read_image(path: &Path, shape: [usize; 3]) -> Result<(Vec<f32>, Option<String>), String> {
    let (planes, note) = read_planes(path, shape, "init_image")?;
    let pixels = planes
        .iter()
        .map(|&v| 2.0 * (v as f32 / 255.0) - 1.0)
        .collect();
    Ok((pixels, note))
}

/// A ControlNet's control image as 3 × H × W values in [0, 1] (`v / 255`: diffusers' control image processor
/// does not normalize), resized like a start image.
pub fn read_control_image(
    path: &Path,
    [_, h, w]: [usize; 3],
) -> Result<(Vec<f32>, Option<String>), String> {
    let (planes, note) = read_planes(path, [3, h, w], "control_image")?;
    Ok((planes.iter().map(|&v| v as f32 / 255.0).collect(), note))
}

/// An image file's 8-bit planes (gray for one channel, else RGB) at the run's size, and a note when resized.
fn read_planes(
    path: &Path,
    [c, h, w]: [usize; 3],
    key: &str,
) -> Result<(Vec<u8>, Option<String>), String> {
    let image = image::open(path).map_err(|e| {
        format!(
            "[conditioning] {key} {}: {e}; give a PNG or JPEG image",
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
    let planes = match c {
        1 => image.to_luma8().into_raw(),
        3 => {
            let rgb = image.to_rgb8().into_raw();
            (0..3)
                .flat_map(|k| rgb.iter().skip(k).step_by(3).copied().collect::<Vec<u8>>())
                .collect()
        }
        _ => {
            return Err(format!(
                "[conditioning] {key} {}: the model's images have {c} channels; images are gray (1) or RGB (3)",
                path.display()
            ));
        }
    };
    Ok((planes, note))
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
