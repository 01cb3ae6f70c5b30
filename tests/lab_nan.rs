//! A real ONNX model whose output is NaN for some timesteps, run through ONNX Runtime in a lab run: only
//! the cells that meet such a timestep fail, with the step and timestep named; the others finish; the
//! failed cell is written as failed and runs again next time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::experiment::Experiment;
use difflab::lab::{LabEvent, Results, RunOptions, start};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difflab-nan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn experiment(dir: &Path) -> Experiment {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/nan_between_450_and_550.onnx");
    let text = format!(
        "[model]\npath = {:?}\nproviders = [\"cpu\"]\n[sampling]\nseeds = 2\nbatch = 8\n\
         [[sampler]]\nname = \"ddim\"\nsteps = [5, 20]\n",
        model.display().to_string()
    );
    let path = dir.join("nan.toml");
    std::fs::write(&path, text).unwrap();
    Experiment::load(&path).unwrap()
}

fn run(e: &Experiment) -> Vec<LabEvent> {
    let lab = start(e.clone(), RunOptions::default());
    let events: Vec<LabEvent> = lab.events.iter().collect();
    lab.join();
    events
}

#[test]
fn nan_output_fails_only_the_cell_that_meets_it() {
    let dir = temp_dir("cells");
    let e = experiment(&dir);
    let events = run(&e);
    let done: Vec<(usize, Option<String>, bool)> = events
        .iter()
        .filter_map(|ev| match ev {
            LabEvent::CellDone {
                cell,
                result,
                cached,
                ..
            } => Some((*cell, result.error.clone(), *cached)),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 2, "{events:#?}");
    let ok = done.iter().find(|d| d.0 == 0).unwrap();
    assert_eq!(ok.1, None, "ddim 5 never meets 450 < t < 550");
    let failed = done.iter().find(|d| d.0 == 1).unwrap();
    let error = failed.1.as_deref().expect("ddim 20 fails");
    // 2 seeds × 4×8×8 values, all NaN at the step whose timestep is 500.
    assert!(
        error.starts_with("model output is not finite at step ")
            && error.ends_with("/20, t = 500: 512 of 512 values are NaN"),
        "{error}"
    );
    let logged = events.iter().any(|ev| {
        matches!(ev, LabEvent::Log(l) if l.starts_with("ddim 20 failed: ") && l.contains("model output is not finite at step 10/20"))
    });
    assert!(logged, "the log names the cell: {events:#?}");
    let Some(LabEvent::Finished {
        error, cancelled, ..
    }) = events.last()
    else {
        panic!("the run ends with Finished")
    };
    assert!(
        error.is_none() && !cancelled,
        "the run itself goes on: {error:?}"
    );

    let results = Results::load(&e.output_dir.join("results.json"));
    assert_eq!(results.cells.len(), 2);
    let by_steps = |s: usize| results.cells.iter().find(|c| c.steps == s).unwrap();
    assert!(!by_steps(5).failed());
    assert_eq!(by_steps(20).error.as_deref(), Some(error_of(&done)));
    let csv = std::fs::read_to_string(e.output_dir.join("results.csv")).unwrap();
    assert!(
        csv.lines().next().unwrap().ends_with(",status,error"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.contains(",failed,\"model output is not finite at step 10/20, t = 500")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("ddim 5,") && l.ends_with(",done,")),
        "{csv}"
    );

    // Next run: the finished cell is reused, the failed one runs (and fails) again.
    let again = run(&e);
    let cached: Vec<(usize, bool)> = again
        .iter()
        .filter_map(|ev| match ev {
            LabEvent::CellDone { cell, cached, .. } => Some((*cell, *cached)),
            _ => None,
        })
        .collect();
    assert!(cached.contains(&(0, true)), "{cached:?}");
    assert!(
        cached.contains(&(1, false)),
        "a failed cell is not up to date: {cached:?}"
    );
}

fn error_of(done: &[(usize, Option<String>, bool)]) -> &str {
    done.iter().find_map(|d| d.1.as_deref()).unwrap()
}

#[test]
fn results_written_before_the_status_field_still_read() {
    let dir = temp_dir("old");
    let old = r#"{"experiment":"x","cells":[{"name":"a","label":"A","class":"DDIMScheduler","steps":5,"nfe":5,
        "samples":2,"wall_s":0.1,"model_ms_per_step":1.0,"sampler_ms_per_step":0.1,"ms_per_sample":5.0,
        "fid":null,"kid":null,"kid_std":null,"provider":"cpu","grid":"cells/a.png","key":"k"}],
        "model_calls":5,"unbatched_model_calls":5}"#;
    let path = dir.join("results.json");
    std::fs::write(&path, old).unwrap();
    let results = Results::load(&path);
    assert_eq!(results.cells.len(), 1);
    assert!(!results.cells[0].failed());
}

