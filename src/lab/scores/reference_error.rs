//! The error against the reference solve (`[quality] reference_sampler`): RMSE and PSNR (data in
//! [-1, 1]) of the preview samples in model space, and of their decoded images for a latent model.

use super::{Chart, Column, Csv, Inputs, Metric, Scores, TableColumn};
use crate::experiment::QualitySpec;

pub struct ReferenceError;

pub const RMSE: &str = "ref_rmse";
pub const PSNR: &str = "ref_psnr";
pub const RMSE_DECODED: &str = "ref_rmse_decoded";
pub const PSNR_DECODED: &str = "ref_psnr_decoded";

impl Metric for ReferenceError {
    fn columns(&self) -> &'static [Column] {
        &[
            // Errors of converged samplers are far below 1e-6.
            Column {
                key: RMSE,
                csv: Csv::Scientific,
            },
            Column {
                key: PSNR,
                csv: Csv::Fixed,
            },
            Column {
                key: RMSE_DECODED,
                csv: Csv::Omit,
            },
            Column {
                key: PSNR_DECODED,
                csv: Csv::Omit,
            },
        ]
    }

    fn score(&self, inputs: &Inputs, out: &mut Scores) {
        let Some(against) = inputs.against else {
            return;
        };
        let decoded = against.decoded.and_then(|d| d.error());
        for (error, rmse, psnr) in [
            (against.data.error(), RMSE, PSNR),
            (decoded, RMSE_DECODED, PSNR_DECODED),
        ] {
            if let Some(e) = error {
                out.set(rmse, e.rmse);
                if let Some(p) = e.psnr {
                    out.set(psnr, p);
                }
            }
        }
    }

    fn asked(&self, spec: &QualitySpec) -> bool {
        spec.reference_solve.is_some()
    }

    fn detail(&self, scores: &Scores) -> Vec<String> {
        let Some(rmse) = scores.get(RMSE) else {
            return Vec::new();
        };
        let mut lines = vec![format!("ref RMSE {rmse:.3e}")];
        let psnr = scores.get(PSNR_DECODED).or(scores.get(PSNR));
        lines.extend(psnr.map(|p| format!("ref PSNR {p:.1} dB")));
        lines
    }

    fn brief(&self, scores: &Scores) -> Option<String> {
        scores.get(RMSE).map(|e| format!("rmse {e:.1e}"))
    }

    fn summary(&self, scores: &Scores) -> Option<String> {
        scores
            .get(RMSE)
            .map(|e| format!("RMSE to reference {e:.3e}"))
    }

    fn table(&self) -> Option<TableColumn> {
        Some(TableColumn {
            header: "ref RMSE",
            key: RMSE,
            width: 8,
            always: false,
            percent: false,
        })
    }

    // The run's figures draw it in accuracy_vs_nfe.png; the dashboard charts it like the others.
    fn chart(&self) -> Option<Chart> {
        Some(Chart {
            key: RMSE,
            name: "RMSE to the reference solve",
            y_desc: "RMSE of the samples (lower is better)",
            unit_interval: false,
            log_y: true,
            against_nfe: false,
            against_guidance: false,
        })
    }
}
