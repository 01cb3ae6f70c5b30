//! After a run, every finished cell's preview samples against the baseline cell's (`[quality]
//! baseline`), seed by seed, read back from their grids: `baseline_rmse` and `baseline_psnr` in
//! results.json, and the updated results sent to whoever follows the run.

use std::path::Path;
use std::sync::mpsc::Sender;

use super::events::LabEvent;
use super::plan::Cell;
use super::results::{CellResult, Results};
use super::reuse::read_grid;
use super::runner::Stop;
use super::scores::baseline::{PSNR, RMSE};
use crate::experiment::Experiment;
use crate::path_error::PathError;
use crate::quality::solve_error;

/// Compares the cells with the experiment's baseline cell, if it names one and the baseline finished,
/// and sends the updated results.
pub(super) fn compare(
    experiment: &Experiment,
    cells: &[Cell],
    out: &Path,
    tx: &Sender<LabEvent>,
) -> Result<(), Stop> {
    match compare_results(experiment, cells, out)? {
        Compared::Updated(updated) => {
            for (cell, result) in updated {
                let result = Box::new(result);
                let _ = tx.send(LabEvent::Rescored { cell, result });
            }
        }
        Compared::NoBaseline(line) => {
            let _ = tx.send(LabEvent::Log(line));
        }
        Compared::NotAsked => {}
    }
    Ok(())
}

/// What comparing with the baseline did.
pub(super) enum Compared {
    NotAsked,
    /// Why nothing was compared.
    NoBaseline(String),
    /// The cells (by index) whose results gained the comparison, as written to results.json.
    Updated(Vec<(usize, CellResult)>),
}

/// Every finished cell's preview samples against the baseline's, into results.json.
pub(super) fn compare_results(
    experiment: &Experiment,
    cells: &[Cell],
    out: &Path,
) -> Result<Compared, PathError> {
    let Some(name) = (experiment.quality.as_ref()).and_then(|q| q.baseline.as_deref()) else {
        return Ok(Compared::NotAsked);
    };
    let (mut results, _) = Results::open(&out.join("results.json"))?;
    let (Some(shape), Some(layout)) = (results.image_shape, cells.first()) else {
        return Ok(Compared::NotAsked);
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
        return Ok(Compared::NoBaseline(format!(
            "[quality] baseline \"{name}\" has no finished samples: nothing compared with it"
        )));
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
    Ok(Compared::Updated(updated))
}
