//! The X/Y view: two swept axes as columns and rows of previews, both labelled (`x`, `y` change them,
//! `v` steps the value every other axis is held at, `s` saves the grid as xy_grid.png).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Stylize;
use ratatui::widgets::{Block, Paragraph, Wrap};

use std::ops::Range;

use super::cut;
use super::page::{ZOOMS, tile_size, window};
use crate::lab::Cell;
use crate::tui::app::{ImageSlot, State};
use crate::tui::xy::{XyGrid, grid};

/// The widest row label.
const MAX_LABEL: u16 = 18;
/// Blank cells between tiles.
const GAP: u16 = 1;

/// Where everything of the X/Y view goes.
pub struct XyLayout {
    pub grid: XyGrid,
    pub header: Rect,
    pub tiles: Vec<(ImageSlot, Rect)>,
    pub column_labels: Vec<(String, Rect)>,
    pub row_labels: Vec<(String, Rect)>,
    /// The columns and rows shown.
    pub shown: (Range<usize>, Range<usize>),
}

/// Where everything goes in `area` (the view's panel); `None` when the experiment sweeps fewer than two
/// axes.
pub fn layout(state: &State, area: Rect) -> Option<XyLayout> {
    let cells: Vec<&Cell> = state.lab.cells.iter().map(|c| &c.cell).collect();
    let grid = grid(&cells, &state.xy)?;
    let header = Rect { height: 1, ..area };
    let widest = grid
        .rows
        .iter()
        .map(|r| r.chars().count())
        .max()
        .unwrap_or(0) as u16;
    let gutter = (widest + 1).min(MAX_LABEL).min(area.width / 4);
    let body = Rect {
        x: area.x + gutter,
        y: area.y + 2,
        width: area.width.saturating_sub(gutter),
        height: area.height.saturating_sub(2),
    };
    let (cols, rows) = (grid.columns.len() as u16, grid.rows.len() as u16);
    let fits = |t: (u16, u16)| {
        cols * (t.0 + GAP) <= body.width + GAP && rows * (t.1 + GAP) <= body.height + GAP
    };
    let size = |z: usize| tile_size(state.lab.sample_shape, state.font, ZOOMS[z]);
    let tile = (0..ZOOMS.len())
        .rev()
        .map(size)
        .find(|&t| fits(t))
        .unwrap_or(size(0));
    let fit_cols = (((body.width + GAP) / (tile.0 + GAP)) as usize).max(1);
    let fit_rows = (((body.height + GAP) / (tile.1 + GAP)) as usize).max(1);
    let shown_cols = window(state.xy.first.0, fit_cols, grid.columns.len());
    let shown_rows = window(state.xy.first.1, fit_rows, grid.rows.len());
    let mut tiles = Vec::new();
    let mut column_labels = Vec::new();
    let mut row_labels = Vec::new();
    let x_of = |k: usize| body.x + k as u16 * (tile.0 + GAP);
    for (k, c) in shown_cols.clone().enumerate() {
        let label = Rect::new(x_of(k), area.y + 1, tile.0, 1);
        column_labels.push((grid.columns[c].clone(), label));
    }
    for (j, r) in shown_rows.clone().enumerate() {
        let y = body.y + j as u16 * (tile.1 + GAP);
        let label = Rect::new(area.x, y + tile.1 / 2, gutter.saturating_sub(1), 1);
        row_labels.push((grid.rows[r].clone(), label));
        for (k, c) in shown_cols.clone().enumerate() {
            let Some((cell, item)) = grid.tiles[r][c] else {
                continue;
            };
            let slot = ImageSlot {
                cell,
                item,
                size: tile,
                diff: None,
                frame: None,
                noisy: false,
                training: None,
                start: false,
            };
            tiles.push((slot, Rect::new(x_of(k), y, tile.0, tile.1)));
        }
    }
    Some(XyLayout {
        grid,
        header,
        tiles,
        column_labels,
        row_labels,
        shown: (shown_cols, shown_rows),
    })
}

pub fn draw(frame: &mut Frame, state: &State, area: Rect) {
    let Some(l) = layout(state, area) else {
        let text = "the X/Y grid needs two swept axes (samplers, steps, guidance, prompts or seeds); this \
                    experiment sweeps fewer";
        frame.render_widget(
            Paragraph::new(text)
                .dim()
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" X/Y ")),
            area,
        );
        return;
    };
    let g = &l.grid;
    let mut header = format!(" x: {} · y: {}", g.x.name(), g.y.name());
    if !g.held.is_empty() {
        header.push_str(&format!(" · {} (v: next)", g.held.join(" · ")));
    }
    let (cols, rows) = &l.shown;
    if cols.len() < g.columns.len() {
        header.push_str(&format!(
            " · columns {}–{} of {} (>/<)",
            cols.start + 1,
            cols.end,
            g.columns.len()
        ));
    }
    if rows.len() < g.rows.len() {
        header.push_str(&format!(
            " · rows {}–{} of {} (PgDn/PgUp)",
            rows.start + 1,
            rows.end,
            g.rows.len()
        ));
    }
    header.push_str(" · x/y: axes · s: save");
    frame.render_widget(Paragraph::new(header).dim(), l.header);
    for (label, rect) in &l.column_labels {
        frame.render_widget(
            Paragraph::new(cut(label, rect.width)).centered().bold(),
            *rect,
        );
    }
    for (label, rect) in &l.row_labels {
        frame.render_widget(
            Paragraph::new(cut(label, rect.width))
                .right_aligned()
                .bold(),
            *rect,
        );
    }
    for (slot, rect) in &l.tiles {
        super::samplers::draw_tile(frame, state, *slot, *rect);
    }
}
