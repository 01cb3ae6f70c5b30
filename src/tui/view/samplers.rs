//! The Samplers view: one column per cell, the same seeds in each; or one cell focused, larger.

use std::num::NonZeroU16;

use ratatui::Frame;
use ratatui::buffer::{Buffer, CellDiffOption};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui_image::Image;

use crate::lab::progress::CellView;
use crate::lab::scores::METRICS;
use crate::tui::app::{ImageSlot, State};

/// Narrowest column that still reads.
const MIN_COLUMN: u16 = 18;
/// Text lines above a column's image.
const INFO_LINES: u16 = 3;
/// Width of the focused cell's info panel.
const FOCUS_INFO: u16 = 30;
/// The widest row-label gutter (prompts, left of the previews).
const MAX_GUTTER: u16 = 16;

/// The row-label gutter at the left of `area` and the rest, when the previews' rows are prompts (every cell
/// has the experiment's prompts); no gutter otherwise.
fn split_gutter(state: &State, area: Rect) -> (Rect, Rect) {
    let rows = state
        .lab
        .cells
        .first()
        .filter(|c| c.cell.preview_rows().is_some());
    let widest = rows.map_or(0, |c| {
        c.cell
            .conditions
            .iter()
            .map(|p| p.chars().count())
            .max()
            .unwrap_or(0)
    });
    let width = match widest {
        0 => 0,
        w => (w as u16 + 2).min(MAX_GUTTER).min(area.width / 4),
    };
    let [gutter, rest] =
        Layout::horizontal([Constraint::Length(width), Constraint::Min(0)]).areas(area);
    (gutter, rest)
}

/// The labels as shown in `room` columns: when none fits and they share leading words ("a handwritten 0",
/// "a handwritten 1"), what differs, after "…" ("…0", "…1").
fn distinct_parts(labels: &[String], room: usize) -> Vec<String> {
    if labels.len() < 2 || labels.iter().any(|l| l.chars().count() <= room) {
        return labels.to_vec();
    }
    let first = &labels[0];
    let mut common = first.len();
    for label in &labels[1..] {
        common = common.min(
            first
                .char_indices()
                .zip(label.chars())
                .find(|((_, a), b)| a != b)
                .map_or(first.len().min(label.len()), |((i, _), _)| i),
        );
    }
    // Cut at a word boundary, so "a handwritten 1" and "a handwritten 10" keep their numbers whole.
    let cut = first[..common].rfind(' ').map_or(0, |i| i + 1);
    if cut == 0 {
        return labels.to_vec();
    }
    labels.iter().map(|l| format!("…{}", &l[cut..])).collect()
}

/// Each prompt beside its row of the encoded previews in `image` (nothing until they are encoded).
fn draw_row_labels(frame: &mut Frame, state: &State, gutter: Rect, slot: ImageSlot, image: Rect) {
    let (Some(cell), Some(enc)) = (state.lab.cells.get(slot.cell), state.images.get(&slot)) else {
        return;
    };
    let labels = &cell.cell.conditions;
    if gutter.width == 0 || labels.is_empty() || enc.size.1 > image.height {
        return;
    }
    let room = gutter.width.saturating_sub(2) as usize;
    let labels = distinct_parts(labels, room);
    let row_height = f64::from(enc.size.1) / labels.len() as f64;
    for (k, label) in labels.iter().enumerate() {
        let y = image.y + ((k as f64 + 0.5) * row_height) as u16;
        if y >= gutter.bottom() {
            break;
        }
        // One blank column each side keeps the label off the text before it and the image after it.
        let text: String = if label.chars().count() > room {
            let mut t: String = label.chars().take(room.saturating_sub(1)).collect();
            t.push('…');
            t
        } else {
            label.clone()
        };
        let at = Rect::new(gutter.x + 1, y, room as u16, 1);
        frame.render_widget(Paragraph::new(text).right_aligned().dim(), at);
    }
}

