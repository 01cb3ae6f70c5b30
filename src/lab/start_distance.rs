//! After an img2img run, every finished cell's preview samples against the start image each began from, read
//! back from their grids: `start_rmse` and `start_psnr` in results.json, and the updated results sent to whoever
//! follows the run.

use std::path::Path;
use std::sync::mpsc::Sender;

use super::events::LabEvent;
use super::plan::Cell;
use super::results::{CellResult, Results};
use super::reuse::read_grid;
use super::scores::start_distance::{PSNR, RMSE};
use super::start_images::read_image;
use crate::experiment::Experiment;
use crate::quality::solve_error;

/// Scores the img2img cells' distance to their start images and sends the updated results.
pub(super) fn compare(experiment: &Experiment, cells: &[Cell], out: &Path, tx: &Sender<LabEvent>) {
    match compare_results(experiment, cells, out) {
        Ok(updated) => {
            for (cell, result) in updated {
                let result = Box::new(result);
                let _ = tx.send(LabEvent::Rescored { cell, result });
            }
        }
        Err(e) => {
            let _ = tx.send(LabEvent::Log(format!("distance to the start images: {e}")));
        }
    }
}

/// Every finished img2img cell's preview samples against their start images, into results.json; returns the
/// cells (by index) whose results gained the scores.
pub(super) fn compare_results(
    experiment: &Experiment,
    cells: &[Cell],
    out: &Path,
) -> Result<Vec<(usize, CellResult)>, String> {
    let Some(spec) = (experiment.conditioning.as_ref()).filter(|c| !c.init_images.is_empty())
    else {
        return Ok(Vec::new());
    };
    if cells.iter().all(|c| c.strength.is_none()) {
        return Ok(Vec::new());
    }
    let (mut results, _) = Results::open(&out.join("results.json")).map_err(|e| e.to_string())?;
    let Some(shape) = results.image_shape else {
        return Ok(Vec::new());
    };
    let starts: Vec<Vec<f32>> = (spec.init_images.iter())
        .map(|p| read_image(p, shape).map(|(pixels, _)| pixels))
        .collect::<Result<_, _>>()?;
    let mut updated = Vec::new();
    for (i, cell) in cells
        .iter()
        .enumerate()
        .filter(|(_, c)| c.strength.is_some())
    {
        let Some(r) = (results.cells.iter_mut())
            .find(|r| r.name == cell.name && r.key == cell.key && !r.failed())
        else {
            continue;
        };
        let samples = read_grid(&out.join(&r.grid), shape, cell);
        // The grid holds the previews in the cell's item order.
        let start: Vec<f32> = (cell.items[..cell.preview].iter())
            .flat_map(|item| {
                let k = spec
                    .init_image_index(item.condition, item.seed_index)
                    .unwrap_or(0);
                starts[k].iter().copied()
            })
            .collect();
        let Some(error) = solve_error(&samples, &start) else {
            continue;
        };
        r.scores.set(RMSE, error.rmse);
        match error.psnr {
            Some(p) => r.scores.set(PSNR, p),
            None => r.scores.remove(PSNR),
        }
        updated.push((i, r.clone()));
    }
    results.save(out).map_err(|e| e.to_string())?;
    Ok(updated)
}
