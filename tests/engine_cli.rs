//! `difflab info` as a user runs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn info(args: &[&str]) -> Output {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx");
    let child = Command::new(env!("CARGO_BIN_EXE_difflab"))
        .arg("info")
        .args(args)
        .current_dir(data)
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let pid = child.id();
    let out = child.wait_with_output().expect("the binary runs");
    // `info` profiles the session to count nodes per provider; nothing may be left behind, even on errors.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("difflab-profile-{pid}-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{args:?} left {leftovers:?}");
    out
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn info_prints_runtime_io_roles_and_provider() {
    let out = info(&[
        "tiny_f32.onnx",
        "--ep",
        "cpu",
        "--batch",
        "4",
        "--runs",
        "2",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in [
        "runtime   ONNX Runtime 1.",
        "found via",
        "sample                   [batch, 4, 8, 8]     float32  -> noisy sample",
        "timestep                 [batch]              int64    -> timestep",
        "out_sample",
        "runs on   cpu (CPUExecutionProvider)",
        "on CPUExecutionProvider",
        "memory    peak ",
        "batch 4",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
}

#[test]
fn info_with_an_unavailable_provider_says_so_and_names_the_fallback() {
    let out = info(&[
        "tiny_f32.onnx",
        "--ep",
        "cuda",
        "--batch",
        "0",
        "--runs",
        "1",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("cuda      not available"), "{stdout}");
    assert!(
        stdout.contains("cpu       runs the model (fallback; not requested)"),
        "{stdout}"
    );
    assert!(stdout.contains("runs on   cpu"), "{stdout}");

    let out = info(&["tiny_f32.onnx", "--ep", "cuda", "--no-fallback"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: execution provider cuda did not run the model"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn info_on_bad_models_gives_one_clear_error() {
    for (model, needle) in [
        ("bad_input_names.onnx", "no input for the noisy sample"),
        ("bad_rank.onnx", "has rank 2"),
        ("bad_output_shape.onnx", "must have the sample's shape"),
        ("hidden_bad_output_shape.onnx", "came back with shape"),
        ("not_a_model.onnx", "is not an ONNX model"),
        ("no_such_model.onnx", "no such model file"),
    ] {
        let out = info(&[model, "--ep", "cpu"]);
        assert!(!out.status.success(), "{model} succeeded");
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("error: "), "{model}: {stderr}");
        assert!(stderr.contains(needle), "{model}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{model}: {stderr}");
    }
}

#[test]
fn info_with_a_missing_runtime_explains_how_to_get_one() {
    let out = info(&["tiny_f32.onnx", "--runtime", "/no/such/libonnxruntime.so"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/no/such/libonnxruntime.so"), "{stderr}");
    assert!(stderr.contains("pip install onnxruntime"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--role` on a network that is not a denoiser is not used; the user is told, with why it is not read as
/// a denoiser.
#[test]
fn info_says_when_roles_are_not_used_on_a_network_that_is_not_a_denoiser() {
    let features = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mnist16-features.onnx");
    let features = features.to_str().unwrap();
    let out = info(&[features, "--ep", "cpu", "--role", "sample=image"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        text(&out.stdout).contains("use       a feature network for FID/KID"),
        "{}",
        text(&out.stdout)
    );
    let expected = format!(
        "warning: --role sample=image was not used: {features} is described as the network it is, not as a \
         denoiser: the model has no input for the timestep"
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn a_dynamic_sample_shape_is_given_as_the_error_says_c_h_w() {
    let unet = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits-sd/unet/model.onnx");
    let unet = unet.to_str().unwrap();
    let asked = info(&[unet, "--ep", "cpu", "--runs", "1"]);
    let advice = text(&asked.stderr);
    assert!(!asked.status.success());
    assert!(advice.contains("`--sample-shape C,H,W`"), "{advice}");
    let given = info(&[
        unet,
        "--ep",
        "cpu",
        "--runs",
        "1",
        "--sample-shape",
        "4,8,8",
    ]);
    assert!(given.status.success(), "{}", text(&given.stderr));
    assert!(text(&given.stdout).contains("sample    4×8×8"));
    let wrong = info(&[unet, "--sample-shape", "4,8"]);
    let message = text(&wrong.stderr);
    assert!(
        message
            .contains("sample_shape [4, 8] has 2 sizes; give channels, height and width [C, H, W]"),
        "{message}"
    );
}

/// ONNX Runtime warns that it drops a weight no node reads; difflab passes that on wherever it ran the model.
#[test]
fn onnx_runtime_warnings_reach_info_the_run_log_and_results() {
    let unused = "ONNX Runtime warning: Removing initializer 'unused_weight'";
    let out = info(&["tiny_unused_initializer.onnx", "--ep", "cpu", "--runs", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(unused), "{}", text(&out.stderr));

    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/tiny_unused_initializer.onnx");
    let dir = std::env::temp_dir().join(format!("difflab-ortlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let experiment = dir.join("exp.toml");
    std::fs::write(
        &experiment,
        format!(
            "output = \"out\"\n[model]\npath = {model:?}\nproviders = [\"cpu\"]\n[sampling]\nseeds = 2\n\
             [[sampler]]\nname = \"ddim\"\nsteps = 2\n"
        ),
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_difflab"))
        .arg("run")
        .arg(&experiment)
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains(unused), "{stderr}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/results.json")).unwrap())
            .unwrap();
    let warnings = results["cells"][0]["warnings"].to_string();
    assert!(warnings.contains(unused), "{warnings}");
    let _ = std::fs::remove_dir_all(&dir);
}
