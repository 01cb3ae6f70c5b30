//! `[quality]`: how cells are judged — FID and KID from a feature network against reference statistics,
//! prompt accuracy from its class logits, and accuracy against a reference solve of the same seeds.

use std::ops::Range;
use std::path::PathBuf;

use serde_json::{Map, Value};
use toml::Spanned;

use super::schema::QualitySection;
use super::{ConditioningSpec, ExperimentError, Reading, SamplerSpec};
use crate::sampler::PredictionType;
use crate::sampler::SamplerConfig;
use crate::sampler::config::Resolved;

#[derive(Debug, Clone, PartialEq)]
pub struct QualitySpec {
    /// FID and KID; `None` when only a reference solve is asked for.
    pub features: Option<FeatureSpec>,
    /// Samples per cell, unless the sampler says otherwise (0: the previews only).
    pub samples: usize,
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
    /// The class each prompt should give (one per prompt), for prompt accuracy; empty: none asked (a
    /// class-conditional run's own classes are its expected classes).
    pub expected_classes: Vec<i64>,
    /// The feature network's class-logits output; `None`: the output named `logits`, if any.
    pub logits: Option<String>,
    /// The sampler whose long solve of the preview samples every cell is compared with.
    pub reference_solve: Option<ReferenceSolve>,
    /// `baseline = "ddim 50"`: the cell every other cell's preview samples are compared with, seed by
    /// seed (difference.png, and `baseline_rmse`/`baseline_psnr` in results.json).
    pub baseline: Option<String>,
}

/// "ddim 50", or "ddim 50 g7.5" when the experiment is conditional (guidance is then an axis).
pub fn cell_name(conditional: bool, label: &str, steps: usize, guidance: f64) -> String {
    match conditional {
        true => format!("{label} {steps} g{guidance}"),
        false => format!("{label} {steps}"),
    }
}

/// The feature network and the statistics of the real data it is compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    pub network: PathBuf,
    pub reference: PathBuf,
}

/// `[quality] reference_sampler = "dpm++3m:500"`: a sampler and its step count.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceSolve {
    /// As written before the step count ("dpm++3m").
    pub name: String,
    pub steps: usize,
    pub resolved: Resolved,
}

/// Samples per cell for FID when `[quality] samples` is not given.
const DEFAULT_SAMPLES: usize = 256;

