//! The Samplers view: one column per cell, the same seeds in each; or one cell focused, larger.

use std::num::NonZeroU16;

use ratatui::Frame;
use ratatui::buffer::{Buffer, CellDiffOption};
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui_image::Image;

use super::charts::short;
use super::cut;
use super::page::{FOCUS_INFO, INFO_LINES, Page, ZOOMS, page};
use crate::lab::ImageKind;
use crate::lab::progress::CellView;
use crate::lab::scores::METRICS;
use crate::lab::{Cell, difference};
use crate::sampler::step_table::step_rows;
use crate::tui::app::{Compare, ImageSlot, State};

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

/// Each prompt beside its row of tiles.
fn draw_row_labels(frame: &mut Frame, state: &State, page: &Page, tiles: Rect) {
    let Some(cell) = state.lab.cells.first() else {
        return;
    };
    let gutter = page.gutter;
    if gutter.width == 0 || !page.grid.prompt_rows {
        return;
    }
    let room = gutter.width.saturating_sub(2) as usize;
    let labels = distinct_parts(&cell.cell.conditions, room);
    // Right up to the tiles, which are centred in their area; the cell columns' borders stay whole (the
    // focused cell's panel has none between its labels and tiles).
    let first_tile = page.tiles(tiles).iter().map(|(_, r)| r.x).min();
    let beside = first_tile.map_or(gutter.right(), |x| x.saturating_sub(1));
    let end = match page.columns.len() == 1 && state.focused {
        true => beside,
        false => beside.min(gutter.right()),
    };
    let x = end.saturating_sub(room as u16 + 1).max(gutter.x + 1);
    for (row, y) in page.row_centres(tiles) {
        let Some(label) = labels.get(row) else {
            continue;
        };
        // One blank column each side keeps the label off the text before it and the tiles after it.
        let text = cut(label, room as u16);
        let at = Rect::new(x, y, room as u16, 1);
        frame.render_widget(Paragraph::new(text).right_aligned().dim(), at);
    }
}

/// The image a tile of `cell` shows: its sample, its difference from the baseline's, or (flipped) the
/// baseline's.
fn tile_slot(state: &State, cell: usize, item: usize, size: (u16, u16)) -> ImageSlot {
    let own = ImageSlot {
        cell,
        item,
        size,
        diff: None,
        frame: None,
        noisy: false,
        training: None,
        start: false,
    };
    if state.focused && cell == state.selected && state.scrub.is_some() {
        return ImageSlot {
            frame: state.scrub,
            noisy: state.noisy,
            ..own
        };
    }
    match (state.baseline_cell(), state.compare) {
        (Some(b), Compare::Difference) if b != cell => ImageSlot {
            diff: Some(b),
            ..own
        },
        (Some(b), Compare::Flip) => ImageSlot { cell: b, ..own },
        _ => own,
    }
}

/// Every tile the frame shows: its image slot and where it goes.
pub fn image_slots(state: &State, area: Rect) -> Vec<(ImageSlot, Rect)> {
    let Some(page) = page(state, area) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(column) = page.start {
        for (item, rect) in page.tiles(page.tile_area(column, false)) {
            out.push((start_slot(item, page.tile), rect));
        }
    }
    for &(cell, column) in &page.columns {
        for (item, rect) in page.tiles(page.tile_area(column, state.focused)) {
            out.push((tile_slot(state, cell, item, page.tile), rect));
        }
    }
    out
}

pub fn draw(frame: &mut Frame, state: &State, area: Rect) {
    let Some(page) = page(state, area) else {
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
    };
    let (shown, hints) = header(state, &page);
    let mut line = Line::from(shown).dim();
    line.extend(compare_legend(state));
    // The keys only where they fit whole.
    for hint in hints {
        if line.width() + hint.len() + 3 <= page.header.width as usize {
            line.push_span(Span::from(format!(" · {hint}")).dim());
        }
    }
    frame.render_widget(Paragraph::new(line), page.header);
    if state.focused
        && let Some(cell) = state.lab.cells.get(state.selected)
    {
        draw_focused(frame, state, &page, cell);
        return;
    }
    let n = state.lab.cells.len();
    let titles = titles(state, &page);
    if let Some(rect) = page.start {
        draw_start_column(frame, state, &page, rect);
    }
    for (k, &(i, rect)) in page.columns.iter().enumerate() {
        let cell = &state.lab.cells[i];
        let border = if i == state.selected {
            Style::new().fg(Color::Cyan).bold()
        } else {
            Style::new().dim()
        };
        let mut block = Block::bordered()
            .title(titles[k].clone())
            .border_style(border);
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
        let tiles = page.tile_area(rect, false);
        if k == 0 && page.start.is_none() {
            draw_row_labels(frame, state, &page, tiles);
        }
        draw_tiles(frame, state, &page, i, tiles);
    }
}

