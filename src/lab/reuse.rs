//! Cells whose inputs have not changed since an earlier run: found in results.json, reported with the
//! previews read back from their grids, and not run again.

use std::path::Path;
use std::sync::mpsc::Sender;

use super::display::{display_shape, for_display};
use super::events::LabEvent;
use super::finish::{grid_columns, tally_path};
use super::images::{GAP, upscale_factor};
use super::plan::Cell;
use super::results::{CellResult, Results};
use super::tally::Tally;

/// When every cell is up to date and the results say what their images look like, reports them all as
/// reused without loading the model (a multi-gigabyte load for nothing to do).
pub(super) fn reuse_all(cells: &[Cell], out: &Path, tallied: bool, tx: &Sender<LabEvent>) -> bool {
    let mut results = Results::load(&out.join("results.json"));
    let Some(image_shape) = results.image_shape else {
        return false;
    };
    let frames = results.frames();
    let earlier: Option<Vec<&CellResult>> = cells
        .iter()
        .map(|cell| earlier_result(cell, &results, out, tallied))
        .collect();
    let Some(first) = earlier.and_then(|e| e.first().copied()) else {
        return false;
    };
    let _ = tx.send(LabEvent::Planned {
        cells: cells.to_vec(),
        sample_shape: display_shape(image_shape, frames),
        frames,
        provider: first.provider.clone(),
        providers_note: format!(
            "every cell is up to date: the model was not loaded (the cells ran on {})",
            first.provider
        ),
        providers_summary: String::new(),
    });
    let shape = (image_shape, frames);
    reuse_cached(cells, &mut results, out, shape, false, tallied, tx);
    let _ = tx.send(LabEvent::Log("every cell is up to date".into()));
    true
}

/// A finished earlier result of `cell` with the same key, whose grid (and tally, for a shard) is there.
fn earlier_result<'r>(
    cell: &Cell,
    results: &'r Results,
    out: &Path,
    tallied: bool,
) -> Option<&'r CellResult> {
    results
        .cells
        .iter()
        .find(|r| r.key == cell.key && !r.failed() && out.join(&r.grid).is_file())
        .filter(|_| {
            !tallied || Tally::load(&out.join(tally_path(cell))).is_ok_and(|t| t.1 == cell.key)
        })
}

/// Reports the cells whose inputs have not changed since a finished earlier run, with their grids (and
/// tallies, for a shard), and returns the indices of the others. A failed cell is never up to date.
pub(super) fn reuse_cached(
    cells: &[Cell],
    results: &mut Results,
    out: &Path,
    (sample_shape, frames): ([usize; 3], usize),
    force: bool,
    tallied: bool,
    tx: &Sender<LabEvent>,
) -> Vec<usize> {
    let mut pending = Vec::new();
    let mut renamed = false;
    for (i, cell) in cells.iter().enumerate() {
        match earlier_result(cell, results, out, tallied).cloned() {
            Some(r) if !force => {
                let images = for_display(
                    read_grid(&out.join(&r.grid), sample_shape, cell),
                    sample_shape,
                    frames,
                );
                let result = as_current(cell, &r, out);
                if result.name != r.name
                    || result.label != r.label
                    || result.shift != r.shift
                    || result.axes != r.axes
                {
                    // The old name goes unless another cell of this run now has it.
                    if !cells.iter().any(|c| c.name == r.name) {
                        results.cells.retain(|c| c.name != r.name);
                    }
                    results.put(result.clone());
                    renamed = true;
                }
                let _ = tx.send(LabEvent::CellDone {
                    cell: i,
                    result: Box::new(result),
                    images,
                    cached: true,
                });
            }
            _ => pending.push(i),
        }
    }
    if renamed && let Err(e) = results.save(out) {
        let _ = tx.send(LabEvent::Log(format!("warning: {e}")));
    }
    pending
}

/// An earlier result as the experiment names its cell now (a label edit reuses the samples but not the
/// name): the cell's name, label and shift, and its grid under the cell's own file name.
fn as_current(cell: &Cell, earlier: &CellResult, out: &Path) -> CellResult {
    let grid = format!("cells/{}.png", cell.file_stem());
    let moved = grid != earlier.grid
        && std::fs::read(out.join(&earlier.grid))
            .and_then(|png| {
                crate::atomic_file::write_atomic(&out.join(&grid), &png)
                    .map_err(std::io::Error::other)
            })
            .is_ok();
    CellResult {
        name: cell.name.clone(),
        label: cell.label.clone(),
        shift: cell.shift,
        axes: cell.axes.iter().cloned().collect(),
        warnings: cell.warnings.clone(),
        grid: if moved { grid } else { earlier.grid.clone() },
        ..earlier.clone()
    }
}

/// The preview images back from a cell's grid (for reused cells).
pub(super) fn read_grid(path: &std::path::Path, shape: [usize; 3], cell: &Cell) -> Vec<f32> {
    let count = cell.preview;
    let [c, h, w] = shape;
    let Ok(img) = image::open(path).map(|i| i.to_rgb8()) else {
        return Vec::new();
    };
    let columns = grid_columns(cell);
    let factor = upscale_factor(shape) as usize;
    let gap = GAP;
    let mut out = vec![0.0; count * c * h * w];
    for k in 0..count {
        let (ox, oy) = (
            (k % columns) * (w + gap) + gap,
            (k / columns) * (h + gap) + gap,
        );
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let (px, py) = (((ox + x) * factor) as u32, ((oy + y) * factor) as u32);
                    if px < img.width() && py < img.height() {
                        let v = img.get_pixel(px, py)[if c == 3 { ch } else { 0 }];
                        out[k * c * h * w + ch * h * w + y * w + x] = v as f32 / 127.5 - 1.0;
                    }
                }
            }
        }
    }
    out
}
