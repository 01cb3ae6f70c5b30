//! ControlNet in an experiment: `[conditioning] control_image` (what the ControlNet is conditioned on), or one
//! `[[conditioning.controlnet]]` table per ControlNet where the model holds several, and `[[sampler]]
//! control_scale` (the conditioning scale, an axis), `control_guidance_start` / `_end` (the share of the steps each
//! ControlNet is on). A number applies to every ControlNet; a list inside gives one per ControlNet, as diffusers
//! takes `controlnet_conditioning_scale`.

use toml::Spanned;

use super::axes::{Apply, Axis, AxisValue};
use super::conditioning::ControlImageSet;
use super::schema::{
    ConditioningSection, ControlScale, ExperimentFile, ImagePaths, PerControlNet, SamplerSection,
};
use super::{ConditioningSpec, ExperimentError, InitPer, Reading};

/// What a cell's name and the results show of per-ControlNet values: `1` or `1+0.5`.
pub fn per_controlnet_text(values: &[f64]) -> String {
    let shown: Vec<String> = values.iter().map(f64::to_string).collect();
    shown.join("+")
}

impl Reading<'_> {
    /// Each ControlNet's control images, resolved (each must exist): `control_image` for one ControlNet, or the
    /// `[[conditioning.controlnet]]` tables' `image`s, never both.
    pub(super) fn controls(
        &self,
        c: &Spanned<ConditioningSection>,
    ) -> Result<Vec<ControlImageSet>, ExperimentError> {
        let s = c.get_ref();
        let given = self.control_image_keys(s)?;
        given
            .into_iter()
            .map(|(key, paths)| {
                Ok(ControlImageSet {
                    images: self.image_files(paths, &key, "control image")?,
                    per: InitPer::All,
                })
            })
            .collect()
    }

    /// The control images' keys and values, in the model's order of its ControlNets.
    fn control_image_keys<'s>(
        &self,
        s: &'s ConditioningSection,
    ) -> Result<Vec<(String, &'s Spanned<ImagePaths>)>, ExperimentError> {
        match (&s.control_image, &s.controlnet) {
            (Some(_), Some(tables)) => {
                let message = "give control_image (one ControlNet) or [[conditioning.controlnet]] tables (one per \
                               ControlNet), not both";
                Err(self.error(tables.span(), "conditioning.controlnet", message))
            }
            (Some(one), None) => Ok(vec![("conditioning.control_image".into(), one)]),
            (None, Some(tables)) if tables.get_ref().is_empty() => {
                let message = "list one [[conditioning.controlnet]] table per ControlNet, each with its image";
                Err(self.error(tables.span(), "conditioning.controlnet", message))
            }
            (None, Some(tables)) => Ok((tables.get_ref().iter().enumerate())
                .map(|(k, t)| (format!("conditioning.controlnet[{k}].image"), &t.image))
                .collect()),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Which sample takes which control image, for each ControlNet, as for start images.
    pub(super) fn control_per(
        &self,
        spec: &mut ConditioningSpec,
        c: &Spanned<ConditioningSection>,
        seeds: usize,
    ) -> Result<(), ExperimentError> {
        let given = self.control_image_keys(c.get_ref())?;
        for (k, (key, paths)) in given.into_iter().enumerate() {
            let n = spec.controls[k].images.len();
            spec.controls[k].per = self.images_per(spec, n, paths.span(), &key, seeds)?;
        }
        Ok(())
    }

    /// `control_scale`'s values as an axis: finite, none twice; cells are named `cs1.5` (`cs1+0.5` for one scale
    /// per ControlNet).
    pub(super) fn control_scale_axis(
        &self,
        i: usize,
        scale: &Spanned<ControlScale>,
    ) -> Result<Axis, ExperimentError> {
        let place = format!("sampler[{i}].control_scale");
        let values = match scale.get_ref() {
            ControlScale::One(v) => vec![vec![*v]],
            ControlScale::Many(list) => list.iter().map(PerControlNet::values).collect(),
        };
        let bad = |v: &Vec<f64>| v.is_empty() || v.iter().any(|v| !v.is_finite());
        if values.is_empty() || values.iter().any(bad) {
            let message = "control_scale must be a number or a non-empty list of them (1: the ControlNet as trained)";
            return Err(self.error(scale.span(), &place, message));
        }
        for v in &values {
            self.check_per_controlnet(v, scale.span(), &place)?;
        }
        if let Some(v) =
            (values.iter().enumerate()).find_map(|(k, v)| values[..k].contains(v).then_some(v))
        {
            let message = format!(
                "control_scale {} is listed twice; each value is a column",
                per_controlnet_text(v)
            );
            return Err(self.error(scale.span(), &place, message));
        }
        let values = values
            .into_iter()
            .map(|v| AxisValue {
                suffix: format!("cs{}", per_controlnet_text(&v)),
                column: match v.as_slice() {
                    [one] => (*one).into(),
                    _ => v.clone().into(),
                },
                apply: Apply::ControlScale(v),
            })
            .collect();
        Ok(Axis {
            column: "control_scale".into(),
            values,
        })
    }

    /// A list of per-ControlNet values has one for each ControlNet.
    fn check_per_controlnet(
        &self,
        values: &[f64],
        span: std::ops::Range<usize>,
        place: &str,
    ) -> Result<(), ExperimentError> {
        // Without control images the sampler's ControlNet keys are refused as such (`check_control`).
        if values.len() == 1
            || values.len() == self.controlnets
            || self.controlnets == 0 && !values.is_empty()
        {
            return Ok(());
        }
        let message = format!(
            "{} values for {} ControlNet(s): give one number for all, or one per ControlNet (each \
             [[conditioning.controlnet]] table, in order)",
            values.len(),
            self.controlnets
        );
        Err(self.error(span, place, message))
    }

    /// `control_guidance_start` and `_end` for each ControlNet (one pair for all, or one per ControlNet): shares
    /// of the steps, start below end (0 and 1 by default).
    pub(super) fn control_windows(
        &self,
        i: usize,
        s: &SamplerSection,
    ) -> Result<Vec<(f64, f64)>, ExperimentError> {
        let read = |v: &Option<Spanned<PerControlNet>>, key: &str, default: f64| match v {
            None => Ok(vec![default]),
            Some(v) => {
                let place = format!("sampler[{i}].{key}");
                let values = v.get_ref().values();
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(self.error(
                        v.span(),
                        &place,
                        "a share of the steps is a finite number",
                    ));
                }
                self.check_per_controlnet(&values, v.span(), &place)?;
                Ok(values)
            }
        };
        let starts = read(&s.control_guidance_start, "control_guidance_start", 0.0)?;
        let ends = read(&s.control_guidance_end, "control_guidance_end", 1.0)?;
        let n = starts.len().max(ends.len());
        let windows: Vec<(f64, f64)> = (0..n)
            .map(|k| (starts[k.min(starts.len() - 1)], ends[k.min(ends.len() - 1)]))
            .collect();
        let given = (s.control_guidance_start.as_ref()).or(s.control_guidance_end.as_ref());
        if let Some(at) = given
            && let Some((start, end)) =
                (windows.iter()).find(|(s, e)| !(0.0 <= *s && s < e && *e <= 1.0))
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
        Ok(windows)
    }

    /// A sampler's ControlNet settings go with control images.
    pub(super) fn check_control(
        &self,
        file: &ExperimentFile,
        conditioning: Option<&ConditioningSpec>,
    ) -> Result<(), ExperimentError> {
        if conditioning.is_some_and(|c| !c.controls.is_empty()) {
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
                    "{key} goes with [conditioning] control_image (or [[conditioning.controlnet]]), what the \
                     ControlNet follows"
                );
                return Err(self.error(span, &format!("sampler[{i}].{key}"), message));
            }
        }
        Ok(())
    }
}

impl PerControlNet {
    fn values(&self) -> Vec<f64> {
        match self {
            PerControlNet::All(v) => vec![*v],
            PerControlNet::Each(list) => list.clone(),
        }
    }
}
