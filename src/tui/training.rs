//! Training curves as the dashboard sees them: series by run and tag, however they were read. The
//! readers live elsewhere; whatever reads training logs hands the dashboard [`Series`] through a
//! [`TrainingSource`] (polled off the UI task) or as `Msg::Training` messages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::metrics::series::{Series as Points, ema_smooth};
use crate::metrics::store::Facts;
use crate::metrics::{FactKind, FollowEvent, Point};
use crate::tui::run_filter::RunFilter;
use crate::tui::training_media::{TrainingImage, TrainingMedia};

/// What the Training view's main area shows (`i` steps through them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pane {
    /// A chart per scalar tag.
    #[default]
    Curves,
    /// A panel per image tag and run, at one logged step (`,` and `.` step through them).
    Images,
    /// The selected run: its state, name, config and summary, each log file of it, and the config keys
    /// that differ between the runs shown.
    Overview,
}

impl Pane {
    pub fn next(self) -> Pane {
        match self {
            Pane::Curves => Pane::Images,
            Pane::Images => Pane::Overview,
            Pane::Overview => Pane::Curves,
        }
    }
}

/// One curve: a tag (e.g. "loss") of one run, its points in step order as read (step, wall time,
/// value), at most [`MAX_POINTS`] of them kept for display.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub run: String,
    pub tag: String,
    pub points: Vec<Point>,
}

impl Series {
    /// A series known by step only.
    pub fn by_step(
        run: impl Into<String>,
        tag: impl Into<String>,
        points: Vec<(f64, f64)>,
    ) -> Self {
        Series {
            run: run.into(),
            tag: tag.into(),
            points: points
                .into_iter()
                .map(|(x, y)| Point::new(x as i64, f64::NAN, y))
                .collect(),
        }
    }

    /// (x, y) by step, or by seconds since the series' first wall time.
    fn xy(&self, x_time: bool) -> Vec<(f64, f64)> {
        if !x_time {
            return self
                .points
                .iter()
                .map(|p| (p.step as f64, p.value))
                .collect();
        }
        let Some(t0) = self
            .points
            .iter()
            .map(|p| p.wall_time)
            .find(|t| t.is_finite())
        else {
            return Vec::new();
        };
        self.points
            .iter()
            .filter(|p| p.wall_time.is_finite())
            .map(|p| (p.wall_time - t0, p.value))
            .collect()
    }

    /// Appends points as the log is read (a step that goes back drops the points from there on, as
    /// TensorBoard does) and keeps the series within the display budget; returns the points dropped.
    fn extend(&mut self, points: &[Point]) -> usize {
        let dropped = points.iter().map(|&p| append(&mut self.points, p)).sum();
        if self.points.len() > 2 * MAX_POINTS {
            self.points = thin(&self.points, MAX_POINTS);
        }
        dropped
    }
}

/// What the training-log reader tells the view: new points of a run, or all of it again.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingUpdate {
    /// New points of `run`, by tag, in the order read.
    Points {
        run: String,
        series: Vec<(String, Vec<Point>)>,
    },
    /// New images of `run`, by tag.
    Images {
        run: String,
        images: Vec<(String, Vec<TrainingImage>)>,
    },
    /// What the log file `log` says of `run` (its state, name, config, summary), newly read.
    Facts {
        run: String,
        log: PathBuf,
        facts: Vec<(FactKind, String, Value)>,
    },
    /// A file of `run` was rewritten: these are its series, images and facts now, replacing what was
    /// shown.
    Replace {
        run: String,
        series: Vec<(String, Vec<Point>)>,
        images: Vec<(String, Vec<TrainingImage>)>,
        facts: BTreeMap<PathBuf, Facts>,
    },
    /// Something worth a line in the log (a file that cannot be read, ...).
    Note(String),
}

/// A curve ready to draw: run, tag and (x, y) points.
pub type Curve = (String, String, Vec<(f64, f64)>);

/// One tag's panel: the curve of every run that logs it, and each run's last raw (unsmoothed) point.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub tag: String,
    pub curves: Vec<Curve>,
    pub last: Vec<Option<(f64, f64)>>,
}

/// The Training view's data and settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingState {
    pub series: Vec<Series>,
    /// How many training runs the experiment names.
    pub configured_runs: usize,
    /// Exponential smoothing weight, 0 (raw) to 0.99.
    pub smoothing: f64,
    pub log_y: bool,
    /// x is wall time instead of step.
    pub x_time: bool,
    /// Which page of tag panels is shown when they do not all fit (wraps around).
    pub tag_page: i64,
    /// Runs whose resumed training was already reported.
    pub resumed_runs: BTreeSet<String>,
    /// Which runs and tags are shown.
    pub filter: RunFilter,
    /// Images and run facts.
    pub media: TrainingMedia,
    pub pane: Pane,
    /// Lines the run overview is scrolled down by (PgDn / PgUp).
    pub overview_scroll: u16,
}

