//! `difflab info` on a model whose output is NaN at the timestep it times: it still reports, and warns.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::Path;
use std::process::Command;

#[test]
fn info_warns_when_the_timed_output_is_not_finite() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx");
    let run = |model: &str| {
        Command::new(env!("CARGO_BIN_EXE_difflab"))
            .args(["info", model, "--ep", "cpu", "--runs", "1"])
            .current_dir(&data)
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .expect("the binary runs")
    };
    let out = run("nan_between_450_and_550.onnx");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: the model's output is not finite (batch 1, t = 500, a smooth test input): 256 of 256 values are NaN; a lab run with it fails"
        ),
        "{stderr}"
    );
    let fine = run("tiny_f32.onnx");
    assert!(!String::from_utf8_lossy(&fine.stderr).contains("not finite"));
}
