//! FID: the Fréchet distance between the cell's feature Gaussian and the reference's.

use super::{Chart, Column, Csv, Inputs, Metric, Scores, TableColumn};
use crate::experiment::QualitySpec;
use crate::quality::frechet_distance;

pub struct Fid;

const KEY: &str = "fid";

impl Metric for Fid {
    fn columns(&self) -> &'static [Column] {
        &[Column {
            key: KEY,
            csv: Csv::Fixed,
        }]
    }

    fn score(&self, inputs: &Inputs, out: &mut Scores) {
        if let Some(f) = inputs.features {
            out.set(
                KEY,
                frechet_distance(&f.tally.sums.stats(), &f.reference.stats),
            );
        }
    }

    fn asked(&self, spec: &QualitySpec) -> bool {
        spec.features.is_some()
    }

    fn detail(&self, scores: &Scores) -> Vec<String> {
        scores
            .get(KEY)
            .map(|v| format!("FID      {v:.3}"))
            .into_iter()
            .collect()
    }

    fn brief(&self, scores: &Scores) -> Option<String> {
        scores.get(KEY).map(|v| format!("FID {v:.2}"))
    }

    fn summary(&self, scores: &Scores) -> Option<String> {
        self.brief(scores)
    }

    fn table(&self) -> Option<TableColumn> {
        Some(TableColumn {
            header: "FID",
            key: KEY,
            width: 7,
            always: true,
            percent: false,
        })
    }

    fn chart(&self) -> Option<Chart> {
        Some(Chart {
            key: KEY,
            name: "FID",
            y_desc: "FID (lower is better)",
            unit_interval: false,
            log_y: false,
            against_nfe: true,
            against_guidance: true,
        })
    }
}
