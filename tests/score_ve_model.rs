//! The shipped variance-exploding score model (models/digits-ve, a diffusers ScoreSdeVePipeline folder with its
//! UNet2DModel in ONNX) through the whole lab: `score_sde_ve` with `noise = "torch"` reproduces the pipeline's
//! loop on the PyTorch model from the seed alone (models/checks/digits_ve_check.json, written by
//! models/train_ve.py), samples in [0, 1]; σ-space Euler and Heun run on the same model and draw digits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use serde_json::Value;
use support::{run, temp_dir};

mod support;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The samples a run's only cell saved: [N, 1, 16, 16] in [0, 1].
fn samples_of(dir: &Path, grid: &str) -> ArrayD<f32> {
    let stem = grid.trim_start_matches("cells/").trim_end_matches(".png");
    read_npy(dir.join(format!("out/samples/{stem}.npy"))).unwrap()
}

#[test]
fn the_predictor_corrector_sampler_reproduces_the_pipeline_on_the_shipped_model() {
    let check: Value = serde_json::from_str(
        &std::fs::read_to_string(models().join("checks/digits_ve_check.json")).unwrap(),
    )
    .unwrap();
    let runs = check["runs"].as_array().unwrap();
    let dir = temp_dir("difflab-digits-ve-pc");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[sampling]\nseeds = {}\nnoise = \"torch\"\n\
         [[sampler]]\nname = \"score_sde_ve\"\nsteps = {}\n",
        models().join("digits-ve"),
        runs.len(),
        runs[0]["steps"]
    );
    let results = run(&dir, &text).unwrap();
    let cell = &results.cells[0];
    assert!(cell.error.is_none(), "{:?}", cell.error);
    assert_eq!(cell.nfe, 2 * runs[0]["steps"].as_u64().unwrap() as usize);
    let samples = samples_of(&dir, &cell.grid);
    assert_eq!(samples.shape(), &[runs.len(), 1, 16, 16]);
    for (k, case) in runs.iter().enumerate() {
        assert_eq!(case["seed"].as_u64(), Some(k as u64));
        let want: Vec<f32> = (case["image"].as_array().unwrap().iter())
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = samples.index_axis(ndarray::Axis(0), k);
        let diff = (got.iter().zip(&want)).fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
        println!("seed {k}: largest difference {diff:.2e}");
        assert!(diff < 1e-3, "seed {k}: the samples differ by {diff}");
        // A digit: dark background, some bright strokes.
        let bright = want.iter().filter(|&&v| v > 0.5).count();
        assert!(
            (10..150).contains(&bright),
            "seed {k}: {bright} bright pixels"
        );
    }
}

#[test]
fn sigma_space_samplers_draw_digits_with_the_same_model() {
    let dir = temp_dir("difflab-digits-ve-sigma");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[sampling]\nseeds = 8\n\
         [[sampler]]\nname = \"euler-karras\"\nsteps = 40\n[[sampler]]\nname = \"heun-karras\"\nsteps = 20\n",
        models().join("digits-ve"),
    );
    let results = run(&dir, &text).unwrap();
    assert_eq!(results.cells.len(), 2);
    for cell in &results.cells {
        assert!(cell.error.is_none(), "{:?}", cell.error);
        let samples = samples_of(&dir, &cell.grid);
        let mean = samples.mean().unwrap();
        // MNIST digits are about a fifth ink: samples far off it are noise or blank.
        assert!((0.05..0.4).contains(&mean), "{}: mean {mean}", cell.name);
    }
    let heun = results
        .cells
        .iter()
        .find(|c| c.name == "heun-karras 20")
        .unwrap();
    assert_eq!(heun.nfe, 39, "Heun: two calls a step but the last");
}

/// The analytic mixture as a VE score model (`prediction_type = "score"`: diffusers' default σ range) through the
/// lab: σ-space Euler's error against a Heun solve shrinks with its steps, DPM++ 2M's (a sampler in x_t space)
/// at second order — it starts from the same prior, σ_max·z — and the predictor-corrector sampler's samples
/// live in [0, 1] as the mixture does.
#[test]
fn the_analytic_model_in_ve_form_runs_through_the_lab() {
    let dir = temp_dir("difflab-analytic-ve");
    let text = "output = \"out\"\n[model]\npath = \"analytic\"\nsample_shape = [1, 8, 8]\n\
                prediction_type = \"score\"\n[sampling]\nseeds = 8\n\
                [[sampler]]\nname = \"euler-karras\"\nsteps = [10, 40]\n\
                [[sampler]]\nname = \"dpm++2m-karras\"\nsteps = [25, 100]\n\
                [[sampler]]\nname = \"score_sde_ve\"\nsteps = 200\n\
                [quality]\nreference_sampler = \"heun-karras:200\"\n";
    let results = run(&dir, text).unwrap();
    let error = |name: &str| {
        let cell = results.cells.iter().find(|c| c.name == name).unwrap();
        assert!(cell.error.is_none(), "{name}: {:?}", cell.error);
        cell.score("ref_rmse").unwrap()
    };
    let (coarse, fine) = (error("euler-karras 10"), error("euler-karras 40"));
    println!("Euler against the reference: {coarse:.3e} at 10 steps, {fine:.3e} at 40");
    assert!(fine < coarse / 2.5, "{coarse} → {fine}");
    let (coarse, fine) = (error("dpm++2m-karras 25"), error("dpm++2m-karras 100"));
    println!("DPM++ 2M against the reference: {coarse:.3e} at 25 steps, {fine:.3e} at 100");
    assert!(fine < coarse / 8.0, "{coarse} → {fine}");
    let pc = results
        .cells
        .iter()
        .find(|c| c.name == "score_sde_ve 200")
        .unwrap();
    let samples = samples_of(&dir, &pc.grid);
    let mean = samples.mean().unwrap();
    // The patterns are 0.1 and 0.9 with a little spread: the mean lies well inside [0, 1].
    assert!((0.1..0.6).contains(&mean), "mean {mean}");
}