/// What the page shows of the experiment ("prompts 1–3 of 10 · seeds 0–1 of 4 · cells 1–4 of 8 · 1×"),
/// and the keys that move it.
fn header(state: &State, page: &Page) -> (String, Vec<&'static str>) {
    let n = state.lab.cells.len();
    let range = |r: &std::ops::Range<usize>, of: usize| match r.len() {
        0 => format!("0 of {of}"),
        1 => format!("{} of {of}", r.start + 1),
        _ => format!("{}–{} of {of}", r.start + 1, r.end,),
    };
    let mut parts = Vec::new();
    let first = &state.lab.cells[0].cell;
    let seed = |i: usize| first.items.get(i).map_or(0, |it| it.seed);
    if page.grid.prompt_rows {
        parts.push(format!("prompts {}", range(&page.rows, page.grid.rows)));
        let (a, b) = (page.cols.start, page.cols.end.saturating_sub(1));
        parts.push(seed_range(seed(a), seed(b), page.grid.cols));
    } else {
        let shown: Vec<usize> = page.tiles_items();
        let (a, b) = (shown.first().copied(), shown.last().copied());
        if let (Some(a), Some(b)) = (a, b) {
            parts.push(seed_range(seed(a), seed(b), page.grid.count));
        }
    }
    if !state.focused {
        let (a, b) = (page.columns.first(), page.columns.last());
        if let (Some(&(a, _)), Some(&(b, _))) = (a, b) {
            parts.push(format!("cells {}", range(&(a..b + 1), n)));
        }
    }
    parts.push(match page.shrunk {
        true => "fit".to_string(),
        false => format!("{}×", ZOOMS[page.zoom]),
    });
    parts.extend(scrubbed_step(state));
    let frames = state.lab.frames;
    if frames > 1 {
        parts.push(match state.playing {
            Some(k) => format!("frame {} of {frames}", k + 1),
            None => format!("{frames} frames"),
        });
    }
    let mut hints = vec!["z/Z zoom"];
    if frames > 1 {
        hints.push(match state.playing {
            Some(_) => "f strip",
            None => "f play",
        });
    }
    if state.focused {
        hints.push(",/. steps");
    }
    if page.rows.len() < page.grid.rows {
        hints.push("PgDn/PgUp rows");
    }
    if page.cols.len() < page.grid.cols {
        hints.push(">/< seeds");
    }
    (format!(" {}", parts.join(" · ")), hints)
}

/// With a baseline: which cell it is and what the tiles show; for differences, the colour scale.
fn compare_legend(state: &State) -> Vec<Span<'static>> {
    let Some(b) = state.baseline_cell() else {
        return Vec::new();
    };
    let name = &state.lab.cells[b].cell.name;
    let shown = match state.compare {
        Compare::Images => format!(" · baseline {name}"),
        Compare::Difference => format!(" · |difference| from {name} 0"),
        Compare::Flip => format!(" · {name} in every column"),
    };
    let mut spans = vec![Span::from(shown).dim()];
    if state.compare == Compare::Difference {
        // Coloured spaces: the scale shows in any font.
        for k in 0..8 {
            let [r, g, b] = difference::colour(difference::FULL_SCALE * k as f32 / 7.0);
            spans.push(Span::from(" ").bg(Color::Rgb(r, g, b)));
        }
        spans.push(Span::from(format!("{}", difference::FULL_SCALE)).dim());
    }
    spans
}

