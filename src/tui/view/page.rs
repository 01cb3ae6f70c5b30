//! Where the Samplers view puts each preview: one tile per sample, never smaller than legible, as many
//! cells and (prompt, seed) rows as fit at that size, the rest paged. A pure function of the state and
//! the area, so the runner asks it which tiles to encode and the key handler how far a page goes.

use std::ops::Range;

use ratatui::layout::{Constraint, Layout, Rect};

use crate::lab::Cell;
use crate::tui::app::State;

/// Narrowest column that still reads its text.
pub const MIN_COLUMN: u16 = 18;
/// Text lines above a column's tiles.
pub const INFO_LINES: u16 = 3;
/// Width of the focused cell's info panel.
pub const FOCUS_INFO: u16 = 30;
/// The widest row-label gutter (prompts, left of the tiles).
const MAX_GUTTER: u16 = 16;
/// Blank cells between tiles, so samples on dark backgrounds do not run together.
const GAP: u16 = 1;
/// Tile sizes as multiples of the smallest legible one; `z`/`Z` step through them.
pub const ZOOMS: [f64; 7] = [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0];

/// The frame's layout of the previews.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// One tile in terminal cells.
    pub tile: (u16, u16),
    /// Index into [`ZOOMS`].
    pub zoom: usize,
    /// Whether the tiles are smaller than `zoom` gives, to fit the panel's height (at least legible).
    pub shrunk: bool,
    /// The one-line summary of what is shown ("prompts 1–3 of 10 · …").
    pub header: Rect,
    /// The row-label gutter (zero wide without prompts as rows).
    pub gutter: Rect,
    /// The cells shown and their columns (one, the focused cell's panel, when focused).
    pub columns: Vec<(usize, Rect)>,
    /// The column of the samples' start images, left of the cells, when the run starts from images and
    /// there is room beside at least one cell.
    pub start: Option<Rect>,
    /// The grid every cell's previews form (rows × columns), and the part shown.
    pub grid: Grid,
    pub rows: Range<usize>,
    pub cols: Range<usize>,
}

/// A cell's previews as a grid: a row per prompt and a column per seed when the rows are prompts,
/// otherwise the samples in reading order, as many a row as fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub rows: usize,
    pub cols: usize,
    /// Whether the rows are prompts (labelled in the gutter).
    pub prompt_rows: bool,
    pub count: usize,
}

impl Grid {
    pub fn of(cell: &Cell, cols_fit: usize) -> Grid {
        let count = cell.preview;
        match cell.preview_rows() {
            Some(seeds) => Grid {
                rows: count / seeds,
                cols: seeds,
                prompt_rows: true,
                count,
            },
            None => {
                let cols = cols_fit.clamp(1, count.max(1));
                Grid {
                    rows: count.div_ceil(cols),
                    cols,
                    prompt_rows: false,
                    count,
                }
            }
        }
    }

    /// The preview sample at grid row `r`, column `c`, if there is one.
    pub fn item(&self, r: usize, c: usize) -> Option<usize> {
        let i = r * self.cols + c;
        (c < self.cols && i < self.count).then_some(i)
    }
}

/// The smallest legible tile for images of `shape` (C, H, W): in half blocks (one pixel per column, two
/// per row) half the image's width but 16 to 32 columns; in sixel or kitty (`font` pixels a cell) 64 to
/// 128 pixels wide. Scaled by `zoom`.
pub fn tile_size(shape: [usize; 3], font: Option<(u16, u16)>, zoom: f64) -> (u16, u16) {
    let [_, h, w] = shape.map(|v| v.max(1) as f64);
    match font {
        None => {
            let cols = ((w / 2.0).clamp(16.0, 32.0) * zoom).round();
            (cols as u16, (cols * h / w / 2.0).ceil().max(1.0) as u16)
        }
        Some((fw, fh)) => {
            let px = w.clamp(64.0, 128.0) * zoom;
            let cols = (px / f64::from(fw.max(1))).ceil();
            let rows = (px * h / w / f64::from(fh.max(1))).ceil();
            (cols.max(1.0) as u16, rows.max(1.0) as u16)
        }
    }
}

/// The tile for the run's images as shown at `zoom`: a video model's clip is a strip of its frames, each the
/// size of an image's tile, or (playing) one frame.
fn shown_tile(state: &State, zoom: f64) -> (u16, u16) {
    let frames = state.lab.frames.max(1);
    let [c, h, strip_w] = state.lab.sample_shape;
    let (cols, rows) = tile_size([c, h, strip_w / frames], state.font, zoom);
    match state.playing {
        Some(_) => (cols, rows),
        None => (cols * frames as u16, rows),
    }
}

