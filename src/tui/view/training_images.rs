//! The Training view's image pane: a panel per image tag and run — the validation samples a training
//! script logs — at one logged step, its images side by side; `,` and `.` step back and forward.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Stylize;
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::samplers::draw_tile;
use crate::tui::app::{ImageSlot, State};
use crate::tui::training_media::ImagePanel;

/// Smallest panel: room for a title and a few images.
const PANEL_MIN: (u16, u16) = (24, 8);
/// Narrowest image tile, in columns.
const TILE_MIN: u16 = 6;

/// A panel, its area, and its image tiles.
pub type PlacedPanel = (ImagePanel, Rect, Vec<(ImageSlot, Rect)>);

/// The panels of a page.
pub struct ImagesLayout {
    pub panels: Vec<PlacedPanel>,
    /// Panels in all, when they do not fit in one page.
    pub total: usize,
}

/// The panels shown in `area` and where their images go; `None` when no image tag is shown.
pub fn layout(state: &State, area: Rect) -> Option<ImagesLayout> {
    let t = &state.training;
    let panels = t.media.panels(|run, tag| t.filter.shows(run, tag));
    if panels.is_empty() || area.width < PANEL_MIN.0 || area.height < 3 {
        return None;
    }
    let cols = (area.width / PANEL_MIN.0).clamp(1, 4) as usize;
    let max_rows = (area.height / PANEL_MIN.1).max(1) as usize;
    let rows = panels.len().div_ceil(cols).clamp(1, max_rows);
    let cols = panels.len().div_ceil(rows).clamp(1, cols);
    let per_page = cols * rows;
    let pages = panels.len().div_ceil(per_page);
    let page = t.tag_page.rem_euclid(pages as i64) as usize;
    let total = panels.len();
    let row_areas = Layout::vertical(vec![Constraint::Ratio(1, rows as u32); rows]).split(area);
    let mut out = Vec::new();
    for (i, panel) in panels
        .into_iter()
        .skip(page * per_page)
        .take(per_page)
        .enumerate()
    {
        let cells = Layout::horizontal(vec![Constraint::Ratio(1, cols as u32); cols])
            .split(row_areas[i / cols]);
        let rect = cells[i % cols];
        let tiles = tiles(&panel, Block::bordered().inner(rect));
        out.push((panel, rect, tiles));
    }
    Some(ImagesLayout { panels: out, total })
}

/// The step's images side by side in `inner`, as many as fit at [`TILE_MIN`] columns or more.
fn tiles(panel: &ImagePanel, inner: Rect) -> Vec<(ImageSlot, Rect)> {
    let fit = (inner.width / TILE_MIN).max(1) as usize;
    let count = panel.images.len().min(fit);
    if count == 0 || inner.height == 0 {
        return Vec::new();
    }
    let width = inner.width / count as u16;
    panel
        .images
        .iter()
        .take(count)
        .enumerate()
        .map(|(k, &(tag, index))| {
            let rect = Rect::new(
                inner.x + k as u16 * width,
                inner.y,
                width.saturating_sub(1).max(1),
                inner.height,
            );
            let slot = ImageSlot {
                cell: 0,
                item: 0,
                size: (rect.width, rect.height),
                diff: None,
                frame: None,
                noisy: false,
                training: Some((tag, index)),
                start: false,
            };
            (slot, rect)
        })
        .collect()
}

/// Every image tile the pane shows.
pub fn image_slots(state: &State, area: Rect) -> Vec<(ImageSlot, Rect)> {
    layout(state, area).map_or(Vec::new(), |l| {
        l.panels
            .into_iter()
            .flat_map(|(_, _, tiles)| tiles)
            .collect()
    })
}

pub fn draw(frame: &mut Frame, state: &State, area: Rect, title: &str) {
    let Some(layout) = layout(state, area) else {
        let text = if state.training.media.tags.is_empty() {
            "no images logged yet: training scripts log validation samples with TensorBoard's add_images or \
             wandb.Image, and they appear here"
        } else {
            "no image tag matches the filter and the runs shown (/ to change it, ␣ to show a run)"
        };
        let block = Block::bordered().title(title.to_string());
        frame.render_widget(
            Paragraph::new(text)
                .dim()
                .wrap(Wrap { trim: false })
                .block(block),
            area,
        );
        return;
    };
    let shown = layout.panels.len();
    for (panel, rect, tiles) in &layout.panels {
        let more = panel.images.len().saturating_sub(tiles.len());
        let mut block = Block::bordered()
            .title(format!(" {} · {} ", panel.tag, panel.run))
            .title_bottom(format!(
                " step {} ({}/{}) · , . ",
                panel.step, panel.position, panel.steps
            ));
        if more > 0 {
            block = block.title_bottom(format!(" +{more} not shown "));
        }
        frame.render_widget(block, *rect);
        for (slot, tile) in tiles {
            draw_tile(frame, state, *slot, *tile);
        }
    }
    if layout.total > shown {
        let note = format!(" {shown} of {} image panels · [ ] for more ", layout.total);
        let at = Rect::new(
            area.x + 1,
            area.bottom().saturating_sub(1),
            area.width.saturating_sub(2),
            1,
        );
        frame.render_widget(Paragraph::new(note).dim(), at);
    }
}
