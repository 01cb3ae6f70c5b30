//! The feature network a cell's images go through: their features and class logits, tallied for the
//! cell's scores (`scores`).

use super::plan::Cell;
use super::resize::fit;
use super::scores::{Features, Inputs};
use super::tally::{Against, FeatureTally};
use crate::engine::{EngineError, OnnxFeatures};
use crate::experiment::QualitySpec;
use crate::quality::{FeatureSums, Hits, ReferenceStats, predicted_classes};

/// The feature network, the reference statistics and the settings scoring needs.
pub struct Quality<'a> {
    pub features: OnnxFeatures,
    pub reference: ReferenceStats,
    pub spec: &'a QualitySpec,
}

/// The feature network's outputs for a cell's samples so far, in item order.
#[derive(Debug, Default)]
pub struct CellFeatures {
    pub features: Vec<f32>,
    pub logits: Vec<f32>,
    pub classes: usize,
}

impl<'a> Quality<'a> {
    /// Opens the feature network and the reference; explicit `expected_classes` need class logits.
    pub fn new(
        features: OnnxFeatures,
        reference: ReferenceStats,
        spec: &'a QualitySpec,
    ) -> Result<Self, EngineError> {
        if !spec.expected_classes.is_empty() && !features.has_logits() {
            return Err(EngineError::Options(format!(
                "[quality] expected_classes needs class logits: {} has no output named `logits`; name its \
                 logits output with [quality] logits = \"<output>\"",
                features.path().display()
            )));
        }
        Ok(Self {
            features,
            reference,
            spec,
        })
    }

    /// Features and, when the network has them, class logits of `images` (C × H × W = `shape`), `batch`
    /// at a time, appended to `rows`.
    pub fn run(
        &mut self,
        images: &[f32],
        shape: [usize; 3],
        batch: usize,
        rows: &mut CellFeatures,
    ) -> Result<(), String> {
        let item = shape.iter().product::<usize>();
        // Decoded RGB (or any other size) is resized to what the feature network takes.
        let target = self.features.input_shape().unwrap_or(shape);
        let per = target.iter().product::<usize>();
        for chunk in images.chunks(batch.max(1) * item) {
            let fitted = fit(chunk, shape, target);
            let out = self
                .features
                .run(&fitted, fitted.len() / per, target)
                .map_err(|e| e.to_string())?;
            if out.dim != self.reference.dim {
                return Err(self.width_mismatch(out.dim));
            }
            rows.features.extend(out.features);
            if let Some((l, k)) = out.logits {
                rows.logits.extend(l);
                rows.classes = k;
            }
        }
        Ok(())
    }

    /// The feature network and the reference statistics disagree on the feature width: name both.
    fn width_mismatch(&self, dim: usize) -> String {
        let reference = match &self.spec.features {
            Some(f) => format!(" {}", f.reference.display()),
            None => String::new(),
        };
        format!(
            "the feature network {} gives {dim} features, but the reference statistics{reference} have {}: \
             make the reference (mu, sigma, features) with this network's features",
            self.features.path().display(),
            self.reference.dim
        )
    }

    /// A cell's feature tally and class hits (when its samples have expected classes) from the rows of
    /// all its samples, in item order: a video model's clips of `frames` frames give a feature row per frame
    /// (FID and KID over frames) and are classified by their frames' mean logits.
    pub fn tally(
        &self,
        cell: &Cell,
        rows: CellFeatures,
        frames: usize,
    ) -> Result<(FeatureTally, Option<Hits>), String> {
        let hits = match expected(cell, self.spec) {
            Some(expected) if rows.classes > 0 => {
                let logits = clip_means(&rows.logits, rows.classes * frames.max(1), frames);
                Some(hits(cell, &expected, &logits, rows.classes)?)
            }
            _ => None,
        };
        let sums = FeatureSums::of(&rows.features, self.reference.dim);
        let features = FeatureTally {
            sums,
            rows: rows.features,
        };
        Ok((features, hits))
    }

    /// What a cell's scores are computed from: its features and hits, and its error against the
    /// reference solve.
    pub fn inputs<'b>(
        &'b self,
        features: &'b FeatureTally,
        hits: Option<&'b Hits>,
        against: Option<&'b Against>,
    ) -> Inputs<'b> {
        Inputs {
            features: Some(Features {
                tally: features,
                reference: &self.reference,
                spec: self.spec,
            }),
            hits,
            against,
            frame_change: None,
        }
    }
}

/// The class each of the cell's samples should be: its class label (class-conditional), or its prompt's
/// expected class.
fn expected(cell: &Cell, spec: &QualitySpec) -> Option<Vec<i64>> {
    let per_condition = if cell.is_class_conditional() {
        &cell.classes
    } else if !spec.expected_classes.is_empty() {
        &spec.expected_classes
    } else {
        return None;
    };
    cell.items
        .iter()
        .map(|i| per_condition.get(i.condition).copied())
        .collect()
}

/// The mean of each run of `frames` rows of `per_clip / frames` values: one row per clip.
fn clip_means(rows: &[f32], per_clip: usize, frames: usize) -> Vec<f32> {
    if frames <= 1 {
        return rows.to_vec();
    }
    let width = per_clip / frames;
    rows.chunks(per_clip)
        .flat_map(|clip| {
            (0..width)
                .map(move |j| (0..frames).map(|f| clip[f * width + j]).sum::<f32>() / frames as f32)
        })
        .collect()
}

fn hits(cell: &Cell, expected: &[i64], logits: &[f32], classes: usize) -> Result<Hits, String> {
    if let Some(bad) = expected.iter().find(|&&c| c < 0 || c as usize >= classes) {
        return Err(format!(
            "expected class {bad} is out of range: the feature network's logits have {classes} classes"
        ));
    }
    let expected: Vec<usize> = expected.iter().map(|&c| c as usize).collect();
    let condition: Vec<usize> = cell.items.iter().map(|i| i.condition).collect();
    let conditions = if cell.is_class_conditional() {
        cell.classes.len()
    } else {
        cell.conditions.len()
    };
    let predicted = predicted_classes(logits, classes);
    Ok(Hits::of(&predicted, &expected, &condition, conditions))
}
