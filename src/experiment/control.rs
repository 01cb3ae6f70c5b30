//! ControlNet in an experiment: `[conditioning] control_image` (what the ControlNet is conditioned on) and
//! `[[sampler]] control_scale` (its conditioning scale, an axis), `control_guidance_start` / `_end` (the share of
//! the steps it is on).

use std::path::PathBuf;

use toml::Spanned;

use super::axes::{Apply, Axis, AxisValue};
use super::schema::{ConditioningSection, ControlScale, ExperimentFile, SamplerSection};
use super::{ConditioningSpec, ExperimentError, Reading};

impl Reading<'_> {
    /// `control_image`'s files, resolved; each must exist.
    pub(super) fn control_images(
        &self,
        s: &ConditioningSection,
    ) -> Result<Vec<PathBuf>, ExperimentError> {
        match &s.control_image {
            Some(given) => self.image_files(given, "conditioning.control_image", "control image"),
            None => Ok(Vec::new()),
        }
    }

    /// Which sample takes which control image, as for start images.
    pub(super) fn control_per(
        &self,
        spec: &mut ConditioningSpec,
        c: &Spanned<ConditioningSection>,
        seeds: usize,
    ) -> Result<(), ExperimentError> {
        if let Some(given) = &c.get_ref().control_image {
            let n = spec.control_images.len();
            let key = "conditioning.control_image";
            spec.control_per = self.images_per(spec, n, given.span(), key, seeds)?;
        }
        Ok(())
    }

    /// `control_scale`'s values as an axis: finite, none twice; cells are named `cs1.5`.
    pub(super) fn control_scale_axis(
        &self,
        i: usize,
        scale: &Spanned<ControlScale>,
    ) -> Result<Axis, ExperimentError> {
        let place = format!("sampler[{i}].control_scale");
        let values = match scale.get_ref() {
            ControlScale::One(v) => vec![*v],
            ControlScale::Many(list) => list.clone(),
        };
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            let message = "control_scale must be a number or a non-empty list of them (1: the ControlNet as trained)";
            return Err(self.error(scale.span(), &place, message));
        }
        if let Some(v) = values
            .iter()
            .enumerate()
            .find_map(|(k, v)| values[..k].contains(v).then_some(v))
        {
            let message = format!("control_scale {v} is listed twice; each value is a column");
            return Err(self.error(scale.span(), &place, message));
        }
        let values = values
            .into_iter()
            .map(|v| AxisValue {
                suffix: format!("cs{v}"),
                column: v.into(),
                apply: Apply::ControlScale(v),
            })
            .collect();
        Ok(Axis {
            column: "control_scale".into(),
            values,
        })
    }

    /// `control_guidance_start` and `_end`: shares of the steps, start below end (0 and 1 by default).
    pub(super) fn control_window(
        &self,
        i: usize,
        s: &SamplerSection,
    ) -> Result<(f64, f64), ExperimentError> {
        let value =
            |v: &Option<Spanned<f64>>, default| v.as_ref().map_or(default, |v| *v.get_ref());
        let (start, end) = (
            value(&s.control_guidance_start, 0.0),
            value(&s.control_guidance_end, 1.0),
        );
        let given = s
            .control_guidance_start
            .as_ref()
            .or(s.control_guidance_end.as_ref());
        if let Some(at) = given
            && !(0.0 <= start && start < end && end <= 1.0)
        {
            let message = format!(
                "control_guidance_start {start} and control_guidance_end {end} are shares of the steps: \
                 0 ≤ start < end ≤ 1"
            );
            return Err(self.error(
                at.span(),
                &format!("sampler[{i}].control_guidance_start"),
                message,
            ));
        }
        Ok((start, end))
    }

    /// A sampler's ControlNet settings go with `[conditioning] control_image`.
    pub(super) fn check_control(
        &self,
        file: &ExperimentFile,
        conditioning: Option<&ConditioningSpec>,
    ) -> Result<(), ExperimentError> {
        if conditioning.is_some_and(|c| !c.control_images.is_empty()) {
            return Ok(());
        }
        for (i, s) in file.samplers.get_ref().iter().enumerate() {
            let given = [
                ("control_scale", s.control_scale.as_ref().map(Spanned::span)),
                (
                    "control_guidance_start",
                    s.control_guidance_start.as_ref().map(Spanned::span),
                ),
                (
                    "control_guidance_end",
                    s.control_guidance_end.as_ref().map(Spanned::span),
                ),
            ];
            if let Some((key, Some(span))) = given.into_iter().find(|(_, span)| span.is_some()) {
                let message = format!(
                    "{key} goes with [conditioning] control_image, what the ControlNet follows"
                );
                return Err(self.error(span, &format!("sampler[{i}].{key}"), message));
            }
        }
        Ok(())
    }
}
