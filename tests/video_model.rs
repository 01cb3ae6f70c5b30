//! The shipped video model (models/digits-video: a (2+1)-D U-Net whose sample is [B, 1, 8, 20, 20], trained by
//! models/train_video.py on MNIST digits moving across the canvas) through the whole lab: DDIM with `noise =
//! "torch"` reproduces diffusers' DDIMScheduler loop on the PyTorch model from the seed alone
//! (models/checks/digits_video_check.json), and the clips it draws move.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, Axis, s};
use ndarray_npy::read_npy;
use serde_json::Value;
use support::{run, temp_dir};

mod support;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

#[test]
fn ddim_reproduces_the_diffusers_loop_on_the_shipped_video_model() {
    let check: Value = serde_json::from_str(
        &std::fs::read_to_string(models().join("checks/digits_video_check.json")).unwrap(),
    )
    .unwrap();
    let runs = check["runs"].as_array().unwrap();
    let dir = temp_dir("difflab-digits-video");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[sampling]\nseeds = {}\nnoise = \"torch\"\n\
         [[sampler]]\nname = \"ddim\"\nsteps = {}\n",
        models().join("digits-video/model.onnx"),
        runs.len(),
        runs[0]["steps"]
    );
    let results = run(&dir, &text).unwrap();
    let cell = &results.cells[0];
    assert!(cell.error.is_none(), "{:?}", cell.error);
    let stem = cell
        .grid
        .trim_start_matches("cells/")
        .trim_end_matches(".png");
    let clips: ArrayD<f32> = read_npy(dir.join(format!("out/samples/{stem}.npy"))).unwrap();
    assert_eq!(clips.shape(), &[runs.len(), 1, 8, 20, 20]);
    for (k, case) in runs.iter().enumerate() {
        assert_eq!(case["seed"].as_u64(), Some(k as u64));
        // The loop's final sample is in [-1, 1]; difflab's samples file holds [0, 1].
        let want: Vec<f32> = (case["clip"].as_array().unwrap().iter())
            .map(|v| (v.as_f64().unwrap() as f32 / 2.0 + 0.5).clamp(0.0, 1.0))
            .collect();
        let got = clips.index_axis(Axis(0), k);
        let diff = (got.iter().zip(&want)).fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
        println!("seed {k}: largest difference {diff:.2e}");
        assert!(diff < 1e-3, "seed {k}: the clips differ by {diff}");
    }
}

/// The clips move: over 16 seeds the centre of a clip's ink travels several pixels from its first frame to its
/// last (a digit standing still travels none; the training clips' digits 7 to 9.9).
#[test]
fn the_shipped_video_model_moves_its_digits() {
    let dir = temp_dir("difflab-digits-video-motion");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[sampling]\nseeds = 16\n\
         [[sampler]]\nname = \"ddim\"\nsteps = 25\n",
        models().join("digits-video/model.onnx"),
    );
    let results = run(&dir, &text).unwrap();
    let stem = (results.cells[0].grid)
        .trim_start_matches("cells/")
        .trim_end_matches(".png");
    let clips: ArrayD<f32> = read_npy(dir.join(format!("out/samples/{stem}.npy"))).unwrap();
    let travel: Vec<f32> = (0..16)
        .map(|k| ink_travel(&clips, k))
        .filter(|t| t.is_finite())
        .collect();
    let mean = travel.iter().sum::<f32>() / travel.len() as f32;
    println!(
        "the ink's centre travels {mean:.1} pixels over 8 frames on average ({} clips with ink)",
        travel.len()
    );
    assert!(
        travel.len() >= 12,
        "only {} of 16 clips have ink",
        travel.len()
    );
    assert!(mean > 1.5, "the clips stand still ({mean:.2} pixels)");
}

/// How far the centre of a clip's ink (pixels above half brightness) moves from its first frame to its last.
fn ink_travel(clips: &ArrayD<f32>, k: usize) -> f32 {
    let centre = |f: usize| {
        let frame = clips.slice(s![k, 0, f, .., ..]);
        let ink = frame.indexed_iter().filter(|(_, v)| **v > 0.5);
        let (n, x, y) = ink.fold((0.0, 0.0, 0.0), |(n, x, y), ((r, c), _)| {
            (n + 1.0, x + c as f32, y + r as f32)
        });
        (x / n, y / n)
    };
    let ((x0, y0), (x7, y7)) = (centre(0), centre(7));
    ((x7 - x0).powi(2) + (y7 - y0).powi(2)).sqrt()
}