/// Each visible cell and its column, keeping the selected cell in view.
fn columns(state: &State, area: Rect) -> Vec<(usize, Rect)> {
    let n = state.lab.cells.len();
    if n == 0 {
        return Vec::new();
    }
    let area = split_gutter(state, area).1;
    let fit = ((area.width / MIN_COLUMN) as usize).clamp(1, n);
    let first = state.selected.saturating_sub(fit - 1).min(n - fit);
    let rects = Layout::horizontal(vec![Constraint::Ratio(1, fit as u32); fit]).split(area);
    (first..first + fit).zip(rects.iter().copied()).collect()
}

fn image_rect(column: Rect) -> Rect {
    let inner = Block::bordered().inner(column);
    Rect {
        y: inner.y + INFO_LINES,
        height: inner.height.saturating_sub(INFO_LINES),
        ..inner
    }
}

/// The focused cell's info panel, row-label gutter and image.
fn focus_rects(state: &State, area: Rect) -> (Rect, Rect, Rect) {
    let inner = Block::bordered().inner(area);
    let [info, image] =
        Layout::horizontal([Constraint::Length(FOCUS_INFO), Constraint::Min(10)]).areas(inner);
    let (gutter, image) = split_gutter(state, image);
    (info, gutter, image)
}

pub fn image_slots(state: &State, area: Rect) -> Vec<(ImageSlot, Rect)> {
    if state.focused {
        if state.lab.cells.get(state.selected).is_none() {
            return Vec::new();
        }
        let slot = ImageSlot {
            cell: state.selected,
            large: true,
        };
        return vec![(slot, focus_rects(state, area).2)];
    }
    columns(state, area)
        .into_iter()
        .map(|(cell, rect)| (ImageSlot { cell, large: false }, image_rect(rect)))
        .collect()
}

pub fn draw(frame: &mut Frame, state: &State, area: Rect) {
    if state.lab.cells.is_empty() {
        let text = if state.experiment.is_none() {
            "no experiment loaded: fix the file and save it"
        } else {
            "planning the cells…"
        };
        frame.render_widget(
            Paragraph::new(text)
                .dim()
                .block(Block::bordered().title(" samplers ")),
            area,
        );
        return;
    }
    if state.focused
        && let Some(cell) = state.lab.cells.get(state.selected)
    {
        draw_focused(frame, state, cell, area);
        return;
    }
    let n = state.lab.cells.len();
    let gutter = split_gutter(state, area).0;
    let visible = columns(state, area);
    if let Some(&(first, rect)) = visible.first() {
        let slot = ImageSlot {
            cell: first,
            large: false,
        };
        draw_row_labels(frame, state, gutter, slot, image_rect(rect));
    }
    for (i, rect) in visible.iter().copied() {
        let cell = &state.lab.cells[i];
        let selected = i == state.selected;
        let more_left = i > 0 && i == visible[0].0;
        let title = column_title(cell, rect.width.saturating_sub(2) as usize, more_left);
        let border = if selected {
            Style::new().fg(Color::Cyan).bold()
        } else {
            Style::new().dim()
        };
        let mut block = Block::bordered().title(title).border_style(border);
        if i + 1 < n && rect.right() >= area.right() {
            block = block.title_bottom(Line::from("›").right_aligned());
        }
        let inner = block.inner(rect);
        frame.render_widget(block, rect);
        let info = Rect {
            height: INFO_LINES.min(inner.height),
            ..inner
        };
        frame.render_widget(
            Paragraph::new(info_lines(state, cell, false, info.width)),
            info,
        );
        draw_image(
            frame,
            state,
            ImageSlot {
                cell: i,
                large: false,
            },
            image_rect(rect),
        );
    }
}

/// " label steps " (" label · steps · g7.5 " when the run is conditional), the label shortened with "…" so
/// the step count and guidance always show.
fn column_title(cell: &CellView, width: usize, more_left: bool) -> String {
    let steps = match cell.cell.conditions.is_empty() {
        true => format!(" {}", cell.steps),
        false => format!(" · {} · g{}", cell.steps, cell.cell.guidance),
    };
    let lead = if more_left { "‹" } else { " " };
    let room = width.saturating_sub(steps.chars().count() + 2);
    let label: String = if cell.cell.label.chars().count() > room {
        let mut l: String = cell
            .cell
            .label
            .chars()
            .take(room.saturating_sub(1))
            .collect();
        l.push('…');
        l
    } else {
        cell.cell.label.clone()
    };
    format!("{lead}{label}{steps} ")
}

