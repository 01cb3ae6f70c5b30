//! What one training-log update costs the dashboard: 8 runs × 4 tags of 100 000 points each, then
//! 100 new points of one tag. Baseline: every update hands the view a full copy of every series
//! (each merged, converted and downsampled), as the dashboard did before updates were deltas.
//! Candidate: the view applies the 100 new points as a delta. Rounds interleave the two, and the
//! figure is the median ratio baseline / candidate with its range.
//!
//! `cargo bench --bench training_updates`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::PathBuf;
use std::time::Instant;

use difflab::metrics::series::downsample_minmax;
use difflab::metrics::{FollowEvent, Format, Point, Store};
use difflab::tui::training::{TrainingState, TrainingUpdate};

const RUNS: usize = 8;
const TAGS: [&str; 4] = ["train/loss", "train/lr", "train/ema_loss", "eval/fid"];
const POINTS: i64 = 100_000;
const NEW: i64 = 100;
const ROUNDS: usize = 15;
const UPDATES_PER_ROUND: usize = 20;

fn points(from: i64, to: i64) -> Vec<Point> {
    (from..to)
        .map(|s| Point::new(s, 1.7e9 + s as f64, 1.0 / (1.0 + s as f64)))
        .collect()
}

fn event(run: usize, tag: &str, from: i64, to: i64) -> FollowEvent {
    FollowEvent::Points {
        run: format!("run{run}"),
        path: PathBuf::from(format!("run{run}/metrics.jsonl")),
        format: Format::JsonLines,
        series: vec![(tag.to_string(), points(from, to))],
    }
}

/// The old hand-off: every series of the store, copied by step and by time, downsampled to 4096.
fn full_copy(store: &Store) -> usize {
    let mut total = 0;
    for run in store.runs() {
        for tag in run.tags() {
            let s = run.series(tag).unwrap();
            let (x, y): (Vec<f64>, Vec<f64>) =
                s.points.iter().map(|p| (p.step as f64, p.value)).unzip();
            let (t, v): (Vec<f64>, Vec<f64>) = s
                .points
                .iter()
                .map(|p| (p.wall_time - 1.7e9, p.value))
                .unzip();
            total += downsample_minmax(&x, &y, 1024).len() + downsample_minmax(&t, &v, 1024).len();
        }
    }
    total
}

fn main() {
    let mut store = Store::new();
    let mut view = TrainingState::new(RUNS);
    for run in 0..RUNS {
        for tag in TAGS {
            store.apply(&event(run, tag, 0, POINTS));
            if let FollowEvent::Points { run, series, .. } = event(run, tag, 0, POINTS) {
                view.apply(TrainingUpdate::Points { run, series });
            }
        }
    }
    let mut next = POINTS;
    let (mut ratios, mut baselines, mut candidates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..UPDATES_PER_ROUND {
            store.apply(&event(0, TAGS[0], next, next + NEW));
            std::hint::black_box(full_copy(&store));
            next += NEW;
        }
        let baseline = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..UPDATES_PER_ROUND {
            if let FollowEvent::Points { run, series, .. } = event(0, TAGS[0], next, next + NEW) {
                std::hint::black_box(view.apply(TrainingUpdate::Points { run, series }));
            }
            next += NEW;
        }
        let candidate = start.elapsed().as_secs_f64();
        ratios.push(baseline / candidate);
        baselines.push(baseline / UPDATES_PER_ROUND as f64);
        candidates.push(candidate / UPDATES_PER_ROUND as f64);
    }
    for v in [&mut ratios, &mut baselines, &mut candidates] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "per update: full copy {:.2} ms, delta {:.2} µs (medians)",
        baselines[ROUNDS / 2] * 1e3,
        candidates[ROUNDS / 2] * 1e6
    );
    println!(
        "one update of {NEW} points, {RUNS} runs × {} tags × {POINTS} points: full copy / delta = {:.1}× median ({:.1}–{:.1}× over {ROUNDS} rounds)",
        TAGS.len(),
        ratios[ROUNDS / 2],
        ratios[0],
        ratios[ROUNDS - 1]
    );
}
