//! The Training view (loss curves) and the Quality view (FID against NFE, and the results table).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table, Wrap};

use super::run_list;
use crate::lab::CellResult;
use crate::lab::scores::reference_error::RMSE;
use crate::lab::scores::{METRICS, TableColumn, charts};
use crate::tui::app::State;
use crate::tui::training::{Curve, Panel};

const PALETTE: [Color; 8] = [
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
fn axis(values: impl Iterator<Item = f64>, log: bool) -> ([f64; 2], Vec<Line<'static>>) {
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

/// A number in at most about 7 characters.
fn short(v: f64) -> String {
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
    if t.series.is_empty() {
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
    let runs = t.runs();
    let colour =
        |run: &str| PALETTE[runs.iter().position(|r| r == run).unwrap_or(0) % PALETTE.len()];
    let [list, area] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    run_list::draw(frame, t, &runs, colour, list);
    let panels = t.panels();
    if panels.is_empty() {
        frame.render_widget(
            Paragraph::new(
                "no curve matches the filter and the runs shown (/ to change it, ␣ to show a run)",
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

pub fn draw_quality(frame: &mut Frame, state: &State, area: Rect) {
    let rows = state.lab.cells.len() as u16 + 3;
    let [top, bottom] = Layout::vertical([
        Constraint::Min(6),
        Constraint::Length(rows.min(area.height / 2)),
    ])
    .areas(area);
    draw_fid_chart(frame, state, top);
    draw_table(frame, state, bottom);
}

fn draw_fid_chart(frame: &mut Frame, state: &State, area: Rect) {
    // FID when cells have it, else the error against the reference solve (log y): one series per
    // sampler label through (log10 NFE, score).
    let results = || state.lab.cells.iter().filter_map(|c| c.result.as_ref());
    let chart = charts().find(|c| c.against_nfe && results().any(|r| r.scores.has(c.key)));
    let by_metric = chart.is_some();
    let score = |r: &CellResult| match &chart {
        Some(c) => r.score(c.key),
        None => r.score(RMSE).filter(|e| *e > 0.0).map(f64::log10),
    };
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in results() {
        let Some(y) = score(r) else { continue };
        let point = ((r.nfe.max(1) as f64).log10(), y);
        match series.iter_mut().find(|s| s.0 == r.label) {
            Some(s) => s.1.push(point),
            None => series.push((r.label.clone(), vec![point])),
        }
    }
    let title = match (&chart, series.is_empty()) {
        (Some(c), _) => format!(" {} against NFE (log x) ", c.name),
        (None, true) => " FID against NFE (log x) ".to_string(),
        (None, false) => " RMSE to the reference solve against NFE (log-log) ".to_string(),
    };
    if series.is_empty() {
        let text = if state
            .experiment
            .as_ref()
            .is_some_and(|e| e.quality.is_some())
        {
            "no scored cells yet"
        } else {
            "no quality scores: add a [quality] section (features and reference, or reference_sampler) \
             to the experiment file"
        };
        frame.render_widget(
            Paragraph::new(text)
                .dim()
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(title)),
            area,
        );
        return;
    }
    for s in &mut series {
        s.1.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    // Each sampler is a line through its step counts, and a dot on each: a sampler with one step
    // count is then a visible mark, not a single Braille dot.
    let datasets = series
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
        .collect();
    let (mut xb, _) = axis(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)), true);
    xb = [xb[0].floor(), xb[1].ceil()];
    let xl: Vec<Line> = (xb[0] as i32..=xb[1] as i32)
        .map(|e| Line::from(format!("{}", 10f64.powi(e))))
        .collect();
    let (yb, yl) = axis(
        series.iter().flat_map(|s| s.1.iter().map(|p| p.1)),
        !by_metric,
    );
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(title))
        // No axis titles: the block's title names both, and a title would cover the point at the
        // axis' end (the x title sits where the largest NFE is drawn).
        .x_axis(Axis::default().bounds(xb).labels(xl))
        .y_axis(Axis::default().bounds(yb).labels(yl))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 1)));
    frame.render_widget(chart, area);
}

fn draw_table(frame: &mut Frame, state: &State, area: Rect) {
    // Scores in at most 7 characters, so a large KID is never cut to wrong digits.
    let opt = |v: Option<f64>| v.map_or("–".to_string(), short);
    // Optional columns only where a cell has them or the experiment asks: narrow terminals keep the
    // names.
    let spec = state.experiment.as_ref().and_then(|e| e.quality.as_ref());
    let columns: Vec<TableColumn> = METRICS
        .iter()
        .filter(|m| {
            m.table().is_some_and(|t| {
                t.always
                    || spec.is_some_and(|q| m.asked(q))
                    || (state.lab.cells.iter())
                        .any(|c| (c.result.as_ref()).is_some_and(|r| r.scores.has(t.key)))
            })
        })
        .filter_map(|m| m.table())
        .collect();
    let mut header = vec!["cell", "NFE", "model ms/st", "step ms", "ms/sample"];
    header.extend(columns.iter().map(|c| c.header));
    header.push("provider");
    let header = Row::new(header).style(Style::new().bold());
    let rows = state.lab.cells.iter().enumerate().map(|(i, c)| {
        let name = Cell::from(c.cell.name.clone());
        let row = match &c.result {
            Some(r) => {
                let mut cells = vec![
                    name,
                    Cell::from(r.nfe.to_string()),
                    Cell::from(format!("{:.3}", r.model_ms_per_step)),
                    Cell::from(format!("{:.3}", r.sampler_ms_per_step)),
                    Cell::from(format!("{:.2}", r.ms_per_sample)),
                ];
                cells.extend(columns.iter().map(|t| Cell::from(opt(r.score(t.key)))));
                cells.push(Cell::from(r.provider.clone()));
                Row::new(cells)
            }
            // Progress in the two timing columns, so "968/1000" is never cut.
            None => Row::new([
                name,
                Cell::from(c.steps.to_string()),
                Cell::from(format!("{}/{}", c.step, c.steps)).dim(),
                Cell::from("running").dim(),
            ]),
        };
        if i == state.selected {
            row.style(Style::new().fg(Color::Cyan))
        } else {
            row
        }
    });
    let mut widths = vec![
        Constraint::Min(10),
        Constraint::Length(4),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(9),
    ];
    widths.extend(columns.iter().map(|c| Constraint::Length(c.width)));
    widths.push(Constraint::Length(8));
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::bordered().title(" results "));
    frame.render_widget(table, area);
}
