//! The Training view's run list, one line above the panels: each run in its colour with its on/off
//! and pin marks, the cursor, and the tag filter being typed or applied.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::tui::training::TrainingState;

pub fn draw(
    frame: &mut Frame,
    t: &TrainingState,
    runs: &[String],
    colour: impl Fn(&str) -> Color,
    area: Rect,
) {
    let f = &t.filter;
    let mut spans: Vec<Span> = vec![filter_status(t), " · runs ".dim()];
    // When the runs do not fit, start a little before the cursor so it stays in view.
    let width: usize = runs.iter().map(|r| r.chars().count() + 5).sum();
    let first = if width + 30 > area.width as usize {
        f.cursor.saturating_sub(1)
    } else {
        0
    };
    if first > 0 {
        spans.push("… ".dim());
    }
    for (i, run) in runs.iter().enumerate().skip(first) {
        let shown = !f.hidden.contains(run) || f.pinned.contains(run);
        let cursor = if i == f.cursor { "›" } else { " " };
        let pin = if f.pinned.contains(run) { "●" } else { "" };
        let check = if shown { "■" } else { "□" };
        let mut style = Style::new().fg(colour(run));
        if i == f.cursor {
            style = style.bold().underlined();
        } else if !shown {
            style = style.dim();
        }
        spans.push(format!("{cursor}{pin}{check} ").into());
        spans.push(Span::styled(run.clone(), style));
        spans.push(" ".into());
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The filter as typed, applied, refused (the reason is in the log) or absent.
fn filter_status(t: &TrainingState) -> Span<'static> {
    let f = &t.filter;
    match (&f.input, &f.error, &f.pattern) {
        (Some(text), _, _) => format!(" /{text}▏").yellow(),
        (None, Some(_), _) => " not a regex".red(),
        (None, None, Some(p)) => format!(" /{}/", p.text).cyan(),
        (None, None, None) => " / filter".dim(),
    }
}