/// The smallest legible tile for the run's images: 16 columns in half blocks, 64 pixels wide in graphics; a
/// clip's strip half that a frame, so that 8 frames fit an 80-column terminal.
fn legible(state: &State) -> (u16, u16) {
    let frames = state.lab.frames.max(1);
    let [c, h, strip_w] = state.lab.sample_shape;
    let w = strip_w / frames;
    // The size whose own tile is the minimum: half blocks show 16-pixel-wide images at 16 columns, graphics
    // 64-pixel-wide ones at 64 px.
    let small = if state.font.is_none() { 16 } else { 64 };
    let (cols, rows) = tile_size([c, (h * small).div_ceil(w.max(1)), small], state.font, 1.0);
    match state.playing {
        Some(_) => (cols, rows),
        None if frames > 1 => ((cols / 2).max(1) * frames as u16, (rows / 2).max(1)),
        None => (cols, rows),
    }
}

/// How many tiles of `tile` fit in `room` cells along one side.
fn fit(room: u16, tile: u16) -> usize {
    ((room + GAP) / (tile + GAP).max(1)) as usize
}

/// The row-label gutter's width for prompts as rows.
fn gutter_width(state: &State, width: u16) -> u16 {
    let Some(cell) = state.lab.cells.first() else {
        return 0;
    };
    if cell.cell.preview_rows().is_none() {
        return 0;
    }
    let widest = (cell.cell.conditions.iter())
        .map(|p| p.chars().count())
        .max()
        .unwrap_or(0);
    match widest {
        0 => 0,
        w => (w as u16 + 2).min(MAX_GUTTER).min(width / 4),
    }
}

