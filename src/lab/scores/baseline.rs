//! The difference from the baseline cell (`[quality] baseline`): RMSE and PSNR (data in [-1, 1]) of the
//! preview samples against the baseline's of the same seeds, read from both cells' grids once every cell
//! is done (`lab::baseline`), so nothing here is computed from a cell's own tallies.

use super::{Column, Csv, Inputs, Metric, Scores, TableColumn};
use crate::experiment::QualitySpec;

pub struct Baseline;

pub const RMSE: &str = "baseline_rmse";
pub const PSNR: &str = "baseline_psnr";

impl Metric for Baseline {
    fn columns(&self) -> &'static [Column] {
        &[
            Column {
                key: RMSE,
                csv: Csv::Omit,
            },
            Column {
                key: PSNR,
                csv: Csv::Omit,
            },
        ]
    }

    fn score(&self, _: &Inputs, _: &mut Scores) {}

    fn asked(&self, spec: &QualitySpec) -> bool {
        spec.baseline.is_some()
    }

    fn detail(&self, scores: &Scores) -> Vec<String> {
        let Some(rmse) = scores.get(RMSE) else {
            return Vec::new();
        };
        let mut line = format!("baseline RMSE {rmse:.3e}");
        if let Some(p) = scores.get(PSNR) {
            line.push_str(&format!(", {p:.1} dB"));
        }
        vec![line]
    }

    fn brief(&self, _: &Scores) -> Option<String> {
        None
    }

    fn summary(&self, scores: &Scores) -> Option<String> {
        scores
            .get(RMSE)
            .map(|e| format!("RMSE to the baseline {e:.3e}"))
    }

    fn table(&self) -> Option<TableColumn> {
        Some(TableColumn {
            header: "vs base",
            key: RMSE,
            width: 7,
            always: false,
            percent: false,
        })
    }
}