const SMOOTHING_STEPS: [f64; 7] = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99];

impl TrainingState {
    pub fn new(configured_runs: usize) -> Self {
        TrainingState {
            configured_runs,
            smoothing: 0.8,
            ..Default::default()
        }
    }

    pub fn smoother(&mut self) {
        self.smoothing = SMOOTHING_STEPS
            .iter()
            .copied()
            .find(|&s| s > self.smoothing + 1e-9)
            .unwrap_or(self.smoothing);
    }

    pub fn rougher(&mut self) {
        self.smoothing = SMOOTHING_STEPS
            .iter()
            .rev()
            .copied()
            .find(|&s| s < self.smoothing - 1e-9)
            .unwrap_or(0.0);
    }

    /// Applies an update from the log reader; returns lines for the log (a resumed run, once).
    pub fn apply(&mut self, update: TrainingUpdate) -> Vec<String> {
        match update {
            TrainingUpdate::Points { run, series } => {
                let mut dropped = 0;
                for (tag, points) in series {
                    dropped += self.series_mut(&run, &tag).extend(&points);
                }
                if dropped > 0 && self.resumed_runs.insert(run.clone()) {
                    return vec![format!(
                        "training: {run} went back in step (resumed from a checkpoint?); the {dropped} point(s) it replaces are dropped, as TensorBoard does"
                    )];
                }
                Vec::new()
            }
            TrainingUpdate::Images { run, images } => {
                self.media.add_images(&run, images);
                Vec::new()
            }
            TrainingUpdate::Facts { run, log, facts } => {
                self.media.add_facts(&run, log, facts);
                Vec::new()
            }
            TrainingUpdate::Replace {
                run,
                series,
                images,
                facts,
            } => {
                self.series.retain(|s| s.run != run);
                for (tag, points) in series {
                    self.series_mut(&run, &tag).extend(&points);
                }
                self.media.replace(&run, images, facts);
                Vec::new()
            }
            TrainingUpdate::Note(line) => vec![line],
        }
    }

    fn series_mut(&mut self, run: &str, tag: &str) -> &mut Series {
        let i = match self
            .series
            .iter()
            .position(|s| s.run == run && s.tag == tag)
        {
            Some(i) => i,
            None => {
                self.series.push(Series {
                    run: run.to_string(),
                    tag: tag.to_string(),
                    points: Vec::new(),
                });
                self.series.len() - 1
            }
        };
        &mut self.series[i]
    }

    /// Every run, as the run list shows them (pinned first).
    pub fn runs(&self) -> Vec<String> {
        let curves = self.series.iter().map(|s| s.run.as_str());
        self.filter.order(curves.chain(self.media.runs()))
    }

    /// Tags in the order they were first seen, each with the curves of every run that logs it.
    pub fn panels(&self) -> Vec<Panel> {
        let mut panels: Vec<Panel> = Vec::new();
        for (series, curve) in self.series.iter().zip(self.curves()) {
            if !self.filter.shows(&series.run, &series.tag) {
                continue;
            }
            let raw = series.xy(self.x_time);
            let last = raw.iter().rev().find(|p| p.1.is_finite()).copied();
            match panels.iter_mut().find(|p| p.tag == series.tag) {
                Some(p) => {
                    p.curves.push(curve);
                    p.last.push(last);
                }
                None => panels.push(Panel {
                    tag: series.tag.clone(),
                    curves: vec![curve],
                    last: vec![last],
                }),
            }
        }
        panels
    }

    /// The curves to draw: (run, tag, points) after the x choice, smoothing and log-y.
    pub fn curves(&self) -> Vec<Curve> {
        self.series
            .iter()
            .map(|s| {
                let mut points = ema(&s.xy(self.x_time), self.smoothing);
                if self.log_y {
                    points.retain(|p| p.1 > 0.0);
                    for p in &mut points {
                        p.1 = p.1.log10();
                    }
                }
                (s.run.clone(), s.tag.clone(), points)
            })
            .collect()
    }
}

/// The finite points of a curve, y smoothed as TensorBoard does ([`ema_smooth`]).
fn ema(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let finite: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let ys: Vec<f64> = finite.iter().map(|p| p.1).collect();
    finite
        .iter()
        .zip(ema_smooth(&ys, weight))
        .map(|(&(x, _), y)| (x, y))
        .collect()
}