/// The focused cell's step shown, when stepping back through its run: the step, its timestep and σ.
fn scrubbed_step(state: &State) -> Option<String> {
    let k = state.scrub?;
    let cell = state.lab.cells.get(state.selected)?;
    let (trajectory, what) = match state.noisy {
        true => (&cell.noisy_trajectory, "x_t"),
        false => (&cell.trajectory, "x0"),
    };
    let frame = trajectory.frames.get(k)?;
    let mut text = format!("{what} after step {} of {}", frame.step, cell.steps);
    let rows = step_rows(&cell.cell.config, cell.steps).ok()?;
    // x0 came from the model call at the step's start; x_t is where the step ended.
    if let Some(row) = frame.step.checked_sub(1).and_then(|i| rows.get(i)) {
        let (t, sigma) = match state.noisy {
            true => (row.next_timestep, row.next_sigma),
            false => (Some(row.timestep), row.sigma),
        };
        let t = t.map_or("end".to_string(), short);
        text.push_str(&format!(" · t {t} · sigma {}", short(sigma)));
    }
    Some(text)
}

fn seed_range(a: u64, b: u64, of: usize) -> String {
    match a == b {
        true => format!("seed {a} of {of}"),
        false => format!("seeds {a}–{b} of {of}"),
    }
}

/// The column titles: what tells the shown cells apart, as short as keeps them apart (the focused cell's
/// title has the full name).
fn titles(state: &State, page: &Page) -> Vec<String> {
    let cells: Vec<&Cell> = state.lab.cells.iter().map(|c| &c.cell).collect();
    page.columns
        .iter()
        .map(|&(i, rect)| {
            let more_left = i > 0 && Some(&(i, rect)) == page.columns.first();
            let lead = if more_left { "‹" } else { " " };
            let room = rect.width.saturating_sub(4) as usize;
            // The comparison with the baseline where the whole name leaves room; the info lines have it too.
            let against = against_baseline(state, i);
            let whole = short_name(&cells, i, usize::MAX);
            match whole.chars().count() + against.chars().count() <= room {
                true => format!("{lead}{whole}{against} "),
                false => format!("{lead}{} ", short_name(&cells, i, room)),
            }
        })
        .collect()
}

/// Cell `i` against the baseline, for its title: " · baseline" for the baseline itself, its RMSE and
/// PSNR on the preview samples for the others.
fn against_baseline(state: &State, i: usize) -> String {
    if state.baseline_cell() == Some(i) {
        return " · baseline".into();
    }
    match state.baseline_errors.get(&i) {
        Some(e) => match e.psnr {
            Some(p) => format!(" · rmse {} {p:.0}dB", short(e.rmse)),
            None => " · =".into(),
        },
        None => String::new(),
    }
}

/// Cell `i`'s name as a column title in `room` characters: label and steps, and the guidance when it
/// differs between the cells; the label cut no shorter than what tells it from the other labels.
fn short_name(cells: &[&Cell], i: usize, room: usize) -> String {
    let cell = cells[i];
    let mut tail = cell.steps.to_string();
    let guidance_varies = cells.iter().any(|c| c.guidance != cell.guidance);
    if !cell.conditions.is_empty() && guidance_varies {
        tail.push_str(&format!(" g{}", cell.guidance));
    }
    let labels: Vec<&str> = cells.iter().map(|c| c.label.as_str()).collect();
    let room = room.saturating_sub(tail.chars().count() + 1);
    format!("{} {tail}", abbreviate(&cell.label, &labels, room))
}

/// `label` in `room` characters, ending in "…" when cut, but never shorter than the prefix that no other
/// of `labels` shares.
fn abbreviate(label: &str, labels: &[&str], room: usize) -> String {
    let chars: Vec<char> = label.chars().collect();
    if chars.len() <= room {
        return label.to_string();
    }
    let unique = (1..=chars.len())
        .find(|&k| {
            let prefix: String = chars[..k].iter().collect();
            labels
                .iter()
                .all(|&l| l == label || !l.starts_with(&prefix))
        })
        .unwrap_or(chars.len());
    let keep = room.saturating_sub(1).max(unique).min(chars.len());
    if keep >= chars.len() {
        return label.to_string();
    }
    let mut cut: String = chars[..keep].iter().collect();
    cut.push('…');
    cut
}

