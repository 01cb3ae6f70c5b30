//! TensorRT shape profiles without TensorRT: the graph inputs read from the file (no ONNX Runtime) are the ones
//! ONNX Runtime declares, on every checked-in network; each network of a pipeline gets the profile of what the
//! lab will feed it; a run that asks for TensorRT where there is none falls back to the CPU.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::engine::graph_io::declared_io;
use difflab::engine::pipeline_folder::Family;
use difflab::engine::trt_profile::ShapeHints;
use difflab::engine::{OnnxModel, OnnxOptions, ProviderOptions};
use difflab::experiment::Experiment;
use difflab::lab::tensorrt::{text_lengths, unet_batch, with_profile};
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

fn experiment(dir: &Path, providers: &str) -> Experiment {
    let sd1 = root().join("tests/data/pipelines/sd1");
    let text = format!(
        r#"
[model]
path = "{}"
providers = {providers}
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
    Experiment::load(&path).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difflab-trt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn each_network_of_a_pipeline_gets_the_profile_of_what_the_lab_feeds_it() {
    let dir = temp_dir("profiles");
    let e = experiment(&dir, r#"["tensorrt", "cpu"]"#);
    // 4 cells (2 step counts × 2 scales), batch 4: one sample of each cell per call, the two guided cells'
    // twice: 1 + 2 + 1 + 2 = 6.
    let batch = unet_batch(&e);
    assert_eq!(batch, [1, 6, 6]);
    let sd1 = root().join("tests/data/pipelines/sd1");
    let hints = ShapeHints {
        batch,
        sample: Some([4, 8, 8]),
        frames: None,
        sequence: text_lengths(&e, Family::StableDiffusion, &[&sd1.join("tokenizer")]).denoiser,
    };
    let (options, note) =
        with_profile(&OnnxOptions::default(), &sd1.join("unet/model.onnx"), hints);
    let profile = options.providers.trt_profile.unwrap();
    assert_eq!(profile.min, "sample:1x4x8x8,encoder_hidden_states:1x77x8");
    assert_eq!(profile.max, "sample:6x4x8x8,encoder_hidden_states:6x77x8");
    assert!(note.unwrap().contains(&profile.key()));
    let text = ShapeHints {
        batch: [1, 3, 3],
        sample: None,
        ..hints
    };
    let (options, _) = with_profile(
        &OnnxOptions::default(),
        &sd1.join("text_encoder/model.onnx"),
        text,
    );
    assert_eq!(options.providers.trt_profile.unwrap().max, "input_ids:3x77");
    let vae = ShapeHints {
        batch: [1, 4, 4],
        sequence: None,
        ..hints
    };
    let (options, _) = with_profile(
        &OnnxOptions::default(),
        &sd1.join("vae_decoder/model.onnx"),
        vae,
    );
    assert_eq!(
        options.providers.trt_profile.unwrap().max,
        "latent_sample:4x4x8x8"
    );
    // Without TensorRT among the providers, nothing is derived.
    let cpu = OnnxOptions {
        providers: ProviderOptions::cpu(),
        ..OnnxOptions::default()
    };
    let (options, note) = with_profile(&cpu, &sd1.join("unet/model.onnx"), hints);
    assert_eq!((options.providers.trt_profile, note), (None, None));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The experiment text with `model` and `conditioning` lines, loaded.
fn experiment_with(dir: &Path, model: &str, conditioning: &str) -> Experiment {
    let text = format!(
        "output = \"out\"\n[model]\npath = {model:?}\nproviders = [\"tensorrt\", \"cpu\"]\n[conditioning]\n\
         {conditioning}\n[[sampler]]\nname = \"euler\"\nsteps = 2\n"
    );
    std::fs::write(dir.join("exp.toml"), text).unwrap();
    Experiment::load(&dir.join("exp.toml")).unwrap()
}

/// SD3's transformer takes 77 CLIP tokens and T5's after them, each encoder its own length; Sana's Gemma takes
/// the negative prompt's 16 tokens and the prompts' 867 (the instruction's 853 + 16 − 2), its transformer 16.
#[test]
fn each_text_network_gets_the_length_it_is_fed() {
    let dir = temp_dir("lengths");
    let pipelines = root().join("tests/data/pipelines");
    let sd3 = pipelines.join("sd3");
    let e = experiment_with(
        &dir,
        sd3.to_str().unwrap(),
        "prompts = [\"a cat\"]\nmax_sequence_length = 32",
    );
    let tokenizers = ["tokenizer", "tokenizer_2", "tokenizer_3"].map(|t| sd3.join(t));
    let refs: Vec<&Path> = tokenizers.iter().map(PathBuf::as_path).collect();
    let lengths = text_lengths(&e, Family::StableDiffusion3, &refs);
    assert_eq!(
        lengths.encoders,
        vec![Some([77; 3]), Some([77; 3]), Some([32; 3])]
    );
    assert_eq!(lengths.denoiser, Some([109; 3]));
    let hints = ShapeHints {
        batch: [1, 2, 2],
        sample: Some([16, 8, 8]),
        frames: None,
        sequence: lengths.denoiser,
    };
    let (options, _) = with_profile(
        &OnnxOptions::default(),
        &sd3.join("transformer/model.onnx"),
        hints,
    );
    assert!(
        options
            .providers
            .trt_profile
            .unwrap()
            .max
            .contains("encoder_hidden_states:2x109x")
    );

    let sana = pipelines.join("sana");
    let e = experiment_with(
        &dir,
        sana.to_str().unwrap(),
        "prompts = [\"a cat\"]\nmax_sequence_length = 16",
    );
    let lengths = text_lengths(&e, Family::Sana, &[&sana.join("tokenizer")]);
    assert_eq!(lengths.encoders, vec![Some([16, 867, 867])]);
    assert_eq!(lengths.denoiser, Some([16; 3]));
    let hints = ShapeHints {
        batch: [1, 2, 2],
        sample: Some([4, 16, 32]),
        frames: None,
        sequence: lengths.encoders[0],
    };
    let (options, _) = with_profile(
        &OnnxOptions::default(),
        &sana.join("text_encoder/model.onnx"),
        hints,
    );
    let profile = options.providers.trt_profile.unwrap();
    assert_eq!(
        (profile.min.as_str(), profile.max.as_str()),
        (
            "input_ids:1x16,attention_mask:1x16",
            "input_ids:2x867,attention_mask:2x867"
        )
    );
    let e = experiment_with(
        &dir,
        sana.to_str().unwrap(),
        "prompts = [\"a cat\"]\nmax_sequence_length = 16\ncomplex_human_instruction = false",
    );
    let lengths = text_lengths(&e, Family::Sana, &[&sana.join("tokenizer")]);
    assert_eq!(lengths.encoders, vec![Some([16; 3])]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tensorrt_run_without_tensorrt_falls_back_quietly() {
    let dir = temp_dir("fallback");
    let lab = start(
        experiment(&dir, r#"["tensorrt", "cpu"]"#),
        RunOptions::default(),
    );
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
    // The profile is logged only for a network TensorRT really runs.
    assert!(
        !logs.iter().any(|l| l.contains("TensorRT profile")),
        "{logs:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// In a child process (see below): takes the engine cache's build lock, records when it held it, and says
/// whether it had to wait.
fn hold_build_lock_as_child(dir: &Path, me: &str) {
    // Both children ask for the lock at about the same moment, however slowly each started.
    std::fs::write(dir.join(format!("{me}.ready")), "").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !["a", "b"]
        .iter()
        .all(|c| dir.join(format!("{c}.ready")).exists())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the other child never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let lock = difflab::engine::build_lock::BuildLock::acquire(dir).unwrap();
    let start = std::time::SystemTime::now();
    std::thread::sleep(std::time::Duration::from_millis(600));
    let span = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let line = format!(
        "{} {} {}\n",
        span(start),
        span(std::time::SystemTime::now()),
        lock.wait_note().is_some()
    );
    std::fs::write(dir.join(format!("{me}.held")), line).unwrap();
}

/// Two processes that build engines into one cache at once: one holds the lock while the other waits,
/// so their builds never overlap.
#[test]
fn two_processes_building_engines_into_one_cache_take_turns() {
    if let (Ok(dir), Ok(me)) = (
        std::env::var("DIFFLAB_LOCK_DIR"),
        std::env::var("DIFFLAB_LOCK_ME"),
    ) {
        hold_build_lock_as_child(Path::new(&dir), &me);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|me| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "two_processes_building_engines_into_one_cache_take_turns",
                ])
                .env("DIFFLAB_LOCK_DIR", dir.path())
                .env("DIFFLAB_LOCK_ME", me)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let held: Vec<(f64, f64, bool)> = ["a", "b"]
        .iter()
        .map(|me| {
            let text = std::fs::read_to_string(dir.path().join(format!("{me}.held"))).unwrap();
            let f: Vec<&str> = text.split_whitespace().collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2] == "true")
        })
        .collect();
    let (first, second) = match held[0].0 < held[1].0 {
        true => (held[0], held[1]),
        false => (held[1], held[0]),
    };
    assert!(second.0 >= first.1, "the holds overlap: {held:?}");
    assert!(
        second.2 && !first.2,
        "the second should have waited: {held:?}"
    );
}