#[test]
fn difflab_run_says_which_cell_failed_and_writes_the_others() {
    let dir = temp_dir("cli");
    let e = experiment(&dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_difflab"))
        .arg("run")
        .arg(dir.join("nan.toml"))
        .arg("--out")
        .arg(dir.join("out"))
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a run with a failed cell exits non-zero"
    );
    assert!(
        stderr.contains("ddim 20 failed: model output is not finite at step 10/20, t = 500: 512 of 512 values are NaN"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 of 2 cells failed (ddim 20); the others are written; results.json and results.csv say why"),
        "{stderr}"
    );
    assert!(dir.join("out/comparison.png").is_file(), "{stderr}");
    assert!(dir.join("out/cells/ddim_5.png").is_file(), "{stderr}");
    drop(e);
}

fn pipelines() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipelines")
}

/// A bare float16 U-Net with its text encoder and VAE decoder named one by one (`make_fp16.py`).
fn fp16_parts(dir: &Path, text_encoder: &str, vae_decoder: &str) -> Experiment {
    let p = pipelines();
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\nsample_shape = [4, 8, 8]\n\
         text_encoder = {:?}\ntokenizer = {:?}\nvae_decoder = {:?}\n\
         [conditioning]\nprompts = [\"a cat\"]\n[sampling]\nseeds = 2\n\
         [[sampler]]\nname = \"ddim\"\nsteps = 2\n",
        p.join("sd1-fp16/unet/model.onnx").display().to_string(),
        p.join(text_encoder).display().to_string(),
        p.join("sd1-fp16/tokenizer").display().to_string(),
        p.join(vae_decoder).display().to_string(),
    );
    let path = dir.join("fp16.toml");
    std::fs::write(&path, text).unwrap();
    Experiment::load(&path).unwrap()
}

/// The SDXL fp16 VAE failure: a float16 VAE decoder whose activations overflow returns NaN. The cell fails
/// naming the decoder and what to use instead; no NaN samples are written; the config's force_upcast is
/// named in the log. The same decoder exported in float32 decodes the same latents.
#[test]
fn a_vae_decoder_returning_nan_fails_the_cell_naming_it() {
    let dir = temp_dir("vae");
    let e = fp16_parts(
        &dir,
        "sd1-fp16/text_encoder/model.onnx",
        "overflow/vae_decoder/model.onnx",
    );
    let events = run(&e);
    let error = events
        .iter()
        .find_map(|ev| match ev {
            LabEvent::CellDone { result, .. } => Some(result.error.clone()),
            _ => None,
        })
        .expect("the cell ends")
        .expect("the cell fails");
    assert!(
        error.contains("overflow/vae_decoder/model.onnx: the VAE decoder's output is not finite for finite latents (24576 of 24576 values are NaN)")
            && error.contains("float32 export of the VAE"),
        "{error}"
    );
    let upcast = events.iter().any(|ev| {
        matches!(ev, LabEvent::Log(l) if l.contains("sets force_upcast") && l.contains("the graph takes float16"))
    });
    assert!(upcast, "force_upcast is named: {events:#?}");
    assert!(!dir.join("out/samples").exists());

    let dir = temp_dir("vae-f32");
    let e = fp16_parts(
        &dir,
        "sd1-fp16/text_encoder/model.onnx",
        "overflow/vae_decoder_f32/model.onnx",
    );
    let events = run(&e);
    let errors: Vec<_> = events
        .iter()
        .filter_map(|ev| match ev {
            LabEvent::CellDone { result, .. } => Some(result.error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors, vec![None], "{events:#?}");
}

/// A float16 text encoder whose hidden states overflow stops the run with the encoder and output named.
#[test]
fn a_text_encoder_returning_inf_is_named() {
    let dir = temp_dir("text");
    let e = fp16_parts(
        &dir,
        "overflow/text_encoder/model.onnx",
        "sd1-fp16/vae_decoder/model.onnx",
    );
    let events = run(&e);
    let Some(LabEvent::Finished { error, .. }) = events.last() else {
        panic!("the run ends with Finished: {events:#?}")
    };
    let error = error.as_deref().expect("the run fails");
    assert!(
        error.contains("overflow/text_encoder/model.onnx: the text encoder's output `last_hidden_state` is not finite (")
            && error.contains("Inf")
            && error.contains("float32 export of the text encoder"),
        "{error}"
    );
}
