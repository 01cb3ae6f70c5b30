//! Drawing: a pure function of [`State`]. The layout is computed here once, so the runner can ask
//! which images the next frame needs ([`image_slots`]) without drawing.

mod charts;
pub mod page;
mod quality;
mod run_list;
mod run_overview;
mod samplers;
mod schedules;
mod training_images;
pub mod xy_grid;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Tabs, Wrap};

use strum::VariantArray;

use super::app::{ImageSlot, RunState, State, View};
use super::keys::key_rows;

/// The smallest terminal the dashboard lays out for.
pub const MIN_SIZE: (u16, u16) = (80, 24);

/// The screen split into its parts.
struct Areas {
    tabs: Rect,
    main: Rect,
    log: Rect,
    status: Rect,
}

fn areas(area: Rect) -> Areas {
    let log_height = if area.height >= 40 { 9 } else { 5 };
    let [tabs, main, log, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(8),
        Constraint::Length(log_height),
        Constraint::Length(1),
    ])
    .areas(area);
    Areas {
        tabs,
        main,
        log,
        status,
    }
}

fn too_small(area: Rect) -> bool {
    area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1
}

/// The images the frame for `area` shows, and where.
pub fn image_slots(state: &State, area: Rect) -> Vec<(ImageSlot, Rect)> {
    if too_small(area) {
        return Vec::new();
    }
    match state.view {
        View::Samplers => samplers::image_slots(state, areas(area).main),
        View::Xy => xy_grid::layout(state, areas(area).main).map_or(Vec::new(), |l| l.tiles),
        View::Training => charts::training_image_slots(state, areas(area).main),
        _ => Vec::new(),
    }
}

/// The Samplers view's layout for a screen of `area`: what a page of rows or seeds is.
pub fn samplers_page(state: &State, area: Rect) -> Option<page::Page> {
    if too_small(area) {
        return None;
    }
    page::page(state, areas(area).main)
}

/// The X/Y view's layout for a screen of `area`.
pub fn xy_layout(state: &State, area: Rect) -> Option<xy_grid::XyLayout> {
    if too_small(area) {
        return None;
    }
    xy_grid::layout(state, areas(area).main)
}

/// A label cut to `width` characters, ending in "…" when cut.
fn cut(label: &str, width: u16) -> String {
    let width = width as usize;
    match label.chars().count() > width {
        true => {
            let mut t: String = label.chars().take(width.saturating_sub(1)).collect();
            t.push('…');
            t
        }
        false => label.to_string(),
    }
}

/// Whether something is drawn over the images (the help).
pub fn overlay_shown(state: &State) -> bool {
    state.help
}

/// Draws the whole dashboard.
pub fn draw(frame: &mut Frame, state: &State) {
    let area = frame.area();
    if too_small(area) {
        let text = format!(
            "terminal too small: {}×{}, difflab needs {}×{}",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let a = areas(area);
    draw_tabs(frame, state, a.tabs);
    match state.view {
        View::Samplers => samplers::draw(frame, state, a.main),
        View::Training => charts::draw_training(frame, state, a.main),
        View::Quality => quality::draw(frame, state, a.main),
        View::Schedules => schedules::draw(frame, state, a.main),
        View::Xy => xy_grid::draw(frame, state, a.main),
    }
    draw_log(frame, state, a.log);
    draw_status(frame, state, a.status);
    if state.help {
        draw_help(frame, area);
    }
}

fn draw_tabs(frame: &mut Frame, state: &State, area: Rect) {
    let titles = View::VARIANTS
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{} {}", i + 1, v.title()));
    let selected = state.view.index();
    let tabs = Tabs::new(titles)
        .select(selected)
        .highlight_style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED))
        .divider("│");
    let name = state
        .experiment
        .as_ref()
        .map_or(String::new(), |e| format!("difflab · {} ", e.name));
    let [left, right] =
        Layout::horizontal([Constraint::Min(30), Constraint::Length(name.len() as u16)])
            .areas(area);
    frame.render_widget(tabs, left);
    frame.render_widget(Paragraph::new(name).dim(), right);
}

