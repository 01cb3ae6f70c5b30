//! After a run, every finished cell's preview samples against the baseline cell's (`[quality]
//! baseline`), seed by seed, read back from their grids: `baseline_rmse` and `baseline_psnr` in
//! results.json, and the updated results sent to whoever follows the run.

use std::path::Path;
use std::sync::mpsc::Sender;

use super::events::LabEvent;
use super::plan::Cell;
use super::results::Results;
use super::reuse::read_grid;
use super::runner::Stop;
use super::scores::baseline::{PSNR, RMSE};
use crate::experiment::Experiment;
use crate::quality::solve_error;

/// Compares the cells with the experiment's baseline cell, if it names one and the baseline finished.
pub(super) fn compare(
    experiment: &Experiment,
    cells: &[Cell],
    out: &Path,
    tx: &Sender<LabEvent>,
) -> Result<(), Stop> {
    let Some(name) = (experiment.quality.as_ref()).and_then(|q| q.baseline.as_deref()) else {
        return Ok(());
    };
    let (mut results, _) = Results::open(&out.join("results.json"))?;
    let Some(shape) = results.image_shape else {
        return Ok(());
    };
    let Some(layout) = cells.first() else {
        return Ok(());
    };
    let previews = |cell: &Cell| {
        let r = (results.cells.iter())
            .find(|r| r.name == cell.name && r.key == cell.key && !r.failed())?;
        Some(read_grid(&out.join(&r.grid), shape, cell))
    };
    // The baseline from the results file: a run of some cells (`--only`) compares them with the
    // baseline's last finished samples. Every cell's grid has the same layout.
    let base = (results.cells.iter())
        .find(|r| r.name == name && !r.failed())
        .map(|r| read_grid(&out.join(&r.grid), shape, layout));
    let Some(base) = base else {
        let line = format!(
            "[quality] baseline \"{name}\" has no finished samples: nothing compared with it"
        );
        let _ = tx.send(LabEvent::Log(line));
        return Ok(());
    };
    let errors: Vec<(usize, _)> = (cells.iter().enumerate())
        .filter_map(|(i, cell)| Some((i, solve_error(&previews(cell)?, &base)?)))
        .collect();
    let mut updated = Vec::new();
    for (i, error) in errors {
        let Some(r) = results.cells.iter_mut().find(|r| r.name == cells[i].name) else {
            continue;
        };
        r.scores.set(RMSE, error.rmse);
        match error.psnr {
            Some(p) => r.scores.set(PSNR, p),
            // The baseline itself, or a cell that drew the very same samples.
            None => r.scores.remove(PSNR),
        }
        updated.push((i, r.clone()));
    }
    results.save(out)?;
    for (cell, result) in updated {
        let _ = tx.send(LabEvent::Rescored {
            cell,
            result: Box::new(result),
        });
    }
    Ok(())
}