fn draw_focused(frame: &mut Frame, state: &State, cell: &CellView, area: Rect) {
    let block = Block::bordered()
        .title(format!(
            " {} · {} {} · Enter/Esc back ",
            cell.cell.name,
            cell.cell.preview,
            if cell.cell.conditions.is_empty() {
                "seeds"
            } else {
                "samples"
            }
        ))
        .border_style(Style::new().fg(Color::Cyan));
    frame.render_widget(block, area);
    let (info, gutter, image) = focus_rects(state, area);
    // Long prompt lists wrap rather than run under the row labels.
    frame.render_widget(
        Paragraph::new(info_lines(state, cell, true, info.width)).wrap(Wrap { trim: false }),
        info,
    );
    let slot = ImageSlot {
        cell: state.selected,
        large: true,
    };
    draw_image(frame, state, slot, image);
    draw_row_labels(frame, state, gutter, slot, image);
}

fn status(cell: &CellView) -> Line<'static> {
    match &cell.result {
        Some(r) if r.failed() => {
            Line::from(format!("failed: {}", r.error.as_deref().unwrap_or_default()).red())
        }
        Some(_) if cell.cached => Line::from("reused".green()),
        Some(_) => Line::from("done".green()),
        None if cell.shards.is_some() => {
            let (done, shards) = cell.shards.unwrap_or_default();
            let s = format!(
                "shards {done}/{shards} · {}/{} samples",
                cell.samples_done, cell.samples_total
            );
            Line::from(s.yellow())
        }
        None if cell.step == 0 => Line::from("waiting".dim()),
        None => {
            let mut s = format!("step {}/{}", cell.step, cell.steps);
            if cell.samples_total > cell.cell.preview {
                s.push_str(&format!(" · {}/{}", cell.samples_done, cell.samples_total));
            }
            Line::from(s.yellow())
        }
    }
}

fn info_lines(state: &State, cell: &CellView, long: bool, width: u16) -> Vec<Line<'static>> {
    let provider = cell
        .result
        .as_ref()
        .map_or(state.lab.provider.clone(), |r| r.provider.clone());
    let mut lines = vec![status(cell)];
    let nfe = cell.result.as_ref().map_or(cell.steps, |r| r.nfe);
    if long {
        lines.push(Line::from(format!("sampler  {}", cell.cell.class)));
        lines.push(Line::from(format!("steps    {}", cell.steps)));
        lines.push(Line::from(format!("NFE      {nfe}")));
        lines.push(Line::from(format!("provider {provider}")));
        lines.extend(condition_lines(state, &cell.cell));
        if let Some(r) = &cell.result {
            lines.push(Line::from(format!(
                "model    {:.3} ms/step",
                r.model_ms_per_step
            )));
            lines.push(Line::from(format!(
                "sampler  {:.3} ms/step",
                r.sampler_ms_per_step
            )));
            lines.push(Line::from(format!(
                "         {:.2} ms/sample",
                r.ms_per_sample
            )));
            lines.push(Line::from(format!("samples  {}", r.samples)));
            for metric in METRICS {
                let detail = metric.detail(&r.scores);
                let breakdown = metric.per_condition() && !detail.is_empty();
                lines.extend(detail.into_iter().map(Line::from));
                if breakdown {
                    let labels = cell.cell.conditions.iter();
                    for (label, a) in labels.zip(&r.accuracies) {
                        lines.push(Line::from(format!("  {:>4.0}% {label}", a * 100.0)).dim());
                    }
                }
            }
        }
        return lines;
    }
    lines.push(Line::from(fit(&[format!("NFE {nfe}"), provider], width)));
    match &cell.result {
        Some(r) => {
            let time = format!("{:.3} ms/step", r.model_ms_per_step + r.sampler_ms_per_step);
            let mut parts = Vec::new();
            parts.extend(METRICS.iter().filter_map(|m| m.brief(&r.scores)));
            parts.push(time);
            lines.push(Line::from(fit(&parts, width)).dim());
        }
        None => lines.push(Line::from("")),
    }
    lines
}