fn draw_log(frame: &mut Frame, state: &State, area: Rect) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(" log ")
        .border_style(Style::new().dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width.max(1) as usize;
    let mut lines: Vec<Line> = Vec::new();
    if let Some(e) = &state.file_error {
        let red = Style::new().fg(Color::Red);
        let text = format!("file error: {e}");
        for (i, row) in wrap(&text, width).into_iter().enumerate() {
            lines.push(Line::styled(row, if i == 0 { red.bold() } else { red }));
        }
        lines.push(Line::from(
            "showing the last experiment that loaded; fix the file and save to reload".dim(),
        ));
    }
    // The newest messages, wrapped, as many rows as fit: long provider and file errors stay readable.
    let room = (inner.height as usize).saturating_sub(lines.len());
    let mut rows: Vec<Line> = Vec::new();
    for l in state.log.iter().rev() {
        if rows.len() >= room {
            break;
        }
        let style = if l.starts_with("error") {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        for row in wrap(l, width).into_iter().rev() {
            rows.push(Line::styled(row, style));
        }
    }
    rows.truncate(room);
    lines.extend(rows.into_iter().rev());
    frame.render_widget(Paragraph::new(lines), inner);
}

/// `text` cut into rows of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(width.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

fn draw_status(frame: &mut Frame, state: &State, area: Rect) {
    let mut spans = vec![Span::styled(
        format!(" {} ", state.file_name()),
        Style::new().reversed(),
    )];
    let done = state
        .lab
        .cells
        .iter()
        .filter(|c| c.result.is_some())
        .count();
    let run = match &state.run {
        RunState::Idle => Span::raw(" idle").dim(),
        RunState::Running => match &state.lab.loading {
            Some(what) => Span::styled(format!(" {what}"), Color::Yellow),
            None => Span::styled(
                format!(" running {done}/{}", state.lab.cells.len()),
                Color::Yellow,
            ),
        },
        RunState::Cancelling => Span::styled(" cancelling", Color::Yellow),
        RunState::Finished { error: Some(_), .. } => Span::styled(" failed", Color::Red),
        RunState::Finished {
            cancelled: true, ..
        } => Span::styled(
            format!(" cancelled {done}/{}", state.lab.cells.len()),
            Color::Yellow,
        ),
        RunState::Finished { wall_s, .. } => Span::styled(
            format!(" done {done}/{} in {wall_s:.1} s", state.lab.cells.len()),
            Color::Green,
        ),
    };
    spans.push(run);
    if state.file_error.is_some() {
        spans.push(Span::styled(
            " · file error",
            Style::new().fg(Color::Red).bold(),
        ));
    }
    if let Some(e) = &state.experiment {
        let model = match &e.model.source {
            crate::experiment::ModelSource::Analytic => "analytic model".to_string(),
            crate::experiment::ModelSource::Onnx(p)
            | crate::experiment::ModelSource::Pipeline(p) => {
                p.file_name().map_or(p.display().to_string(), |f| {
                    f.to_string_lossy().into_owned()
                })
            }
        };
        spans.push(Span::raw(format!(" · {model}")));
    }
    if !state.lab.provider.is_empty() {
        spans.push(Span::raw(format!(" on {}", state.lab.provider)));
        if !state.lab.providers_summary.is_empty() {
            let text = format!(" ({}; see the log)", state.lab.providers_summary);
            spans.push(Span::raw(text).dim());
        }
    }
    let help = " ? help ";
    let [left, right] =
        Layout::horizontal([Constraint::Min(10), Constraint::Length(help.len() as u16)])
            .areas(area);
    frame.render_widget(Paragraph::new(Line::from(spans)), left);
    frame.render_widget(Paragraph::new(help).reversed(), right);
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = 68.min(area.width);
    let rows = key_rows();
    let height = (rows.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = rows
        .into_iter()
        .map(|r| {
            Line::from(vec![
                Span::styled(format!("{:>16}  ", r.keys), Style::new().bold()),
                Span::raw(r.what),
            ])
        })
        .collect();
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys ")),
        rect,
    );
}

#[cfg(test)]
mod tests;