/// The tile of preview sample `item`'s start image.
fn start_slot(item: usize, size: (u16, u16)) -> ImageSlot {
    ImageSlot {
        cell: 0,
        item,
        size,
        diff: None,
        frame: None,
        noisy: false,
        training: None,
        start: true,
    }
}

/// The column of start images left of the cells: what each row's samples start from (tinted where a mask
/// repaints), with the rows' labels beside it.
fn draw_start_column(frame: &mut Frame, state: &State, page: &Page, rect: Rect) {
    let kind = state.lab.starts.as_ref().map(|s| s.kind);
    let what = match kind {
        Some(ImageKind::StartMasked) => [
            Line::from("each sample's image;"),
            Line::from("red: repainted").dim(),
        ],
        Some(ImageKind::Control) => [
            Line::from("what the ControlNet"),
            Line::from("follows").dim(),
        ],
        _ => [Line::from("each sample's"), Line::from("start image").dim()],
    };
    let title = format!(" {} ", kind.unwrap_or(ImageKind::Start).title());
    let block = Block::bordered()
        .title(title)
        .border_style(Style::new().dim());
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let what = what.to_vec();
    let info = Rect {
        height: INFO_LINES.min(inner.height),
        ..inner
    };
    frame.render_widget(Paragraph::new(what), info);
    let tiles = page.tile_area(rect, false);
    draw_row_labels(frame, state, page, tiles);
    for (item, at) in page.tiles(tiles) {
        draw_tile(frame, state, start_slot(item, page.tile), at);
    }
}

fn draw_tiles(frame: &mut Frame, state: &State, page: &Page, cell: usize, area: Rect) {
    let empty = state
        .lab
        .cells
        .get(cell)
        .is_none_or(|c| c.images.is_empty());
    if empty {
        frame.render_widget(Paragraph::new("·".dim()).centered(), area);
        return;
    }
    for (item, rect) in page.tiles(area) {
        draw_tile(frame, state, tile_slot(state, cell, item, page.tile), rect);
    }
}

fn draw_focused(frame: &mut Frame, state: &State, page: &Page, cell: &CellView) {
    let Some(&(_, area)) = page.columns.first() else {
        return;
    };
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
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let info = Rect {
        width: FOCUS_INFO.min(inner.width),
        ..inner
    };
    // Long prompt lists wrap rather than run under the row labels.
    frame.render_widget(
        Paragraph::new(info_lines(state, cell, true, info.width)).wrap(Wrap { trim: false }),
        info,
    );
    let tiles = page.tile_area(area, true);
    draw_row_labels(frame, state, page, tiles);
    draw_tiles(frame, state, page, state.selected, tiles);
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
            let index = (state.lab.cells.iter()).position(|c| c.cell.key == cell.cell.key);
            let against = index
                .map(|i| against_baseline(state, i))
                .unwrap_or_default();
            if let Some(against) = against.strip_prefix(" · ") {
                parts.push(against.to_string());
            }
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

/// One encoded tile in `rect` (nothing until it is encoded).
pub fn draw_tile(frame: &mut Frame, state: &State, slot: ImageSlot, rect: Rect) {
    let Some(enc) = state.images.get(&slot) else {
        return;
    };
    if enc.size.0 > rect.width || enc.size.1 > rect.height {
        return;
    }
    let at = Rect {
        x: rect.x + (rect.width - enc.size.0) / 2,
        y: rect.y,
        width: enc.size.0,
        height: enc.size.1,
    };
    frame.render_widget(Image::new(&enc.protocol), at);
    pin_sequence_widths(frame.buffer_mut(), at);
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
    use super::{abbreviate, distinct_parts};

    #[test]
    fn a_cut_label_keeps_what_tells_it_apart() {
        let labels = ["dpm++2m-karras", "dpm++2m-sde", "ddim"];
        assert_eq!(abbreviate("ddim", &labels, 10), "ddim");
        assert_eq!(abbreviate("dpm++2m-karras", &labels, 12), "dpm++2m-kar…");
        // Never shorter than the unique prefix, even when the room is smaller.
        assert_eq!(abbreviate("dpm++2m-karras", &labels, 3), "dpm++2m-k…");
        assert_eq!(abbreviate("ddim", &labels, 1), "dd…");
    }

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
