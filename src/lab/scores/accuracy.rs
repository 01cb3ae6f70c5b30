//! Prompt accuracy: the share of samples the feature network's classifier assigns to the class asked
//! for (the per-prompt shares are the result's `accuracies`).

use super::{Chart, Column, Csv, Inputs, Metric, Scores, TableColumn};
use crate::experiment::QualitySpec;
use crate::quality::Hits;

pub struct PromptAccuracy;

const KEY: &str = "accuracy";

impl Metric for PromptAccuracy {
    fn columns(&self) -> &'static [Column] {
        &[Column {
            key: KEY,
            csv: Csv::Fixed,
        }]
    }

    fn score(&self, inputs: &Inputs, out: &mut Scores) {
        if let Some(hits) = inputs.hits {
            out.set(KEY, Hits::accuracy(hits).overall);
        }
    }

    fn asked(&self, spec: &QualitySpec) -> bool {
        !spec.expected_classes.is_empty()
    }

    fn detail(&self, scores: &Scores) -> Vec<String> {
        scores
            .get(KEY)
            .map(|a| format!("accuracy {:.0}%", a * 100.0))
            .into_iter()
            .collect()
    }

    fn brief(&self, scores: &Scores) -> Option<String> {
        scores.get(KEY).map(|a| format!("acc {:.0}%", a * 100.0))
    }

    fn summary(&self, scores: &Scores) -> Option<String> {
        scores
            .get(KEY)
            .map(|a| format!("accuracy {:.0}%", a * 100.0))
    }

    fn table(&self) -> Option<TableColumn> {
        Some(TableColumn {
            header: "acc",
            key: KEY,
            width: 4,
            always: false,
            percent: true,
        })
    }

    fn per_condition(&self) -> bool {
        true
    }

    fn chart(&self) -> Option<Chart> {
        Some(Chart {
            key: KEY,
            name: "Prompt accuracy",
            y_desc: "share of samples classified as asked",
            unit_interval: true,
            log_y: false,
            against_nfe: false,
            against_guidance: true,
        })
    }
}
