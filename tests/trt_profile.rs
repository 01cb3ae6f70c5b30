//! TensorRT shape profiles without TensorRT: the graph inputs read from the file (no ONNX Runtime) are the ones
//! ONNX Runtime declares, on every checked-in network, and a lab run that asks for TensorRT logs the profile it
//! would build for each network of a pipeline, then falls back to the CPU as the machine requires.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::engine::graph_io::declared_io;
use difflab::engine::{OnnxModel, OnnxOptions, ProviderOptions};
use difflab::experiment::Experiment;
use difflab::lab::{LabEvent, RunOptions, start};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn every_network() -> Vec<PathBuf> {
    let mut files = vec![
        root().join("models/mnist16-unet.onnx"),
        root().join("models/mnist16-features.onnx"),
    ];
    for folder in ["sd1", "sd2v", "sdxl", "classcond"] {
        let dir = root().join("tests/data/pipelines").join(folder);
        for part in ["unet", "vae_decoder", "text_encoder", "text_encoder_2"] {
            let file = dir.join(part).join("model.onnx");
            if file.is_file() {
                files.push(file);
            }
        }
    }
    files
}

#[test]
fn declared_inputs_equal_onnx_runtimes_on_every_checked_in_network() {
    let options = OnnxOptions {
        providers: ProviderOptions::cpu(),
        ..OnnxOptions::default()
    };
    let files = every_network();
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let (inputs, outputs) = declared_io(&file).unwrap();
        let model = OnnxModel::open(&file, &options).unwrap();
        assert_eq!(inputs, model.inputs(), "{}", file.display());
        // Outputs by name only: ONNX Runtime refines declared output shapes by shape inference (Optimum
        // declares SDXL's pooled `text_embeds` [batch, sequence_length]; it is [batch, 12]).
        let names = |specs: &[difflab::engine::roles::TensorSpec]| {
            specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(
            names(&outputs),
            names(model.outputs()),
            "{}",
            file.display()
        );
    }
}

#[test]
fn a_file_that_is_not_onnx_is_a_clear_error() {
    let err = declared_io(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("Cargo.toml")
            .as_path(),
    )
    .unwrap_err();
    assert!(err.contains("Cargo.toml") && err.contains("ONNX"), "{err}");
}

#[test]
fn a_tensorrt_run_logs_each_networks_profile_and_falls_back() {
    let dir = std::env::temp_dir().join(format!("difflab-trt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sd1 = root().join("tests/data/pipelines/sd1");
    let text = format!(
        r#"
[model]
path = "{}"
providers = ["tensorrt", "cpu"]
[conditioning]
prompts = ["a cat", "a dog", "a car"]
[sampling]
seeds = 2
batch = 4
[[sampler]]
name = "ddim"
steps = [2, 3]
guidance = [1, 5]
"#,
        sd1.display()
    );
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    let experiment = Experiment::load(&path).unwrap();
    let lab = start(experiment, RunOptions::default());
    let (mut logs, mut error, mut provider) = (Vec::new(), None, String::new());
    for event in lab.events.iter() {
        match event {
            LabEvent::Log(line) => logs.push(line),
            LabEvent::Planned { provider: p, .. } => provider = p,
            LabEvent::Finished { error: e, .. } => error = e,
            _ => {}
        }
    }
    lab.join();
    assert_eq!(error, None);
    assert_eq!(provider, "cpu");
    let profile = |part: &str| {
        logs.iter()
            .find(|l| l.starts_with("TensorRT profile for") && l.contains(part))
            .unwrap_or_else(|| panic!("no profile for {part} in {logs:#?}"))
            .clone()
    };
    // 4 cells (2 steps × 2 scales) share calls; guided lanes run twice: batch max(4, 4) × 2 = 8.
    let unet = profile("unet");
    assert!(
        unet.contains("max sample:8x4x8x8,encoder_hidden_states:8x77x"),
        "{unet}"
    );
    assert!(unet.contains("min sample:1x4x8x8"), "{unet}");
    let vae = profile("vae_decoder");
    assert!(vae.contains("max latent_sample:4x4x8x8"), "{vae}");
    let text = profile("text_encoder");
    assert!(text.contains("max input_ids:3x77"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
