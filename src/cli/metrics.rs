//! `difflab metrics`: summarise, plot and follow training logs.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::metrics::report::format_value;
use crate::metrics::series::{Ema, Summary, XAxis, YScale};
use crate::metrics::{FollowEvent, FollowOptions, Follower, Point, Store, tag_matches};
use crate::plot::{PlotOptions, panels_from_store, plot_to_file};

/// Read training logs (JSON lines, CSV, TensorBoard event files, W&B offline runs, MLflow stores):
/// summary, plots, images, what differs between runs, live follow.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Run directories or log files. Each folder holding logs is a run, named by its path
    /// relative to the one given.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Only tags matching PATTERN: a glob (`*`, `?`) over the whole tag, or a substring.
    /// Repeat for several.
    #[arg(long = "tag", value_name = "PATTERN")]
    pub tags: Vec<String>,
    /// EMA smoothing weight in [0, 1), debiased as TensorBoard does (0.9 is smooth).
    #[arg(long, default_value_t = 0.0, value_name = "WEIGHT", value_parser = parse_weight)]
    pub smooth: f64,
    /// Write a plot: PNG or SVG by extension. With --follow, redrawn as data arrives.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// The plot's x axis.
    #[arg(long, value_enum, default_value_t = XArg::Step)]
    pub x: XArg,
    /// Logarithmic y axis in the plot.
    #[arg(long)]
    pub log_y: bool,
    /// Plot size in pixels, WIDTHxHEIGHT (default: from the number of tags).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Keep running and print new values as they are written, one line each.
    #[arg(long)]
    pub follow: bool,
    /// Print what the runs hold as JSON instead of the table: per run, each tag's point count and
    /// first and last [step, value] (non-finite values as "NaN", "Infinity", "-Infinity"), and each
    /// image tag's images as [step, width, height].
    #[arg(long, conflicts_with = "follow")]
    pub json: bool,
    /// Write each image tag's images to DIR/RUN/TAG.png: a row per step (at most 32, evenly spaced),
    /// the step's images side by side.
    #[arg(long, value_name = "DIR", conflicts_with = "follow")]
    pub images: Option<PathBuf>,
    /// Print the config keys (W&B config, MLflow params, TensorBoard hparams) whose values differ
    /// between the runs, a column per run, instead of the table.
    #[arg(long, conflicts_with_all = ["follow", "json"])]
    pub diff: bool,
    /// Stop following after this many seconds.
    #[arg(long, value_name = "SECONDS", hide = true)]
    pub follow_for: Option<f64>,
}

/// The x axis choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XArg {
    /// Training step.
    Step,
    /// Wall-clock time (seconds since the epoch).
    Wall,
    /// Seconds since the run's first point.
    Relative,
}

impl From<XArg> for XAxis {
    fn from(x: XArg) -> XAxis {
        match x {
            XArg::Step => XAxis::Step,
            XArg::Wall => XAxis::WallTime,
            XArg::Relative => XAxis::Relative,
        }
    }
}

fn parse_weight(s: &str) -> Result<f64, String> {
    let w: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if (0.0..1.0).contains(&w) {
        Ok(w)
    } else {
        Err("the smoothing weight is in [0, 1)".into())
    }
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got {s}"))?;
    let parse = |v: &str| -> Result<u32, String> {
        match v.trim().parse::<u32>() {
            Ok(n) if (100..=16_384).contains(&n) => Ok(n),
            _ => Err(format!("size in pixels from 100 to 16384, got {v}")),
        }
    };
    Ok((parse(w)?, parse(h)?))
}

/// Runs `difflab metrics`.
pub fn run(args: MetricsArgs) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.follow {
        return follow(&args, &mut out);
    }
    let store = crate::metrics::load(&args.paths)?;
    for p in &store.passed_by {
        eprintln!("note: {p}");
    }
    if args.json {
        let json = crate::metrics::report::runs_json(&store, &args.tags);
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
        return Ok(());
    }
    if args.diff {
        return write_diff(&mut out, &store);
    }
    write_summary(&mut out, &store, &args)?;
    if let Some(dir) = &args.images {
        super::metrics_images::write_strips(&store, dir, &args.tags, &mut out)?;
    }
    if let Some(path) = &args.plot {
        plot(&store, &args)?;
        writeln!(out, "plot written to {}", path.display())?;
    }
    Ok(())
}

fn plot_options(args: &MetricsArgs) -> PlotOptions {
    PlotOptions {
        size: args.size,
        smoothing: args.smooth,
        x_axis: args.x.into(),
        y_scale: if args.log_y {
            YScale::Log
        } else {
            YScale::Linear
        },
    }
}