/// Follows training logs under `roots` on a background thread (the metrics follower) and hands each
/// change to `send` as a [`TrainingUpdate`]: new points as they are read, a run again in full only when
/// one of its files was rewritten. Stops when `send` returns false or the follower drops.
pub fn follow(
    roots: &[std::path::PathBuf],
    mut send: impl FnMut(TrainingUpdate) -> bool + Send + 'static,
) -> Result<crate::metrics::Follower, crate::metrics::MetricsError> {
    let mut store = crate::metrics::Store::new();
    crate::metrics::Follower::spawn_with(roots, Default::default(), move |event| {
        store.apply(&event);
        match event {
            FollowEvent::Points { run, series, .. } => send(TrainingUpdate::Points { run, series }),
            FollowEvent::Images {
                run,
                path,
                format,
                images,
            } => {
                let log: Arc<Path> = Arc::from(path.as_path());
                let images = images
                    .iter()
                    .map(|(tag, list)| (tag.clone(), TrainingImage::all(list, &log, format)))
                    .collect();
                send(TrainingUpdate::Images { run, images })
            }
            FollowEvent::Facts {
                run, path, facts, ..
            } => send(TrainingUpdate::Facts {
                run,
                log: path,
                facts,
            }),
            FollowEvent::Reset { path, .. } => {
                // Every run the file fed starts again (an mlflow.db feeds many).
                let runs: Vec<TrainingUpdate> = store
                    .runs()
                    .filter(|r| r.sources.contains_key(&path))
                    .map(replacement)
                    .collect();
                runs.into_iter().all(&mut send)
            }
            FollowEvent::Error { path, message } => send(TrainingUpdate::Note(format!(
                "training: {}: {message}",
                path.display()
            ))),
            FollowEvent::PassedBy(p) => send(TrainingUpdate::Note(format!("training: {p}"))),
            FollowEvent::Skipped { .. } | FollowEvent::CaughtUp => true,
        }
    })
}

/// Most points of one series kept for the view: a panel is at most a few hundred Braille dots wide, and
/// a run logged every step for a million steps must not be smoothed and drawn whole per frame.
const MAX_POINTS: usize = 4096;

/// Appends one point to a step-ordered series (see [`Points::append`]); returns the points dropped.
fn append(points: &mut Vec<Point>, point: Point) -> usize {
    let mut series = Points {
        points: std::mem::take(points),
    };
    let dropped = series.append(point);
    *points = series.points;
    dropped
}

/// About `max` of `points`: in each of `max / 2` runs of consecutive points, the lowest and the
/// highest value (in their order), so every spike survives, and the last point.
fn thin(points: &[Point], max: usize) -> Vec<Point> {
    let chunk = points.len().div_ceil((max / 2).max(1)).max(1);
    let mut keep: Vec<usize> = Vec::with_capacity(max + 1);
    for start in (0..points.len()).step_by(chunk) {
        let range = start..(start + chunk).min(points.len());
        let value = |i: &usize| points[*i].value;
        let lo = range.clone().min_by(|a, b| value(a).total_cmp(&value(b)));
        let hi = range.max_by(|a, b| value(a).total_cmp(&value(b)));
        if let (Some(lo), Some(hi)) = (lo, hi) {
            keep.extend([lo.min(hi), lo.max(hi)]);
        }
    }
    keep.push(points.len().saturating_sub(1));
    keep.dedup();
    keep.iter()
        .filter_map(|&i| points.get(i).copied())
        .collect()
}

/// All of a run, as it is read now: its series, images and facts.
pub(crate) fn replacement(run: &crate::metrics::Run) -> TrainingUpdate {
    let mut images: Vec<(String, Vec<TrainingImage>)> = Vec::new();
    let mut facts = BTreeMap::new();
    for source in run.sources.values() {
        let log: Arc<Path> = Arc::from(source.path.as_path());
        for (tag, list) in &source.images {
            let list = TrainingImage::all(list, &log, source.format);
            match images.iter_mut().find(|(t, _)| t == tag) {
                Some((_, held)) => held.extend(list),
                None => images.push((tag.clone(), list)),
            }
        }
        if !source.facts.is_empty() {
            facts.insert(source.path.clone(), source.facts.clone());
        }
    }
    TrainingUpdate::Replace {
        run: run.name.clone(),
        series: run_series(run),
        images,
        facts,
    }
}