impl Reading<'_> {
    /// `[quality]`: FID/KID (features and reference together), prompt accuracy, a reference solve; at
    /// least one of FID/KID or the reference solve.
    pub(super) fn quality(
        &mut self,
        q: &Spanned<QualitySection>,
        seeds: usize,
        conditioning: Option<&ConditioningSpec>,
        base: &Map<String, Value>,
        samplers: &[SamplerSpec],
    ) -> Result<QualitySpec, ExperimentError> {
        let span = q.span();
        let q = q.get_ref();
        let features = self.features(q, span)?;
        let expected_classes = self.expected_classes(q, conditioning)?;
        if features.is_none() {
            self.no_features(q)?;
        }
        let count = |v: &Option<Spanned<usize>>, default: usize| {
            v.as_ref().map_or(default, |n| *n.get_ref())
        };
        if let Some(n) = &q.samples {
            self.check_samples(n, "quality.samples", seeds)?;
        }
        for (value, key, least) in [
            (&q.kid_subsets, "quality.kid_subsets", 1),
            (&q.kid_subset_size, "quality.kid_subset_size", 2),
        ] {
            if let Some(v) = value.as_ref().filter(|v| *v.get_ref() < least) {
                return Err(self.error(v.span(), key, format!("must be at least {least}")));
            }
        }
        let reference_solve = match &q.reference_sampler {
            Some(r) => {
                let solve = self.reference_solve(r, q.reference_settings.as_ref(), base)?;
                self.same_start(&solve, r.span(), samplers);
                self.same_clipping(&solve, r.span(), samplers);
                Some(solve)
            }
            None => None,
        };
        let baseline = match &q.baseline {
            Some(b) => Some(self.baseline(b, conditioning.is_some(), samplers)?),
            None => None,
        };
        let default_samples = if features.is_some() {
            DEFAULT_SAMPLES
        } else {
            0
        };
        Ok(QualitySpec {
            features,
            samples: count(&q.samples, default_samples),
            kid_subsets: count(&q.kid_subsets, 50),
            kid_subset_size: count(&q.kid_subset_size, 100),
            expected_classes,
            logits: q.logits.as_ref().map(|l| l.get_ref().clone()),
            reference_solve,
            baseline,
        })
    }

    /// `baseline = "<cell>"`: one of the experiment's cells, by name.
    fn baseline(
        &self,
        name: &Spanned<String>,
        conditional: bool,
        samplers: &[SamplerSpec],
    ) -> Result<String, ExperimentError> {
        let names: Vec<String> = samplers
            .iter()
            .flat_map(|s| {
                s.steps.iter().flat_map(move |&steps| {
                    (s.guidance.iter()).map(move |&g| cell_name(conditional, &s.label, steps, g))
                })
            })
            .collect();
        if names.iter().any(|n| n == name.get_ref()) {
            return Ok(name.get_ref().clone());
        }
        Err(self.error(
            name.span(),
            "quality.baseline",
            format!(
                "\"{}\" is not a cell of this experiment; its cells are {}",
                name.get_ref(),
                names.join(", ")
            ),
        ))
    }

    /// `features` and `reference` come together; neither is fine when a reference solve is asked for.
    fn features(
        &self,
        q: &QualitySection,
        table: Range<usize>,
    ) -> Result<Option<FeatureSpec>, ExperimentError> {
        match (&q.features, &q.reference) {
            (Some(f), Some(r)) => Ok(Some(FeatureSpec {
                network: self.existing_file(f, "quality.features", "feature network")?,
                reference: self.existing_file(r, "quality.reference", "reference statistics")?,
            })),
            (Some(f), None) => Err(self.error(
                f.span(),
                "quality.reference",
                "FID needs the reference statistics too: add reference = \"<stats>.npz\"",
            )),
            (None, Some(r)) => Err(self.error(
                r.span(),
                "quality.features",
                "FID needs the feature network too: add features = \"<network>.onnx\"",
            )),
            (None, None) if q.reference_sampler.is_none() && q.baseline.is_none() => Err(self.error(
                table,
                "quality",
                "give features and reference (FID, KID), or reference_sampler = \"dpm++3m:500\" \
                 (accuracy against a reference solve), or baseline = \"<cell>\" (differences from one \
                 cell), or any of them together",
            )),
            (None, None) => Ok(None),
        }
    }

    /// Without a feature network, the keys that need one are errors (accuracy) or ignored (KID).
    fn no_features(&mut self, q: &QualitySection) -> Result<(), ExperimentError> {
        if let Some(l) = &q.expected_classes {
            let message = "prompt accuracy needs a feature network with class logits: add features \
                           and reference";
            return Err(self.error(l.span(), "quality.expected_classes", message));
        }
        if let Some(l) = &q.logits {
            let message = "applies only with a feature network (features); ignored".to_string();
            self.warn(None, l.span(), "quality.logits", message);
        }
        for (value, key) in [
            (&q.kid_subsets, "quality.kid_subsets"),
            (&q.kid_subset_size, "quality.kid_subset_size"),
        ] {
            if let Some(v) = value {
                let message = "KID needs a feature network (features); ignored".to_string();
                self.warn(None, v.span(), key, message);
            }
        }
        Ok(())
    }

    /// `reference_sampler = "<sampler>:<steps>"`, the sampler resolved on the model's schedule like a
    /// `[[sampler]]` name; a stochastic one is a warning (its solve is one sample path, not the ODE's).
    fn reference_solve(
        &mut self,
        r: &Spanned<String>,
        settings: Option<&Spanned<toml::Table>>,
        base: &Map<String, Value>,
    ) -> Result<ReferenceSolve, ExperimentError> {
        let key = "quality.reference_sampler";
        let text = r.get_ref().trim();
        let Some((name, steps)) = text.rsplit_once(':') else {
            let message = format!(
                "{text:?} has no step count: write \"<sampler>:<steps>\", e.g. \"dpm++3m:500\" or \"ddim:1000\""
            );
            return Err(self.error(r.span(), key, message));
        };
        let (name, steps) = (name.trim(), steps.trim());
        let spec = match name.ends_with(".json") {
            true => self.resolve(name).display().to_string(),
            false => name.to_string(),
        };
        let settings_span = settings.map(Spanned::span);
        let settings: Map<String, Value> = settings
            .and_then(|t| serde_json::to_value(t.get_ref()).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let settings_at = settings_span.map(|s| (s, "quality.reference_settings".to_string()));
        let resolved = SamplerConfig::resolve(&spec, Some(base), &settings)
            .map_err(|e| self.resolve_error(e, (r.span(), key.into()), settings_at.clone()))?;
        let train_steps = resolved.config.schedule().num_train_timesteps;
        let steps = match steps.parse::<usize>() {
            Ok(n) if (1..=train_steps).contains(&n) => n,
            _ => {
                let message = format!(
                    "step count {steps:?} must be a whole number from 1 to {train_steps} (the model's \
                     num_train_timesteps)"
                );
                return Err(self.error(r.span(), key, message));
            }
        };
        self.no_repeated_timestep(&resolved, steps, r.span(), key)?;
        // Warnings about settings point at the settings, as a [[sampler]]'s do.
        let (span, place) = settings_at.unwrap_or((r.span(), key.into()));
        for w in &resolved.warnings {
            self.warn(None, span.clone(), &place, w.clone());
        }
        if resolved.config.build().is_stochastic() {
            let message = format!(
                "{name} is stochastic: its solve is one sample path of the SDE, not the ODE's solution; \
                 a deterministic reference (dpm++3m, ddim, heun) measures discretisation error"
            );
            self.warn(None, r.span(), key, message);
        }
        Ok(ReferenceSolve {
            name: name.to_string(),
            steps,
            resolved,
        })
    }

    /// Cells that start from a different time than the reference ("leading" spacing starts each step
    /// count elsewhere) solve a different problem: their error to it includes the start. A warning.
    fn same_start(&mut self, solve: &ReferenceSolve, span: Range<usize>, samplers: &[SamplerSpec]) {
        let Some(start) = solve.resolved.config.first_timestep(solve.steps) else {
            return;
        };
        // Flow samplers are compared by sigma: DPM-Solver++ starts at σ = shift(0.999) and UniPC 1e-6 below
        // 1 (integer timestep 999), which moves the start by under 0.1% of the path. A VE model's timesteps are
        // its sigmas, rounded to f32 by some classes and not others.
        let flow = matches!(
            solve.resolved.config.prediction_type(),
            PredictionType::FlowPrediction | PredictionType::Score
        );
        let start_sigma = solve.resolved.config.first_sigma(solve.steps);
        let differs = |config: &crate::sampler::SamplerConfig, n: usize, t: f64| match start_sigma {
            Some(s0) if flow => config
                .first_sigma(n)
                .is_none_or(|s| (s - s0).abs() > 1e-3 * s0.max(1.0)),
            _ => (t - start).abs() > 1e-6,
        };
        for (i, sampler) in samplers.iter().enumerate() {
            let config = &sampler.resolved.config;
            let off: Vec<String> = (sampler.steps.iter())
                .filter_map(|&n| Some((n, config.first_timestep(n)?)))
                .filter(|&(n, t)| differs(config, n, t))
                .map(|(n, t)| format!("t={t} at {n} steps"))
                .collect();
            if off.is_empty() {
                continue;
            }
            // Flow samplers start where their class does: flow Euler and Heun at σ = 1, the multistep
            // solvers just below it.
            let advice =
                if solve.resolved.config.prediction_type() == PredictionType::FlowPrediction {
                    "use a reference of the same kind (flow Euler and Heun start at σ = 1: \
                 reference_sampler = \"heun:200\"; DPM-Solver++, UniPC and DEIS just below)"
                } else {
                    "give both timestep_spacing = \"trailing\" (settings and reference_settings)"
                };
            let message = format!(
                "{} starts from {} but the reference from t={start}, so its error to the reference \
                 includes the different start; {advice}",
                sampler.label,
                off.join(", ")
            );
            self.warn(Some(i), span.clone(), "quality.reference_sampler", message);
        }
    }

    /// A cell that clips (or thresholds) its x0 predictions and a reference that does not — or the
    /// other way round — solve different equations: its error would not shrink with more steps.
    fn same_clipping(
        &mut self,
        solve: &ReferenceSolve,
        span: Range<usize>,
        samplers: &[SamplerSpec],
    ) {
        let clipping = |r: &Resolved| {
            ["clip_sample", "thresholding"]
                .into_iter()
                .filter(|k| r.settings.get(*k) == Some(&Value::Bool(true)))
                .collect::<Vec<_>>()
        };
        let reference = clipping(&solve.resolved);
        for (i, sampler) in samplers.iter().enumerate() {
            let cell = clipping(&sampler.resolved);
            if cell == reference {
                continue;
            }
            let (who, keys) = match cell.is_empty() {
                true => ("the reference", &reference),
                false => (sampler.label.as_str(), &cell),
            };
            let message = format!(
                "{who} sets {}, the other not: {} and the reference solve different equations and its \
                 error will not shrink with steps; set the same {} in settings and reference_settings",
                keys.join(" and "),
                sampler.label,
                keys.join(", ")
            );
            self.warn(Some(i), span.clone(), "quality.reference_sampler", message);
        }
    }

    /// `[quality] expected_classes`: one class (≥ 0) per prompt. A class-conditional run scores against its
    /// own classes, so a list there is a warning; without prompts or classes it is an error.
    fn expected_classes(
        &mut self,
        q: &QualitySection,
        conditioning: Option<&ConditioningSpec>,
    ) -> Result<Vec<i64>, ExperimentError> {
        let Some(list) = &q.expected_classes else {
            return Ok(Vec::new());
        };
        let key = "quality.expected_classes";
        let (classes, prompts) =
            conditioning.map_or((0, 0), |c| (c.classes.len(), c.prompts.len()));
        if classes > 0 {
            let message =
                "a class-conditional run is scored against its [conditioning] classes; ignored";
            self.warn(None, list.span(), key, message.to_string());
            return Ok(Vec::new());
        }
        if let Some(bad) = list.get_ref().iter().find(|&&c| c < 0) {
            return Err(self.error(list.span(), key, format!("class {bad} is negative")));
        }
        match (prompts, list.get_ref().len()) {
            (0, _) => Err(self.error(
                list.span(),
                key,
                "needs [conditioning] prompts (one expected class per prompt)",
            )),
            (p, n) if p != n => Err(self.error(
                list.span(),
                key,
                format!("gives {n} classes for {p} prompts; give one per prompt"),
            )),
            _ => Ok(list.get_ref().clone()),
        }
    }
}
