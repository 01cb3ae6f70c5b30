//! A video model's clips' change from frame to frame (`quality::FrameChange`): the mean absolute difference
//! between consecutive frames, pixels in [0, 1], over every sample of the cell. Lower is steadier; it says
//! nothing of whether the motion is right, so it is read beside FID, not instead of it.

use super::{Chart, Column, Csv, Inputs, Metric, Scores, TableColumn};
use crate::experiment::QualitySpec;

pub struct FrameChangeMetric;

pub const FRAME_CHANGE: &str = "frame_change";

impl Metric for FrameChangeMetric {
    // results.csv has `frame_change` in video runs only (`Results::csv`).
    fn columns(&self) -> &'static [Column] {
        &[Column {
            key: FRAME_CHANGE,
            csv: Csv::Omit,
        }]
    }

    fn score(&self, inputs: &Inputs, out: &mut Scores) {
        if let Some(mean) = inputs.frame_change.and_then(|c| c.mean()) {
            out.set(FRAME_CHANGE, mean);
        }
    }

    fn asked(&self, _: &QualitySpec) -> bool {
        false
    }

    fn detail(&self, scores: &Scores) -> Vec<String> {
        (scores.get(FRAME_CHANGE))
            .map(|c| format!("frame-to-frame change {c:.4}"))
            .into_iter()
            .collect()
    }

    fn brief(&self, scores: &Scores) -> Option<String> {
        scores.get(FRAME_CHANGE).map(|c| format!("Δframe {c:.3}"))
    }

    fn summary(&self, scores: &Scores) -> Option<String> {
        (scores.get(FRAME_CHANGE)).map(|c| format!("frame-to-frame change {c:.4}"))
    }

    fn table(&self) -> Option<TableColumn> {
        Some(TableColumn {
            header: "Δframe",
            key: FRAME_CHANGE,
            width: 7,
            always: false,
            percent: false,
        })
    }

    fn chart(&self) -> Option<Chart> {
        Some(Chart {
            key: FRAME_CHANGE,
            name: "frame-to-frame change",
            y_desc: "mean |frame change|, pixels in [0, 1] (lower is steadier)",
            unit_interval: false,
            log_y: false,
            against_nfe: true,
            against_guidance: true,
        })
    }
}
