//! img2img in an experiment: `[conditioning] init_image` (the images samples start from) and
//! `[[sampler]] strength` (how much of each sampler's schedule runs from them).

use std::path::PathBuf;

use toml::Spanned;

use super::axes::{Apply, Axis, AxisValue};
use super::schema::{ConditioningSection, ExperimentFile, ImagePaths, Strength};
use super::{ConditioningSpec, ExperimentError, InitPer, Reading, SamplerSpec};
use crate::sampler::{PredictionType, begin_call};

/// diffusers' img2img pipelines' default strengths, for the message that asks for one.
const PIPELINE_STRENGTHS: &str = "diffusers' img2img pipelines default to 0.8 (SD 1.x/2.x), 0.3 (SDXL), 0.6 \
     (SD3, FLUX), the inpainting ones to 1 (SD) and 0.9999 (SDXL)";

impl Reading<'_> {
    /// `init_image`'s files, resolved; each must exist.
    pub(super) fn init_images(
        &self,
        s: &ConditioningSection,
    ) -> Result<Vec<PathBuf>, ExperimentError> {
        match &s.init_image {
            Some(given) => self.image_files(given, "conditioning.init_image", "start image"),
            None => Ok(Vec::new()),
        }
    }

    /// `mask`'s files, resolved: they go with start images, one for all of them or one each.
    pub(super) fn masks(&self, s: &ConditioningSection) -> Result<Vec<PathBuf>, ExperimentError> {
        let Some(given) = &s.mask else {
            return Ok(Vec::new());
        };
        let key = "conditioning.mask";
        let masks = given.get_ref().list().len();
        let images = s
            .init_image
            .as_ref()
            .map_or(0, |i| i.get_ref().list().len());
        let message = match (images, masks) {
            (0, _) => {
                Some("a mask goes with `init_image`, the image it repaints part of".to_string())
            }
            (n, m) if m > 1 && m != n => Some(format!(
                "{m} masks for {n} start images: give one mask, or one per start image"
            )),
            _ => None,
        };
        if let Some(message) = message {
            return Err(self.error(given.span(), key, message));
        }
        self.image_files(given, key, "mask")
    }

    /// Which sample takes which start image: one image is every sample's, a list is one per prompt (or class)
    /// or, failing that, one per seed.
    pub(super) fn init_per(
        &self,
        spec: &mut ConditioningSpec,
        c: &Spanned<ConditioningSection>,
        seeds: usize,
    ) -> Result<(), ExperimentError> {
        if let Some(given) = &c.get_ref().init_image {
            let n = spec.init_images.len();
            spec.init_per =
                self.images_per(spec, n, given.span(), "conditioning.init_image", seeds)?;
        }
        Ok(())
    }

    /// How `n` images given at `key` go with the samples: one for all, one per prompt (or class), one per seed.
    pub(super) fn images_per(
        &self,
        spec: &ConditioningSpec,
        n: usize,
        span: std::ops::Range<usize>,
        key: &str,
        seeds: usize,
    ) -> Result<InitPer, ExperimentError> {
        let conditions = spec.prompts.len().max(spec.classes.len());
        Ok(match n {
            1 => InitPer::All,
            _ if n == conditions => InitPer::Condition,
            _ if n == seeds => InitPer::Seed,
            _ => {
                let message = format!(
                    "{n} images: give one, one per prompt or class ({conditions}), or one per seed ({seeds})"
                );
                return Err(self.error(span, key, message));
            }
        })
    }

    /// Image files given at `key`, resolved; each must exist.
    pub(super) fn image_files(
        &self,
        given: &Spanned<ImagePaths>,
        key: &str,
        what: &str,
    ) -> Result<Vec<PathBuf>, ExperimentError> {
        let list = given.get_ref().list();
        if list.is_empty() {
            return Err(self.error(given.span(), key, "list at least one image"));
        }
        list.iter()
            .map(|p| {
                let resolved = self.resolve(p);
                match resolved.is_file() {
                    true => Ok(resolved),
                    false => {
                        let message = format!("no {what} at {}", resolved.display());
                        Err(self.error(given.span(), key, message))
                    }
                }
            })
            .collect()
    }

    /// `strength`'s values as an axis: each in (0, 1], none twice; cells are named `s0.6`.
    pub(super) fn strength_axis(
        &self,
        i: usize,
        strength: &Spanned<Strength>,
    ) -> Result<Axis, ExperimentError> {
        let place = format!("sampler[{i}].strength");
        let values = match strength.get_ref() {
            Strength::One(v) => vec![*v],
            Strength::Many(list) => list.clone(),
        };
        if values.is_empty() || values.iter().any(|v| !(*v > 0.0 && *v <= 1.0)) {
            let message = "strength must be a number in (0, 1] or a non-empty list of them: the share of the \
                           schedule that runs from the noised start image (1: from pure noise)";
            return Err(self.error(strength.span(), &place, message));
        }
        if let Some(v) = values
            .iter()
            .enumerate()
            .find_map(|(k, v)| values[..k].contains(v).then_some(v))
        {
            let message = format!("strength {v} is listed twice; each value is a column");
            return Err(self.error(strength.span(), &place, message));
        }
        let values = values
            .into_iter()
            .map(|v| AxisValue {
                suffix: format!("s{v}"),
                column: v.into(),
                apply: Apply::Strength(v),
            })
            .collect();
        Ok(Axis {
            column: "strength".into(),
            values,
        })
    }

    /// A strength goes with start images and start images with a strength on every sampler; each sampler
    /// must be able to start part-way at each of its step counts and strengths.
    pub(super) fn check_strengths(
        &self,
        file: &ExperimentFile,
        conditioning: Option<&ConditioningSpec>,
        samplers: &[SamplerSpec],
    ) -> Result<(), ExperimentError> {
        let images = conditioning.is_some_and(|c| !c.init_images.is_empty());
        for (i, (section, spec)) in file.samplers.get_ref().iter().zip(samplers).enumerate() {
            match (&section.strength, images) {
                (Some(strength), false) => {
                    let message = "strength goes with [conditioning] init_image, the image img2img starts from";
                    return Err(self.error(
                        strength.span(),
                        &format!("sampler[{i}].strength"),
                        message,
                    ));
                }
                (None, true) => {
                    let message = format!(
                        "[conditioning] init_image is given: give this sampler a strength, e.g. strength = 0.6 \
                         or [0.3, 0.6, 0.9] ({PIPELINE_STRENGTHS})"
                    );
                    return Err(self.error(
                        section.name.span(),
                        &format!("sampler[{i}].name"),
                        message,
                    ));
                }
                (Some(strength), true) => {
                    let place = format!("sampler[{i}].strength");
                    if spec.resolved.config.prediction_type() == PredictionType::Score {
                        let message = "img2img is not available on a variance-exploding score model (its \
                                       pixels live in [0, 1]); run it from noise, without strength";
                        return Err(self.error(strength.span(), &place, message));
                    }
                    self.check_starts(spec)
                        .map_err(|message| self.error(strength.span(), &place, message))?;
                }
                (None, false) => {}
            }
        }
        Ok(())
    }

    /// Whether each variant of `spec` starts part-way at each of its step counts.
    fn check_starts(&self, spec: &SamplerSpec) -> Result<(), String> {
        for variant in &spec.variants {
            let Some(strength) = variant.strength else {
                continue;
            };
            for &steps in &spec.steps {
                let mut scheduler = variant.resolved.config.build();
                scheduler.set_steps(steps).map_err(|e| e.to_string())?;
                let class = variant.resolved.config.class_name();
                let Some(begin) = begin_call(steps, strength, scheduler.calls_per_step()) else {
                    return Err(format!(
                        "strength {strength} at {steps} steps runs no step (int({steps} × {strength}) = 0): raise \
                         the strength or the steps"
                    ));
                };
                if scheduler.start_at(begin).is_none() {
                    return Err(format!(
                        "{} ({class}) cannot start part-way through its schedule, so it cannot run img2img; the \
                         diffusers samplers can (PNDM with skip_prk_steps = true)",
                        variant.sampler_label
                    ));
                }
            }
        }
        Ok(())
    }
}