/// Where the previews go in `area` (the Samplers view's whole panel). `None` without cells.
pub fn page(state: &State, area: Rect) -> Option<Page> {
    let first = state.lab.cells.first()?;
    let [header, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let focused = state.focused && state.selected < state.lab.cells.len();
    let panel = match focused {
        // The focused cell's border, then its info panel at the left.
        true => {
            let inner = shrink(body);
            Rect {
                x: inner.x + FOCUS_INFO.min(inner.width),
                width: inner.width.saturating_sub(FOCUS_INFO),
                ..inner
            }
        }
        false => body,
    };
    let gw = gutter_width(state, panel.width);
    let [gutter, tiles] =
        Layout::horizontal([Constraint::Length(gw), Constraint::Min(0)]).areas(panel);
    let starts = !focused && state.lab.starts.is_some();
    let cells = match focused {
        true => 1,
        false => state.lab.cells.len() + usize::from(starts),
    };
    let fits = |zoom: usize| Fitted::new(state, &first.cell, tiles, cells, focused, zoom);
    let zoom = match state.zoom {
        Some(z) => z.min(ZOOMS.len() - 1),
        // The largest tiles that show everything, else the smallest, paged.
        None => (0..ZOOMS.len())
            .rev()
            .find(|&z| fits(z).shows_all())
            .unwrap_or(0),
    };
    let mut f = fits(zoom);
    // A large image whose smallest zoom does not fit the panel's height shrinks to the smallest legible tile
    // (16 columns, 64 px) rather than drawing nothing.
    let shrunk = !f.one && state.zoom.is_none() && {
        let small = Fitted::sized(&first.cell, tiles, cells, focused, legible(state));
        let fits = small.one && small.tile != f.tile;
        if fits {
            f = small;
        }
        fits
    };
    let (start, columns) = match focused {
        true => (None, vec![(state.selected, body)]),
        // The start images take the first column's room.
        false if starts && f.cells_fit >= 2 => {
            let width = tiles.width / f.cells_fit as u16;
            let start = Rect { width, ..tiles };
            let rest = Rect {
                x: tiles.x + width,
                width: tiles.width - width,
                ..tiles
            };
            (Some(start), visible_columns(state, rest, f.cells_fit - 1))
        }
        false => (None, visible_columns(state, tiles, f.cells_fit)),
    };
    let rows = window(state.page.0, f.rows_fit, f.grid.rows);
    let cols = window(state.page.1, f.cols_fit, f.grid.cols);
    Some(Page {
        tile: f.tile,
        zoom,
        shrunk,
        header,
        gutter,
        columns,
        start,
        grid: f.grid,
        rows,
        cols,
    })
}

/// What fits at one zoom.
struct Fitted {
    tile: (u16, u16),
    /// Whether one tile fits at all.
    one: bool,
    cells: usize,
    cells_fit: usize,
    rows_fit: usize,
    cols_fit: usize,
    grid: Grid,
}

impl Fitted {
    fn new(
        state: &State,
        cell: &Cell,
        area: Rect,
        cells: usize,
        focused: bool,
        zoom: usize,
    ) -> Self {
        let tile = shown_tile(state, ZOOMS[zoom]);
        Self::sized(cell, area, cells, focused, tile)
    }

    /// What fits with tiles of `tile` cells.
    fn sized(cell: &Cell, area: Rect, cells: usize, focused: bool, tile: (u16, u16)) -> Self {
        let column = (tile.0 + 2).max(MIN_COLUMN);
        let cells_fit = match focused {
            true => 1,
            false => ((area.width / column) as usize).clamp(1, cells),
        };
        // Each column's tiles: inside its border, below its text (the focused panel has both outside).
        let (width, height) = match focused {
            true => (area.width, area.height),
            false => (
                (area.width / cells_fit as u16).saturating_sub(2),
                area.height.saturating_sub(2 + INFO_LINES),
            ),
        };
        let cols_fit = fit(width, tile.0).max(1);
        let rows_fit = fit(height, tile.1).max(1);
        Fitted {
            tile,
            one: tile.0 <= width && tile.1 <= height,
            cells,
            cells_fit,
            rows_fit,
            cols_fit,
            grid: Grid::of(cell, cols_fit),
        }
    }

    fn shows_all(&self) -> bool {
        self.one
            && self.cells_fit >= self.cells
            && self.grid.rows <= self.rows_fit
            && self.grid.cols <= self.cols_fit
    }
}

/// `shown` of `total` starting at `first`, moved back so the last page is full.
pub fn window(first: usize, shown: usize, total: usize) -> Range<usize> {
    let start = first.min(total.saturating_sub(shown));
    start..(start + shown).min(total)
}

/// The cells that fit, keeping the selected cell in view, and their columns.
fn visible_columns(state: &State, area: Rect, fit: usize) -> Vec<(usize, Rect)> {
    let n = state.lab.cells.len();
    let fit = fit.clamp(1, n);
    let first = state.selected.saturating_sub(fit - 1).min(n - fit);
    let rects = Layout::horizontal(vec![Constraint::Ratio(1, fit as u32); fit]).split(area);
    (first..first + fit).zip(rects.iter().copied()).collect()
}

fn shrink(r: Rect) -> Rect {
    Rect {
        x: r.x + 1,
        y: r.y + 1,
        width: r.width.saturating_sub(2),
        height: r.height.saturating_sub(2),
    }
}

impl Page {
    /// Where the tiles of a column go: inside its border below its text, or (focused) the panel right of
    /// the info and gutter.
    pub fn tile_area(&self, column: Rect, focused: bool) -> Rect {
        match focused {
            true => {
                let inner = shrink(column);
                let left = FOCUS_INFO.min(inner.width) + self.gutter.width;
                Rect {
                    x: inner.x + left,
                    width: inner.width.saturating_sub(left),
                    ..inner
                }
            }
            false => {
                let inner = shrink(column);
                Rect {
                    y: inner.y + INFO_LINES.min(inner.height),
                    height: inner.height.saturating_sub(INFO_LINES),
                    ..inner
                }
            }
        }
    }

    /// Each shown preview of a column with tiles in `area`: (sample index, its rect), centred across.
    pub fn tiles(&self, area: Rect) -> Vec<(usize, Rect)> {
        let (tw, th) = self.tile;
        let across = self.cols.len() as u16;
        let used = across * tw + across.saturating_sub(1) * GAP;
        let x0 = area.x + area.width.saturating_sub(used) / 2;
        let mut out = Vec::new();
        for (i, r) in self.rows.clone().enumerate() {
            for (j, c) in self.cols.clone().enumerate() {
                let Some(item) = self.grid.item(r, c) else {
                    continue;
                };
                let rect = Rect {
                    x: x0 + j as u16 * (tw + GAP),
                    y: area.y + i as u16 * (th + GAP),
                    width: tw,
                    height: th,
                }
                .intersection(area);
                if rect.width == tw && rect.height == th {
                    out.push((item, rect));
                }
            }
        }
        out
    }

    /// The samples shown, in reading order.
    pub fn tiles_items(&self) -> Vec<usize> {
        (self.rows.clone())
            .flat_map(|r| self.cols.clone().filter_map(move |c| self.grid.item(r, c)))
            .collect()
    }

    /// The grid row labels' vertical places: (grid row, y) for each shown row.
    pub fn row_centres(&self, area: Rect) -> Vec<(usize, u16)> {
        let th = self.tile.1;
        (self.rows.clone())
            .enumerate()
            .map(|(i, r)| (r, area.y + i as u16 * (th + GAP) + th / 2))
            .filter(|&(_, y)| y < area.bottom())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_tile_is_legible() {
        // Half blocks: a 32 px sample at half its size, small ones no smaller, large ones up to 32 columns.
        assert_eq!(tile_size([1, 32, 32], None, 1.0), (16, 8));
        assert_eq!(tile_size([1, 8, 8], None, 1.0), (16, 8));
        assert_eq!(tile_size([3, 512, 512], None, 1.0), (32, 16));
        assert_eq!(tile_size([3, 64, 128], None, 1.0), (32, 8));
        assert_eq!(tile_size([1, 32, 32], None, 2.0), (32, 16));
        // Graphics: at least 64 px (10×20 px cells).
        assert_eq!(tile_size([1, 32, 32], Some((10, 20)), 1.0), (7, 4));
        assert_eq!(tile_size([3, 512, 512], Some((10, 20)), 1.0), (13, 7));
    }

    #[test]
    fn a_window_never_runs_past_the_end() {
        assert_eq!(window(0, 3, 10), 0..3);
        assert_eq!(window(9, 3, 10), 7..10);
        assert_eq!(window(5, 20, 4), 0..4);
    }
}
