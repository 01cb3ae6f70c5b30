//! KID: the kernel inception distance to the reference features, mean and standard deviation over the
//! `[quality]` subsets.

use super::{Chart, Column, Csv, Inputs, Metric, Scores, TableColumn};
use crate::experiment::QualitySpec;
use crate::quality::kernel_inception_distance;

pub struct Kid;

const MEAN: &str = "kid";
const STD: &str = "kid_std";

impl Metric for Kid {
    fn columns(&self) -> &'static [Column] {
        &[
            Column {
                key: MEAN,
                csv: Csv::Fixed,
            },
            Column {
                key: STD,
                csv: Csv::Fixed,
            },
        ]
    }

    fn score(&self, inputs: &Inputs, out: &mut Scores) {
        let Some(f) = inputs.features else { return };
        let kid = kernel_inception_distance(
            &f.tally.rows,
            &f.reference.features,
            f.reference.dim,
            f.spec.kid_subsets,
            f.spec.kid_subset_size,
            0,
        );
        out.set(MEAN, kid.mean);
        out.set(STD, kid.std);
    }

    fn asked(&self, spec: &QualitySpec) -> bool {
        spec.features.is_some()
    }

    fn detail(&self, scores: &Scores) -> Vec<String> {
        let Some(mean) = scores.get(MEAN) else {
            return Vec::new();
        };
        let std = scores.get(STD).unwrap_or(0.0);
        vec![format!("KID      {mean:.4} ± {std:.4}")]
    }

    fn brief(&self, _: &Scores) -> Option<String> {
        None
    }

    fn summary(&self, scores: &Scores) -> Option<String> {
        let mean = scores.get(MEAN)?;
        let std = scores.get(STD).unwrap_or(0.0);
        Some(format!("KID {mean:.4} ± {std:.4}"))
    }

    fn table(&self) -> Option<TableColumn> {
        Some(TableColumn {
            header: "KID",
            key: MEAN,
            width: 7,
            always: true,
            percent: false,
        })
    }

    fn chart(&self) -> Option<Chart> {
        Some(Chart {
            key: MEAN,
            name: "KID",
            y_desc: "KID (lower is better)",
            unit_interval: false,
            log_y: false,
            against_nfe: false,
            against_guidance: false,
        })
    }
}