/// The focused cell's guidance, prompts (or classes), negative prompt and seeds.
fn condition_lines(state: &State, cell: &crate::lab::Cell) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if !cell.conditions.is_empty() {
        let mut guidance = format!("guidance {}", cell.guidance);
        if cell.guidance_rescale != 0.0 {
            guidance.push_str(&format!(" (rescale {})", cell.guidance_rescale));
        }
        lines.push(Line::from(guidance));
        let key = if cell.is_class_conditional() {
            "classes "
        } else {
            "prompts "
        };
        lines.push(Line::from(format!("{key} {}", cell.conditions.join(" | "))));
    }
    let negative = state
        .experiment
        .as_ref()
        .and_then(|e| e.conditioning.as_ref())
        .and_then(|c| c.negative_prompt.clone());
    if let Some(negative) = negative.filter(|_| !cell.is_class_conditional()) {
        lines.push(Line::from(format!("negative {negative}")));
    }
    let mut seeds: Vec<u64> = cell.items[..cell.preview].iter().map(|i| i.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let contiguous = seeds.windows(2).all(|w| w[1] == w[0] + 1);
    let shown = match (seeds.first(), seeds.last()) {
        (Some(a), Some(b)) if contiguous && a != b => format!("{a}–{b}"),
        _ => seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    };
    lines.push(Line::from(format!("seeds    {shown}")));
    lines
}

/// The parts, most important first, joined by " · " as far as they fit whole in `width`: a narrow
/// column drops a figure rather than cutting its digits.
fn fit(parts: &[String], width: u16) -> String {
    let mut line = String::new();
    for part in parts {
        let next = if line.is_empty() {
            part.clone()
        } else {
            format!("{line} · {part}")
        };
        if next.chars().count() > width as usize && !line.is_empty() {
            break;
        }
        line = next;
    }
    line
}

fn draw_image(frame: &mut Frame, state: &State, slot: ImageSlot, rect: Rect) {
    if rect.width == 0 || rect.height == 0 {
        return;
    }
    let empty = state
        .lab
        .cells
        .get(slot.cell)
        .is_none_or(|c| c.images.is_empty());
    match state.images.get(&slot) {
        Some(enc) if !empty && enc.size.0 <= rect.width && enc.size.1 <= rect.height => {
            let at = Rect {
                x: rect.x + (rect.width - enc.size.0) / 2,
                y: rect.y,
                width: enc.size.0,
                height: enc.size.1,
            };
            frame.render_widget(Image::new(&enc.protocol), at);
            pin_sequence_widths(frame.buffer_mut(), at);
        }
        _ if empty => frame.render_widget(Paragraph::new("·".dim()).centered(), rect),
        _ => {}
    }
}

/// Sixel, kitty and iTerm2 put an image's escape sequence into one cell (kitty: one per row), and
/// ratatui measures a cell by its symbol: thousands of columns for a sequence. The diff would then
/// step over the rest of the screen after the first image, so later columns, the log and the
/// status line were never sent again. Such a cell covers the rest of its image row, no more.
fn pin_sequence_widths(buf: &mut Buffer, at: Rect) {
    for y in at.top()..at.bottom() {
        for x in at.left()..at.right() {
            let Some(cell) = buf.cell_mut((x, y)) else {
                continue;
            };
            if !cell.symbol().contains('\x1b') {
                continue;
            }
            if let Some(width) = NonZeroU16::new(at.right() - x) {
                cell.set_diff_option(CellDiffOption::ForcedWidth(width));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::distinct_parts;

    fn owned(labels: &[&str]) -> Vec<String> {
        labels.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn labels_that_do_not_fit_show_what_differs() {
        let digits = owned(&["a handwritten 0", "a handwritten 1", "a handwritten 10"]);
        assert_eq!(distinct_parts(&digits, 8), ["…0", "…1", "…10"]);
        // Labels that fit, or share no whole word, stay as they are.
        assert_eq!(distinct_parts(&digits, 20), digits);
        let cats = owned(&["a cat", "a car"]);
        assert_eq!(distinct_parts(&cats, 3), ["…cat", "…car"]);
        let mixed = owned(&["a red car", "a photo of a cat on a sofa"]);
        assert_eq!(distinct_parts(&mixed, 14), mixed);
        let other = owned(&["cat", "car"]);
        assert_eq!(distinct_parts(&other, 2), other);
    }
}
