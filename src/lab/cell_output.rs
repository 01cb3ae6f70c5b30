//! A cell's finished samples, taken in lane by lane as the lanes finish: decoded, passed through the feature
//! network and written at once, so a cell holds only its leading samples (previews, and what the reference
//! solve compares), its feature rows and its class logits, whatever its sample count.

use super::samples::SampleFile;
use super::scoring::{CellFeatures, Quality};
use crate::path_error::PathError;

pub(super) struct CellOutput {
    /// How many leading samples are kept whole: the previews, or more when the reference solve covers more.
    keep: usize,
    /// Latents (model space) and images of the kept samples.
    pub kept_samples: Vec<f32>,
    pub kept_images: Vec<f32>,
    pub features: CellFeatures,
    /// Why the features could not be computed; the cell's samples go on being taken.
    pub quality_error: Option<String>,
    pub sample_file: Option<SampleFile>,
    /// A latent model's final latents (`latents/<cell>.npy`).
    pub latent_file: Option<SampleFile>,
}

impl CellOutput {
    pub fn new(
        keep: usize,
        sample_file: Option<SampleFile>,
        latent_file: Option<SampleFile>,
    ) -> Self {
        CellOutput {
            keep,
            kept_samples: Vec::new(),
            kept_images: Vec::new(),
            features: CellFeatures::default(),
            quality_error: None,
            sample_file,
            latent_file,
        }
    }

    /// Takes the finished samples of items `first..`: their latents and decoded `images` (C × H × W =
    /// `image_shape`), scored `batch` at a time.
    pub fn take(
        &mut self,
        first: usize,
        samples: &[f32],
        images: &[f32],
        image_shape: [usize; 3],
        quality: Option<&mut Quality<'_>>,
        batch: usize,
    ) -> Result<(), PathError> {
        let count = images.len() / image_shape.iter().product::<usize>().max(1);
        let kept = self.keep.min(first + count).saturating_sub(first);
        if kept > 0 {
            let (per_sample, per_image) = (samples.len() / count, images.len() / count);
            self.kept_samples
                .extend_from_slice(&samples[..kept * per_sample]);
            self.kept_images
                .extend_from_slice(&images[..kept * per_image]);
        }
        if let Some(file) = &mut self.sample_file {
            file.write(first, images)?;
        }
        if let Some(file) = &mut self.latent_file {
            file.write(first, samples)?;
        }
        if let (Some(q), None) = (quality, &self.quality_error) {
            let scored = q.run(images, image_shape, batch, &mut self.features);
            self.quality_error = scored.err();
        }
        Ok(())
    }
}
