//! The Schedules view: the noise level σ each cell's sampler steps from, against the step, log-y, a line
//! per distinct schedule — what `difflab schedule` prints, for the experiment's own samplers.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Stylize;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Chart, Paragraph};

use super::charts::{axis, marked_lines};
use crate::lab::Cell;
use crate::sampler::step_table::step_rows;
use crate::tui::app::State;

/// Each distinct (sampler, steps) of the cells, named as its first cell's label and steps, with its
/// points (step, log10 σ); a σ of zero (the end) has no place on a log axis.
pub fn schedules(cells: &[&Cell]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for cell in cells {
        if seen.contains(&(cell.label.as_str(), cell.steps)) {
            continue;
        }
        seen.push((cell.label.as_str(), cell.steps));
        let Ok(rows) = step_rows(&cell.config, cell.steps) else {
            continue;
        };
        let points = rows
            .iter()
            .filter(|r| r.sigma > 0.0 && r.sigma.is_finite())
            .map(|r| (r.step as f64, r.sigma.log10()))
            .collect();
        out.push((format!("{} {}", cell.label, cell.steps), points));
    }
    out
}

pub fn draw(frame: &mut Frame, state: &State, area: Rect) {
    let cells: Vec<&Cell> = state.lab.cells.iter().map(|c| &c.cell).collect();
    let series = schedules(&cells);
    let title = " σ each step starts from (log y) against the step · difflab schedule prints it ";
    if series.is_empty() {
        frame.render_widget(
            Paragraph::new("no cells planned yet")
                .dim()
                .block(Block::bordered().title(title)),
            area,
        );
        return;
    }
    let datasets = marked_lines(&series);
    let (xb, _) = axis(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)), false);
    // Steps are whole.
    let xl: Vec<Line> = [xb[0], (xb[0] + xb[1]) / 2.0, xb[1]]
        .iter()
        .map(|v| Line::from(format!("{}", v.round())))
        .collect();
    let (yb, yl) = axis(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)), true);
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(title))
        .x_axis(Axis::default().bounds(xb).labels(xl))
        .y_axis(Axis::default().bounds(yb).labels(yl))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 1)));
    frame.render_widget(chart, area);
}