fn plot(store: &Store, args: &MetricsArgs) -> Result<()> {
    let Some(path) = &args.plot else {
        return Ok(());
    };
    let panels = panels_from_store(store, &args.tags);
    if panels.is_empty() {
        bail!("no tag to plot");
    }
    plot_to_file(path, &panels, &plot_options(args))
        .with_context(|| format!("cannot write the plot {}", path.display()))
}

/// Writes the summary table: per run and tag, the point count, the last value and its step,
/// and the minimum and where it is; then what was skipped, per run.
pub fn write_summary(out: &mut dyn Write, store: &Store, args: &MetricsArgs) -> Result<()> {
    let smoothing = args.smooth > 0.0;
    let mut header = vec!["run", "tag", "points", "last", "at step", "min", "at step"];
    if smoothing {
        header.push("smoothed");
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for run in store.runs() {
        for tag in run.tags() {
            if !args.tags.is_empty() && !args.tags.iter().any(|p| tag_matches(p, tag)) {
                continue;
            }
            let Some(series) = run.series(tag) else {
                continue;
            };
            let Some(Summary { len, last, min, .. }) = series.summary() else {
                continue;
            };
            let mut row = vec![
                run.name.clone(),
                tag.to_owned(),
                len.to_string(),
                format_value(last.value),
                last.step.to_string(),
                min.map(|m| format_value(m.value))
                    .unwrap_or_else(|| "-".into()),
                min.map(|m| m.step.to_string())
                    .unwrap_or_else(|| "-".into()),
            ];
            if smoothing {
                let s = series.smoothed(args.smooth);
                row.push(s.last().map(|v| format_value(*v)).unwrap_or_default());
            }
            rows.push(row);
        }
    }
    if rows.is_empty() {
        if args.tags.is_empty() {
            writeln!(out, "no scalars yet")?;
        } else {
            writeln!(out, "no tag matches {}", args.tags.join(", "))?;
        }
    } else {
        write_table(out, &header, &rows, 2)?;
    }
    for run in store.runs() {
        let images: Vec<String> = run
            .image_tags()
            .into_iter()
            .filter(|tag| args.tags.is_empty() || args.tags.iter().any(|p| tag_matches(p, tag)))
            .map(|tag| {
                let list = run.images(tag);
                let steps = list.iter().map(|(_, _, i)| i.step);
                let (lo, hi) = (steps.clone().min().unwrap_or(0), steps.max().unwrap_or(0));
                format!("{tag} ×{} (steps {lo}–{hi})", list.len())
            })
            .collect();
        if !images.is_empty() {
            writeln!(
                out,
                "{}: images: {} (--images DIR writes them)",
                run.name,
                images.join(", ")
            )?;
        }
        let resumed = run.resumed();
        if !resumed.is_empty() {
            writeln!(out, "{}: {resumed}", run.name)?;
        }
        let skipped = run.skipped();
        if !skipped.is_empty() {
            writeln!(out, "{}: skipped {skipped}", run.name)?;
            for source in run.sources.values() {
                if !source.skipped.is_empty() {
                    writeln!(out, "  {}: {}", source.path.display(), source.skipped)?;
                }
            }
        }
    }
    Ok(())
}

/// `--diff`: the config keys whose values differ, a column per run.
fn write_diff(out: &mut dyn Write, store: &Store) -> Result<()> {
    use crate::metrics::diff::{differing_config, short_value};
    let (runs, differing) = differing_config(store);
    if runs.len() < 2 {
        writeln!(out, "one run: nothing to compare")?;
        return Ok(());
    }
    if differing.is_empty() {
        writeln!(out, "the {} runs have the same config", runs.len())?;
        return Ok(());
    }
    let mut header = vec!["key"];
    header.extend(runs.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = differing
        .iter()
        .map(|d| {
            let mut row = vec![d.key.clone()];
            row.extend(d.values.iter().map(|v| short_value(v.as_ref(), 24)));
            row
        })
        .collect();
    write_table(out, &header, &rows, 1)
}

/// A table of text columns left-aligned, then columns from `first_numeric` on right-aligned.
fn write_table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
    first_numeric: usize,
) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Text columns left-aligned, numbers right-aligned.
    let numeric = |i: usize| i >= first_numeric;
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if numeric(i) {
                s.push_str(&format!("{cell:>w$}"));
            } else {
                s.push_str(&format!("{cell:<w$}"));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(&mut header.iter().copied()))?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
    Ok(())
}

fn follow(args: &MetricsArgs, out: &mut dyn Write) -> Result<()> {
    let (follower, rx) = Follower::spawn(&args.paths, FollowOptions::default())?;
    let deadline = args
        .follow_for
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut tail = Tail::new(args);
    loop {
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left.min(Duration::from_millis(250)),
                None => break,
            },
            None => Duration::from_millis(250),
        };
        match rx.recv_timeout(wait) {
            Ok(event) => tail.apply(&event, out)?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        tail.plot_if_due();
    }
    follower.stop();
    Ok(())
}

