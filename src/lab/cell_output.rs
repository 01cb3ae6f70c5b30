//! A cell's finished samples, taken in lane by lane as the lanes finish: decoded, passed through the feature
//! network and written at once, so a cell holds only its leading samples (previews, and what the reference
//! solve compares), its feature rows and its class logits, whatever its sample count.

use super::samples::SampleFile;
use super::scoring::{CellFeatures, Quality};
use crate::engine::frames::{clips_to_frames, frame_shape};
use crate::path_error::PathError;
use crate::quality::FrameChange;

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
    /// A video model's clips' change from frame to frame, over every sample.
    pub frame_change: Option<FrameChange>,
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
            frame_change: None,
        }
    }

    /// Takes the finished samples of items `first..`: their latents and decoded `images` (C × H × W =
    /// `image_shape`; a video model's clips of `frames` frames, C × F·H × W), scored `batch` images (frames)
    /// at a time.
    pub fn take(
        &mut self,
        first: usize,
        samples: &[f32],
        images: &[f32],
        (image_shape, frames): ([usize; 3], usize),
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
        if frames > 1 {
            let change = self.frame_change.get_or_insert_default();
            change.add_clips(images, image_shape, frames);
        }
        if let (Some(q), None) = (quality, &self.quality_error) {
            // A clip is scored as its frames.
            let scored = match frames {
                1 => q.run(images, image_shape, batch, &mut self.features),
                f => {
                    let frame_images = clips_to_frames(images, image_shape, f);
                    let frame = frame_shape(image_shape, f);
                    q.run(&frame_images, frame, batch, &mut self.features)
                }
            };
            self.quality_error = scored.err();
        }
        Ok(())
    }
}
