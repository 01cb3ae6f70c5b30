//! Training curves as the dashboard sees them: series by run and tag, however they were read. The
//! readers live elsewhere; whatever reads training logs hands the dashboard [`Series`] through a
//! [`TrainingSource`] (polled off the UI task) or as `Msg::Training` messages.

use crate::metrics::series::ema_smooth;

/// One curve: a tag (e.g. "loss") of one run, by step and by wall time (seconds since the run began).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub run: String,
    pub tag: String,
    pub by_step: Vec<(f64, f64)>,
    pub by_time: Vec<(f64, f64)>,
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
            by_step: points,
            by_time: Vec::new(),
        }
    }
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

/// Anything that can tell the dashboard the current training curves.
pub trait TrainingSource: Send {
    /// Every (run, tag) series known now.
    fn series(&mut self) -> Vec<Series>;
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

    /// Tags in the order they were first seen, each with the curves of every run that logs it.
    pub fn panels(&self) -> Vec<Panel> {
        let mut panels: Vec<Panel> = Vec::new();
        for (series, curve) in self.series.iter().zip(self.curves()) {
            let raw = if self.x_time {
                &series.by_time
            } else {
                &series.by_step
            };
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
                let raw = if self.x_time { &s.by_time } else { &s.by_step };
                let mut points = ema(raw, self.smoothing);
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

/// Follows training logs under `roots` on a background thread (the metrics follower) and hands every
/// update to `send` as the full set of series; stops when `send` returns false or the follower drops.
pub fn follow(
    roots: &[std::path::PathBuf],
    mut send: impl FnMut(Vec<Series>) -> bool + Send + 'static,
) -> Result<crate::metrics::Follower, crate::metrics::MetricsError> {
    let mut store = crate::metrics::Store::new();
    crate::metrics::Follower::spawn_with(roots, Default::default(), move |event| {
        store.apply(&event);
        if matches!(event, crate::metrics::FollowEvent::Skipped { .. }) {
            return true;
        }
        send(series_of(&store))
    })
}

/// Most points of one series sent to the view: a panel is at most a few hundred Braille dots wide, and
/// a run logged every step for a million steps must not be copied, smoothed and drawn whole per frame.
const MAX_POINTS: usize = 4096;

/// `points` as they are, or min/max-downsampled to at most [`MAX_POINTS`] (every spike and the last
/// point survive). Smoothing then runs over these points, much as TensorBoard smooths its samples.
/// Downsampling needs x in order; a log whose steps go back (a restarted run) is kept whole.
fn for_display(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS || !points.is_sorted_by(|a, b| a.0 <= b.0) {
        return points;
    }
    let (x, y): (Vec<f64>, Vec<f64>) = points.into_iter().unzip();
    crate::metrics::series::downsample_minmax(&x, &y, MAX_POINTS / 4)
}

/// Every (run, tag) of a metrics store as dashboard series: by step, and by seconds since the run's
/// first point where the log has wall times.
fn series_of(store: &crate::metrics::Store) -> Vec<Series> {
    let mut out = Vec::new();
    for run in store.runs() {
        for tag in run.tags() {
            let Some(series) = run.series(tag) else {
                continue;
            };
            let points = &series.points;
            let start = points.iter().map(|p| p.wall_time).find(|t| t.is_finite());
            out.push(Series {
                run: run.name.clone(),
                tag: tag.to_string(),
                by_step: for_display(points.iter().map(|p| (p.step as f64, p.value)).collect()),
                by_time: match start {
                    Some(t0) => for_display(
                        points
                            .iter()
                            .filter(|p| p.wall_time.is_finite())
                            .map(|p| (p.wall_time - t0, p.value))
                            .collect(),
                    ),
                    None => Vec::new(),
                },
            });
        }
    }
    out
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

    #[test]
    fn long_series_reach_the_view_downsampled_with_their_spike_and_last_point() {
        let mut points: Vec<(f64, f64)> = (0..1_000_000).map(|i| (i as f64, 1.0)).collect();
        points[123_457].1 = 50.0;
        points[999_999].1 = 0.5;
        let shown = for_display(points);
        assert!(shown.len() <= MAX_POINTS, "{}", shown.len());
        assert!(shown.contains(&(123_457.0, 50.0)), "the spike");
        assert_eq!(shown.last(), Some(&(999_999.0, 0.5)));
        let short: Vec<(f64, f64)> = (0..100).map(|i| (i as f64, i as f64)).collect();
        assert_eq!(
            for_display(short.clone()),
            short,
            "short series are sent whole"
        );
        let mut restarted = vec![(0.0, 1.0); MAX_POINTS + 10];
        restarted[5].0 = 9.0;
        assert_eq!(
            for_display(restarted.clone()),
            restarted,
            "x out of order: whole"
        );
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
