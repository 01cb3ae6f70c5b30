//! The Training view: loss curves, a panel per tag; and the chart helpers the Quality view shares.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph, Wrap};

use super::{run_list, run_overview, training_images};
use crate::tui::app::State;
use crate::tui::training::{Curve, Pane, Panel};

pub const PALETTE: [Color; 8] = [
    Color::Cyan,
    Color::Yellow,
    Color::Magenta,
    Color::Green,
    Color::LightRed,
    Color::LightBlue,
    Color::White,
    Color::LightGreen,
];

/// Axis bounds with a little room, and three labels; `log` labels show 10^v.
pub fn axis(values: impl Iterator<Item = f64>, log: bool) -> ([f64; 2], Vec<Line<'static>>) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let label = |v: f64| {
        let v = if log { 10f64.powf(v) } else { v };
        Line::from(short(v))
    };
    ([lo, hi], vec![label(lo), label((lo + hi) / 2.0), label(hi)])
}

/// Each named series as a line through its points with a dot on each, in the palette's colours: a
/// series of one point is then a visible mark, not a single Braille dot.
pub fn marked_lines(series: &[(String, Vec<(f64, f64)>)]) -> Vec<Dataset<'_>> {
    series
        .iter()
        .enumerate()
        .flat_map(|(i, (label, points))| {
            let style = Style::new().fg(PALETTE[i % PALETTE.len()]);
            [
                Dataset::default()
                    .name(label.clone())
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(style)
                    .data(points),
                Dataset::default()
                    .marker(Marker::Dot)
                    .graph_type(GraphType::Scatter)
                    .style(style.bold())
                    .data(points),
            ]
        })
        .collect()
}

/// A number in at most about 7 characters.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 || v.fract() == 0.0 {
        // Steps and counts are whole: "10", not "10.00".
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// One tag's curves, every run overlaid (the legend names the runs when there are several).
fn chart_curves<'a>(
    curves: &'a [Curve],
    title: String,
    x_title: &'a str,
    log_y: bool,
    colour: &dyn Fn(&str) -> Color,
) -> Chart<'a> {
    let named = curves.len() > 1;
    let datasets = curves
        .iter()
        .map(|(run, _, points)| {
            let dataset = Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(colour(run)))
                .data(points);
            if named {
                dataset.name(run.clone())
            } else {
                dataset
            }
        })
        .collect();
    let (xb, xl) = axis(curves.iter().flat_map(|c| c.2.iter().map(|p| p.0)), false);
    let (yb, yl) = axis(curves.iter().flat_map(|c| c.2.iter().map(|p| p.1)), log_y);
    Chart::new(datasets)
        .block(Block::bordered().title(title))
        .x_axis(Axis::default().title(x_title).bounds(xb).labels(xl))
        .y_axis(Axis::default().bounds(yb).labels(yl))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)))
}

/// Smallest readable panel: room for axis labels and a few rows of Braille.
const PANEL_MIN: (u16, u16) = (36, 8);

/// Columns and rows of panels for `n` tags in `area`, as many as fit at a readable size.
fn panel_grid(n: usize, area: Rect) -> (usize, usize) {
    let max_cols = (area.width / PANEL_MIN.0).max(1) as usize;
    let max_rows = (area.height / PANEL_MIN.1).max(1) as usize;
    let rows = n.div_ceil(max_cols).clamp(1, max_rows);
    // Balance the rows when everything fits (5 tags: 3 + 2, not 4 + 1).
    let cols = n.div_ceil(rows).clamp(1, max_cols);
    (cols, rows)
}

/// Panel title: the tag, and its last raw value where one run logs it (several runs: the legend).
fn panel_title(panel: &Panel) -> String {
    match panel.last.as_slice() {
        [Some((x, y))] => format!(" {} {} @ {} ", panel.tag, short(*y), short(*x)),
        _ => format!(" {} ", panel.tag),
    }
}

/// The image tiles of the Training view in `area` (the view's whole area), when it shows its images.
pub fn training_image_slots(state: &State, area: Rect) -> Vec<(crate::tui::app::ImageSlot, Rect)> {
    if state.training.pane != Pane::Images || state.training.runs().is_empty() {
        return Vec::new();
    }
    let [_, area] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    training_images::image_slots(state, area)
}

/// One panel per tag, like TensorBoard: each has its own y range, so a loss near 0.03 and a FID near
/// 100 both read well. Tags that do not fit are on further pages (`[` and `]`).
pub fn draw_training(frame: &mut Frame, state: &State, area: Rect) {
    let t = &state.training;
    let settings = format!(
        " training · smoothing {:.2} (+/-) · {} y (l) · x: {} (t) ",
        t.smoothing,
        if t.log_y { "log" } else { "linear" },
        if t.x_time { "time" } else { "step" }
    );
    let runs = t.runs();
    if runs.is_empty() {
        let text = if t.configured_runs == 0 {
            "training curves: no runs configured\n\nadd [training] runs = [\"path/to/logs\"] to the experiment file"
                .to_string()
        } else {
            format!(
                "training curves: {} run(s) configured, no training logs read yet",
                t.configured_runs
            )
        };
        frame.render_widget(
            Paragraph::new(text)
                .dim()
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(settings)),
            area,
        );
        return;
    }
    let colour =
        |run: &str| PALETTE[runs.iter().position(|r| r == run).unwrap_or(0) % PALETTE.len()];
    let [list, area] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    run_list::draw(frame, t, &runs, colour, list);
    match t.pane {
        Pane::Images => return training_images::draw(frame, state, area, &settings),
        Pane::Overview => return run_overview::draw(frame, state, area, &settings),
        Pane::Curves => {}
    }
    let panels = t.panels();
    if panels.is_empty() {
        frame.render_widget(
            Paragraph::new(
                "no curve matches the filter and the runs shown (/ to change it, ␣ to show a run; i: images, run overview)",
            )
            .dim()
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(settings)),
            area,
        );
        return;
    }
    let mut outer = Block::bordered().title(settings);
    let inner = outer.inner(area);
    let (cols, rows) = panel_grid(panels.len(), inner);
    let per_page = cols * rows;
    let pages = panels.len().div_ceil(per_page);
    let page = t.tag_page.rem_euclid(pages as i64) as usize;
    if pages > 1 {
        outer = outer.title_bottom(format!(
            " tags {}–{} of {} · page {}/{} ([ ]) ",
            page * per_page + 1,
            ((page + 1) * per_page).min(panels.len()),
            panels.len(),
            page + 1,
            pages
        ));
    }
    frame.render_widget(outer, area);
    let x_title = if t.x_time { "seconds" } else { "step" };
    let row_areas = Layout::vertical(vec![Constraint::Ratio(1, rows as u32); rows]).split(inner);
    let shown = panels.iter().skip(page * per_page).take(per_page);
    for (i, panel) in shown.enumerate() {
        let cells = Layout::horizontal(vec![Constraint::Ratio(1, cols as u32); cols])
            .split(row_areas[i / cols]);
        let chart = chart_curves(&panel.curves, panel_title(panel), x_title, t.log_y, &colour);
        frame.render_widget(chart, cells[i % cols]);
    }
}
