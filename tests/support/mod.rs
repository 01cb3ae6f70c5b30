//! What the pipeline tests share: a scratch folder, a headless run with `--save-samples`, array differences.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "each test file uses what it needs; tests report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::experiment::Experiment;
use difflab::lab::{LabEvent, Results, RunOptions, start};
use ndarray::ArrayD;

/// A fresh scratch folder named `name` (and this process) under the system's temporary folder.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the experiment text (written into `dir`) with `--save-samples`; the run's error, if any.
pub fn run(dir: &Path, text: &str) -> Result<Results, String> {
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    let experiment = Experiment::load(&path).map_err(|e| e.to_string())?;
    let options = RunOptions {
        save_samples: true,
        ..RunOptions::default()
    };
    let lab = start(experiment, options);
    let mut error = None;
    for event in lab.events.iter() {
        if let LabEvent::Finished { error: e, .. } = event {
            error = e;
        }
    }
    lab.join();
    match error {
        Some(e) => Err(e),
        None => Ok(Results::load(&dir.join("out/results.json"))),
    }
}

/// The largest absolute difference of two arrays of one shape.
pub fn max_difference(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}