/// `metrics --follow`: the logs read so far, and what has been printed and plotted of them.
struct Tail<'a> {
    args: &'a MetricsArgs,
    store: Store,
    caught_up: bool,
    emas: HashMap<(String, String), Ema>,
    last_plot: Option<Instant>,
    plot_dirty: bool,
}

impl<'a> Tail<'a> {
    fn new(args: &'a MetricsArgs) -> Self {
        Tail {
            args,
            store: Store::new(),
            caught_up: false,
            emas: HashMap::new(),
            last_plot: None,
            plot_dirty: false,
        }
    }

    /// Takes one event in: once the logs are read up to their ends, the summary, then a line per new
    /// point of a matching tag.
    fn apply(&mut self, event: &FollowEvent, out: &mut dyn Write) -> Result<()> {
        self.store.apply(event);
        match event {
            FollowEvent::CaughtUp => {
                self.caught_up = true;
                write_summary(out, &self.store, self.args)?;
                writeln!(out, "following {} (Ctrl-C to stop)", paths_list(self.args))?;
                self.start_averages();
                self.plot_dirty = true;
            }
            FollowEvent::Points { run, series, .. } if self.caught_up => {
                for (tag, points) in series {
                    if self.matches(tag) {
                        self.print_points(run, tag, points, out)?;
                    }
                }
                out.flush()?;
                self.plot_dirty = true;
            }
            FollowEvent::Images { run, images, .. } if self.caught_up => {
                for (tag, list) in images.iter().filter(|(tag, _)| self.matches(tag)) {
                    let mut steps: Vec<i64> = list.iter().map(|i| i.step).collect();
                    steps.dedup();
                    for step in steps {
                        let n = list.iter().filter(|i| i.step == step).count();
                        writeln!(out, "{run}  {tag}  step={step}  images={n}")?;
                    }
                }
                out.flush()?;
            }
            FollowEvent::Facts { run, facts, .. } if self.caught_up => {
                for (_, key, value) in facts.iter().filter(|(kind, key, _)| {
                    *kind == crate::metrics::FactKind::Info && key == "state"
                }) {
                    writeln!(out, "{run}  {key}={}", value.as_str().unwrap_or("?"))?;
                }
                out.flush()?;
            }
            FollowEvent::Reset { run, path, .. } if self.caught_up => {
                eprintln!(
                    "{run}: {} was truncated or replaced; rereading",
                    path.display()
                );
                self.emas.retain(|(r, _), _| r != run);
                self.plot_dirty = true;
            }
            FollowEvent::Skipped {
                run, path, skipped, ..
            } if self.caught_up => {
                eprintln!("{run}: {}: skipped {skipped}", path.display());
            }
            FollowEvent::Error { path, message } => {
                eprintln!("{}: {message}", path.display());
            }
            FollowEvent::PassedBy(p) => eprintln!("note: {p}"),
            _ => {}
        }
        Ok(())
    }

    fn matches(&self, tag: &str) -> bool {
        self.args.tags.is_empty() || self.args.tags.iter().any(|p| tag_matches(p, tag))
    }

    /// The running averages start from what was there.
    fn start_averages(&mut self) {
        if self.args.smooth <= 0.0 {
            return;
        }
        for run in self.store.runs() {
            for tag in run.tags() {
                let mut ema = Ema::new(self.args.smooth);
                if let Some(s) = run.series(tag) {
                    for p in &s.points {
                        ema.next(p.value);
                    }
                }
                self.emas.insert((run.name.clone(), tag.to_owned()), ema);
            }
        }
    }

    fn print_points(
        &mut self,
        run: &str,
        tag: &str,
        points: &[Point],
        out: &mut dyn Write,
    ) -> Result<()> {
        for p in points {
            let mut line = format!(
                "{run}  {tag}  step={}  value={}",
                p.step,
                format_value(p.value)
            );
            if self.args.smooth > 0.0 {
                let ema = (self.emas)
                    .entry((run.to_owned(), tag.to_owned()))
                    .or_insert_with(|| Ema::new(self.args.smooth));
                line.push_str(&format!("  smoothed={}", format_value(ema.next(p.value))));
            }
            writeln!(out, "{line}")?;
        }
        Ok(())
    }

    /// `--plot` redrawn at most once a second, when there is something new.
    fn plot_if_due(&mut self) {
        if !(self.plot_dirty && self.caught_up && self.args.plot.is_some()) {
            return;
        }
        let due = self
            .last_plot
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due && !self.store.is_empty() {
            if let Err(e) = plot(&self.store, self.args) {
                eprintln!("plot: {e:#}");
            }
            self.last_plot = Some(Instant::now());
            self.plot_dirty = false;
        }
    }
}

fn paths_list(args: &MetricsArgs) -> String {
    args.paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
