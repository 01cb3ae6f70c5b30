//! How far img2img took each sample from its start image: RMSE and PSNR (data in [-1, 1]) of the preview
//! images against the start image each began from, read from the cell's grid once the run is done
//! (`lab::start_distance`), so nothing here is computed from a cell's own tallies.

use super::{Column, Csv, Inputs, Metric, Scores, TableColumn};
use crate::experiment::QualitySpec;

pub struct StartDistance;

pub const RMSE: &str = "start_rmse";
pub const PSNR: &str = "start_psnr";

impl Metric for StartDistance {
    // results.csv has `start_rmse` beside `strength` in img2img runs only (`Results::to_csv`).
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

    fn asked(&self, _: &QualitySpec) -> bool {
        false
    }

    fn detail(&self, scores: &Scores) -> Vec<String> {
        let Some(rmse) = scores.get(RMSE) else {
            return Vec::new();
        };
        let mut line = format!("start RMSE {rmse:.3e}");
        if let Some(p) = scores.get(PSNR) {
            line.push_str(&format!(", {p:.1} dB"));
        }
        vec![line]
    }

    fn brief(&self, scores: &Scores) -> Option<String> {
        scores.get(RMSE).map(|e| format!("start {e:.2}"))
    }

    fn summary(&self, scores: &Scores) -> Option<String> {
        scores
            .get(RMSE)
            .map(|e| format!("RMSE to the start image {e:.3}"))
    }

    fn table(&self) -> Option<TableColumn> {
        Some(TableColumn {
            header: "vs start",
            key: RMSE,
            width: 8,
            always: false,
            percent: false,
        })
    }
}
