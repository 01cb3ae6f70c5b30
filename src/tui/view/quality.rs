//! The Quality view: a metric against what the experiment sweeps (the guidance scale when it varies,
//! else NFE), a line per sampler, `m` for the next metric; the results table below, with the columns
//! results.csv has.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Cell, Chart, Paragraph, Row, Table, Wrap};

use super::charts::{axis, marked_lines, short};
use crate::lab::CellResult;
use crate::lab::scores::{self, METRICS, TableColumn};
use crate::tui::app::State;

pub fn draw(frame: &mut Frame, state: &State, area: Rect) {
    let rows = state.lab.cells.len() as u16 + 3;
    let [top, bottom] = Layout::vertical([
        Constraint::Min(6),
        Constraint::Length(rows.min(area.height / 2)),
    ])
    .areas(area);
    draw_chart(frame, state, top);
    draw_table(frame, state, bottom);
}

/// The finished cells' results.
fn results(state: &State) -> Vec<&CellResult> {
    (state.lab.cells.iter())
        .filter_map(|c| c.result.as_ref())
        .filter(|r| !r.failed())
        .collect()
}

/// The charted metrics some cell has, in registry order.
pub fn metrics(state: &State) -> Vec<scores::Chart> {
    let results = results(state);
    scores::charts()
        .filter(|c| results.iter().any(|r| r.scores.has(c.key)))
        .collect()
}

/// What the chart's x axis is.
#[derive(Clone, Copy, PartialEq)]
enum Swept {
    Guidance,
    Nfe,
}

/// The lines of the chart: a metric's points (x, y) per sampler, named for the legend.
fn series(
    results: &[&CellResult],
    chart: &scores::Chart,
    swept: Swept,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in results {
        let Some(y) = r.score(chart.key) else {
            continue;
        };
        let y = match chart.log_y {
            true if y > 0.0 => y.log10(),
            true => continue,
            false => y,
        };
        let (name, x) = match swept {
            Swept::Guidance => (format!("{} {}", r.label, r.steps), r.guidance),
            Swept::Nfe => (r.label.clone(), (r.nfe.max(1) as f64).log10()),
        };
        match out.iter_mut().find(|s| s.0 == name) {
            Some(s) => s.1.push((x, y)),
            None => out.push((name, vec![(x, y)])),
        }
    }
    for s in &mut out {
        s.1.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn draw_chart(frame: &mut Frame, state: &State, area: Rect) {
    let metrics = metrics(state);
    let Some(chart) = metrics.get(state.quality_metric % metrics.len().max(1)) else {
        return draw_unscored(frame, state, area);
    };
    let results = results(state);
    let scored: Vec<&CellResult> = (results.iter().copied())
        .filter(|r| r.scores.has(chart.key))
        .collect();
    let swept = match scored.iter().any(|r| r.guidance != scored[0].guidance) {
        true => Swept::Guidance,
        false => Swept::Nfe,
    };
    let series = series(&scored, chart, swept);
    let next = match metrics.len() {
        1 => String::new(),
        n => format!(" · m: next of {n} metrics"),
    };
    let title = match swept {
        Swept::Guidance => format!(" {} against guidance{next} ", chart.name),
        Swept::Nfe => format!(" {} against NFE (log x){next} ", chart.name),
    };
    let datasets = marked_lines(&series);
    let xs = || series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let (xb, xl) = match swept {
        Swept::Guidance => axis(xs(), false),
        Swept::Nfe => {
            let (b, _) = axis(xs(), true);
            let b = [b[0].floor(), b[1].ceil()];
            let labels = (b[0] as i32..=b[1] as i32)
                .map(|e| Line::from(format!("{}", 10f64.powi(e))))
                .collect();
            (b, labels)
        }
    };
    let (yb, yl) = axis(
        series.iter().flat_map(|s| s.1.iter().map(|p| p.1)),
        chart.log_y,
    );
    let widget = Chart::new(datasets)
        .block(Block::bordered().title(title))
        // No axis titles: the block's title names both, and a title would cover the point at the
        // axis' end.
        .x_axis(Axis::default().bounds(xb).labels(xl))
        .y_axis(Axis::default().bounds(yb).labels(yl))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 1)));
    frame.render_widget(widget, area);
}

fn draw_unscored(frame: &mut Frame, state: &State, area: Rect) {
    let text = if (state.experiment.as_ref()).is_some_and(|e| e.quality.is_some()) {
        "no scored cells yet"
    } else {
        "no quality scores: add a [quality] section (features and reference, or reference_sampler) to \
         the experiment file"
    };
    frame.render_widget(
        Paragraph::new(text)
            .dim()
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" quality ")),
        area,
    );
}

fn draw_table(frame: &mut Frame, state: &State, area: Rect) {
    let columns = score_columns(state);
    let mut header = vec!["cell", "NFE", "model ms/st", "step ms", "ms/sample"];
    header.extend(columns.iter().map(|c| c.header));
    header.push("provider");
    let header = Row::new(header).style(Style::new().bold());
    let rows = state.lab.cells.iter().enumerate().map(|(i, c)| {
        let row = match &c.result {
            Some(r) => {
                let mut cells = vec![
                    Cell::from(c.cell.name.clone()),
                    Cell::from(r.nfe.to_string()),
                    Cell::from(short(r.model_ms_per_step)),
                    Cell::from(short(r.sampler_ms_per_step)),
                    Cell::from(short(r.ms_per_sample)),
                ];
                cells.extend(columns.iter().map(|t| Cell::from(score_text(t, r))));
                cells.push(Cell::from(r.provider.clone()));
                Row::new(cells)
            }
            // Progress in the last column: the figure columns hold figures only.
            None => {
                let mut cells = vec![
                    Cell::from(c.cell.name.clone()),
                    Cell::from(c.steps.to_string()),
                ];
                cells.extend((0..3 + columns.len()).map(|_| Cell::from("")));
                cells.push(Cell::from(format!("{}/{}", c.step, c.steps)).dim());
                Row::new(cells)
            }
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

/// The score columns to show: those always shown, those the experiment asks for, those a cell has.
/// Narrow terminals keep the names.
fn score_columns(state: &State) -> Vec<TableColumn> {
    let spec = state.experiment.as_ref().and_then(|e| e.quality.as_ref());
    let has = |key: &str| {
        (state.lab.cells.iter()).any(|c| (c.result.as_ref()).is_some_and(|r| r.scores.has(key)))
    };
    METRICS
        .iter()
        .filter_map(|m| {
            let t = m.table()?;
            (t.always || spec.is_some_and(|q| m.asked(q)) || has(t.key)).then_some(t)
        })
        .collect()
}

/// A score in its column's few characters ("–" when the cell has none).
fn score_text(column: &TableColumn, result: &CellResult) -> String {
    match result.score(column.key) {
        None => "–".into(),
        Some(v) if column.percent => format!("{:.0}%", v * 100.0),
        Some(v) => short(v),
    }
}