/// Every series of a run, merged across its files.
fn run_series(run: &crate::metrics::Run) -> Vec<(String, Vec<Point>)> {
    run.tags()
        .into_iter()
        .filter_map(|tag| Some((tag.to_string(), run.series(tag)?.points.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_steps_up_and_down_and_zero_is_raw() {
        let mut t = TrainingState::new(0);
        t.rougher();
        t.rougher();
        t.rougher();
        assert_eq!(t.smoothing, 0.0);
        t.series = vec![Series::by_step("a", "loss", vec![(0.0, 1.0), (1.0, 3.0)])];
        assert_eq!(t.curves()[0].2, vec![(0.0, 1.0), (1.0, 3.0)]);
        t.smoother();
        assert_eq!(t.smoothing, 0.5);
        // Debiased: the first point is itself, the second is weighted toward the past.
        let c = &t.curves()[0].2;
        assert_eq!(c[0], (0.0, 1.0));
        assert!((c[1].1 - (0.25 + 1.5) / 0.75).abs() < 1e-12);
    }

    #[test]
    fn panels_group_runs_by_tag_and_keep_the_raw_last_value() {
        let mut t = TrainingState::new(2);
        t.series = vec![
            Series::by_step("a", "loss", vec![(0.0, 10.0), (1.0, 0.0)]),
            Series::by_step("a", "fid", vec![(5.0, 300.0), (10.0, f64::NAN)]),
            Series::by_step("b", "loss", vec![(0.0, 4.0)]),
        ];
        let panels = t.panels();
        let tags: Vec<&str> = panels.iter().map(|p| p.tag.as_str()).collect();
        assert_eq!(tags, ["loss", "fid"]);
        assert_eq!(panels[0].curves.len(), 2);
        // Smoothing bends the drawn curve, not the number shown.
        assert!(panels[0].curves[0].2[1].1 > 1.0);
        assert_eq!(panels[0].last, [Some((1.0, 0.0)), Some((0.0, 4.0))]);
        assert_eq!(
            panels[1].last,
            [Some((5.0, 300.0))],
            "the last finite point"
        );
    }

    fn points(steps: impl IntoIterator<Item = i64>, value: f64) -> Vec<Point> {
        steps
            .into_iter()
            .map(|s| Point::new(s, 1000.0 + s as f64, value))
            .collect()
    }

    fn update(run: &str, tag: &str, points: Vec<Point>) -> TrainingUpdate {
        TrainingUpdate::Points {
            run: run.into(),
            series: vec![(tag.into(), points)],
        }
    }

    #[test]
    fn points_arrive_as_deltas_and_a_resumed_run_drops_what_it_replaces_once_said() {
        let mut t = TrainingState::new(1);
        assert!(t.apply(update("a", "loss", points(0..10, 1.0))).is_empty());
        assert!(t.apply(update("a", "loss", points(10..20, 1.0))).is_empty());
        assert_eq!(t.series[0].points.len(), 20);
        // Resumed from the checkpoint at step 15: steps 15..20 are replaced.
        let said = t.apply(update("a", "loss", points(15..18, 2.0)));
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("a went back in step") && said[0].contains("the 5 point(s)"),
            "{said:?}"
        );
        let steps: Vec<i64> = t.series[0].points.iter().map(|p| p.step).collect();
        assert_eq!(steps, (0..18).collect::<Vec<_>>());
        assert_eq!(t.series[0].points[16].value, 2.0);
        // A second restart of the same run is not said again.
        assert!(t.apply(update("a", "loss", points(5..6, 3.0))).is_empty());
        assert_eq!(t.series[0].points.len(), 6);
        // By time, x counts from the series' first wall time.
        assert_eq!(t.series[0].xy(true)[5], (5.0, 3.0));
    }

    #[test]
    fn a_long_run_stays_within_the_display_budget_with_its_spike_and_last_point() {
        let mut t = TrainingState::new(1);
        for chunk in 0..250 {
            let mut p = points(chunk * 4000..(chunk + 1) * 4000, 1.0);
            if chunk == 123 {
                p[457].value = 50.0;
            }
            t.apply(update("a", "loss", p));
            assert!(t.series[0].points.len() <= 2 * MAX_POINTS + 1);
        }
        let kept = &t.series[0].points;
        assert!(
            kept.iter()
                .any(|p| p.value == 50.0 && p.step == 123 * 4000 + 457),
            "the spike"
        );
        assert_eq!(kept.last().map(|p| p.step), Some(999_999));
        assert!(
            kept.windows(2).all(|w| w[0].step < w[1].step),
            "in step order"
        );
    }

    #[test]
    fn a_rewritten_file_replaces_its_run_only() {
        let mut t = TrainingState::new(2);
        t.apply(update("a", "loss", points(0..10, 1.0)));
        t.apply(update("b", "loss", points(0..10, 1.0)));
        t.apply(TrainingUpdate::Replace {
            run: "a".into(),
            series: vec![("loss".into(), points(0..3, 2.0))],
            images: Vec::new(),
            facts: BTreeMap::new(),
        });
        let lens: Vec<(String, usize)> = t
            .series
            .iter()
            .map(|s| (s.run.clone(), s.points.len()))
            .collect();
        assert_eq!(lens, [("b".to_string(), 10), ("a".to_string(), 3)]);
    }

    #[test]
    fn log_y_drops_non_positive_values() {
        let mut t = TrainingState::new(0);
        t.smoothing = 0.0;
        t.log_y = true;
        t.series = vec![Series::by_step("a", "loss", vec![(0.0, 0.0), (1.0, 100.0)])];
        assert_eq!(t.curves()[0].2, vec![(1.0, 2.0)]);
    }
}
