//! The Training view's run overview: what the logs say of the run under the cursor — its state, id,
//! name and tags, each log file it was written to (every segment of a resumed run), its config and
//! summary — and the config keys whose values differ between the runs shown.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use serde_json::Value;

use crate::metrics::FactKind;
use crate::metrics::diff::short_value;
use crate::metrics::store::Facts;
use crate::tui::app::State;

/// The facts about a run shown first, in this order.
const INFO: [&str; 12] = [
    "state",
    "name",
    "id",
    "experiment",
    "project",
    "group",
    "job_type",
    "tags",
    "user",
    "source",
    "start_time",
    "end_time",
];

pub fn draw(frame: &mut Frame, state: &State, area: Rect, title: &str) {
    let t = &state.training;
    let runs = t.runs();
    let Some(run) = runs.get(t.filter.cursor.min(runs.len().saturating_sub(1))) else {
        let text = "no run read yet";
        frame.render_widget(
            Paragraph::new(text)
                .dim()
                .block(Block::bordered().title(title.to_string())),
            area,
        );
        return;
    };
    let facts = t.media.run_facts(run);
    let shown: Vec<String> = runs
        .iter()
        .filter(|r| !t.filter.hidden.contains(*r) || t.filter.pinned.contains(*r))
        .cloned()
        .collect();
    let differing: Vec<String> = t
        .media
        .differing(&shown)
        .into_iter()
        .map(|d| d.key)
        .collect();
    let mut left = info_lines(run, &facts);
    left.extend(segment_lines(state, run));
    left.extend(differing_lines(&shown, &differing));
    let mut right = section("config", &facts, FactKind::Config, &differing);
    right.extend(section("summary", &facts, FactKind::Summary, &[]));
    let block = Block::bordered()
        .title(format!("{title}· run overview (i) "))
        .title_bottom(" PgDn / PgUp scroll ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let scroll = (t.overview_scroll, 0);
    let text = |lines| {
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll(scroll)
    };
    if inner.width >= 100 {
        let [l, r] = Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)])
            .areas(inner);
        frame.render_widget(text(left), l);
        frame.render_widget(text(right), r);
    } else {
        left.extend(right);
        frame.render_widget(text(left), inner);
    }
}

fn info_lines(run: &str, facts: &Facts) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(vec![
        "run ".dim(),
        Span::from(run.to_string()).bold(),
    ])];
    for key in INFO {
        let Some(value) = facts.get(&(FactKind::Info, key.to_string())) else {
            continue;
        };
        let text = match key {
            "start_time" | "end_time" => value
                .as_f64()
                .map_or_else(|| short_value(Some(value), 40), utc),
            "tags" => list(value),
            _ => short_value(Some(value), 40),
        };
        let styled = match text.as_str() {
            "running" => Span::from(text).fg(Color::Yellow),
            "finished" => Span::from(text).fg(Color::Green),
            "failed" | "crashed" | "killed" => Span::from(text).fg(Color::LightRed),
            _ => Span::from(text),
        };
        lines.push(Line::from(vec![format!("{key:<11}").dim(), styled]));
    }
    if lines.len() == 1 {
        lines.push(Line::from(
            "the logs say nothing of this run but its curves".dim(),
        ));
    }
    lines
}

/// Each log file of the run with when it started: a resumed run's segments, all of them.
fn segment_lines(state: &State, run: &str) -> Vec<Line<'static>> {
    let segments = state.training.media.segments(run);
    if segments.len() < 2 {
        return Vec::new();
    }
    let mut lines = vec![
        Line::from(""),
        Line::from(format!("{} segments (resumed)", segments.len()).bold()),
    ];
    for (log, facts) in segments {
        let start = facts
            .get(&(FactKind::Info, "start_time".into()))
            .and_then(Value::as_f64)
            .map(utc);
        let folder = log
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        let name = folder.unwrap_or_else(|| log.display().to_string());
        lines.push(Line::from(format!(
            "  {name}  {}",
            start.unwrap_or_default()
        )));
    }
    lines
}

fn differing_lines(shown: &[String], differing: &[String]) -> Vec<Line<'static>> {
    if shown.len() < 2 {
        return Vec::new();
    }
    let head = format!("differs between the {} runs shown", shown.len());
    let mut lines = vec![Line::from(""), Line::from(head.bold())];
    if differing.is_empty() {
        lines.push(Line::from("  nothing: the same config".dim()));
    } else {
        for key in differing {
            lines.push(Line::from(Span::from(format!("  {key}")).fg(Color::Yellow)));
        }
    }
    lines
}

/// The facts of one kind as `key  value` lines; keys in `marked` in colour.
fn section(name: &str, facts: &Facts, kind: FactKind, marked: &[String]) -> Vec<Line<'static>> {
    let entries: Vec<_> = facts
        .iter()
        .filter(|((k, key), _)| *k == kind && !key.starts_with('_'))
        .collect();
    if entries.is_empty() {
        return Vec::new();
    }
    let width = entries
        .iter()
        .map(|((_, k), _)| k.chars().count())
        .max()
        .unwrap_or(0)
        .min(28);
    let mut lines = vec![Line::from(name.to_string().bold())];
    for ((_, key), value) in entries {
        let key_span = Span::from(format!("  {key:<width$}  "));
        let key_span = if marked.contains(key) {
            key_span.fg(Color::Yellow)
        } else {
            key_span.dim()
        };
        lines.push(Line::from(vec![
            key_span,
            Span::from(short_value(Some(value), 48)),
        ]));
    }
    lines.push(Line::from(""));
    lines
}

fn list(value: &Value) -> String {
    match value.as_array() {
        Some(items) => items
            .iter()
            .map(|v| short_value(Some(v), 24))
            .collect::<Vec<_>>()
            .join(", "),
        None => short_value(Some(value), 40),
    }
}

/// Unix seconds as a UTC date and time to the minute.
fn utc(seconds: f64) -> String {
    let secs = seconds.floor() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_700_000_000.0), "2023-11-14 22:13 UTC");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00 UTC");
    }
}
