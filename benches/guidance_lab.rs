//! The lab's guided sampling loop against ONNX Runtime's floor on the checked-in SD-1-style export
//! (tests/data/pipelines/sd1: 4×8×8 latents, 77 tokens), CPU, one intra-op thread.
//!
//! - one cell: `ddim 10 g7.5` on 1 prompt × 4 seeds. difflab's time is the cell's model + sampler time from
//!   results.json; the floor is 10 plain `Session::run`s of the U-Net on the CFG batch (8 items) with inputs
//!   built once.
//! - six cells: DDIM, DPM++ 2M, DPM++ 2M Karras × g 1, 7.5, sharing calls where timesteps allow. difflab's time
//!   is the sum over cells; the floor is the sum of each cell's own floor (10 runs at 4 items for g = 1,
//!   at 8 for g = 7.5).
//!
//! Both sides open their sessions fresh each round and count the runs from the first (ONNX Runtime's first
//! run of a session pays its warm-up; the lab's cells do too), not the opening.
//! Baseline and candidate alternate in rounds (the machine's speed drifts); the medians of the per-round
//! ratios are printed with their min–max. Run: `cargo bench --bench guidance_lab`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use difflab::engine::runtime;
use difflab::experiment::Experiment;
use difflab::lab::{LabEvent, Results, RunOptions, start};
use ort::session::Session;
use ort::value::Tensor;

const ROUNDS: usize = 7;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipelines/sd1")
}

/// A fresh session, as each lab run opens one (its first runs pay ONNX Runtime's warm-up, as the lab's do).
fn session() -> Session {
    let rt = runtime(None).expect("runtime loaded");
    Session::builder(rt.environment())
        .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
        .and_then(|mut b| b.commit_from_file(root().join("unet/model.onnx")))
        .expect("plain session")
}

/// Seconds of `runs` plain U-Net runs on `batch` items, on a fresh session (its opening not counted).
fn floor(batch: usize, runs: usize) -> f64 {
    let mut session = session();
    let x = Tensor::from_array(([batch, 4, 8, 8], vec![0.1f32; batch * 256])).unwrap();
    let t = Tensor::from_array(((), vec![501.0f32])).unwrap();
    let h = Tensor::from_array(([batch, 77, 8], vec![0.0f32; batch * 77 * 8])).unwrap();
    let start = Instant::now();
    for _ in 0..runs {
        let out = session
            .run(ort::inputs!["sample" => &x, "timestep" => &t, "encoder_hidden_states" => &h])
            .unwrap();
        std::hint::black_box(&out);
    }
    start.elapsed().as_secs_f64()
}

/// The lab's model + sampler seconds per cell for `samplers` (TOML tables).
fn lab(dir: &Path, samplers: &str) -> Vec<f64> {
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\nthreads = 1\n[conditioning]\n\
         prompts = [\"a cat\"]\nnegative_prompt = \"blurry\"\n[sampling]\nseeds = 4\n{samplers}",
        root()
    );
    std::fs::write(dir.join("bench.toml"), text).unwrap();
    // A fresh output folder: results.json keeps the cells of earlier runs, which are not this run's.
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let experiment = Experiment::load(&dir.join("bench.toml")).unwrap();
    let options = RunOptions {
        force: true,
        ..RunOptions::default()
    };
    let handle = start(experiment, options);
    for event in handle.events.iter() {
        if let LabEvent::Finished { error: Some(e), .. } = event {
            panic!("{e}");
        }
    }
    handle.join();
    let results = Results::load(&dir.join("out/results.json"));
    results.cells.iter().map(|c| c.wall_s).collect()
}

fn summary(name: &str, mut ratios: Vec<f64>) {
    ratios.sort_by(f64::total_cmp);
    println!(
        "{name}: difflab / ONNX Runtime floor = {:.3} (min {:.3}, max {:.3}, {} rounds)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        ratios.len()
    );
}

fn main() {
    let dir = std::env::temp_dir().join(format!("difflab-bench-guidance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let one = "[[sampler]]\nname = \"ddim\"\nsteps = 10\nguidance = 7.5\n";
    let six = "[[sampler]]\nname = \"ddim\"\nsteps = 10\nguidance = [1, 7.5]\n\
               [[sampler]]\nname = \"dpm++2m\"\nsteps = 10\nguidance = [1, 7.5]\n\
               [[sampler]]\nname = \"dpm++2m-karras\"\nsteps = 10\nguidance = [1, 7.5]\n";
    floor(8, 20);
    lab(&dir, one);
    let (mut single, mut several) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let base = floor(8, 10);
        let ours: f64 = lab(&dir, one).iter().sum();
        eprintln!(
            "one cell: difflab {:.2} ms, floor {:.2} ms",
            ours * 1e3,
            base * 1e3
        );
        single.push(ours / base);
        let base = 3.0 * (floor(4, 10) + floor(8, 10));
        let ours: f64 = lab(&dir, six).iter().sum();
        several.push(ours / base);
    }
    summary("one cell (ddim 10 g7.5, 4 seeds)", single);
    summary("six cells (3 samplers × g 1, 7.5), sum of floors", several);
    let _ = std::fs::remove_dir_all(&dir);
}
