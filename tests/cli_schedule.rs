//! `difflab schedule` as a user runs it: a sampler it cannot show is named with what to do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::process::Command;

/// `difflab schedule ARGS`: its exit status and stderr.
fn schedule(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_difflab"))
        .arg("schedule")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_flow_matching_base_config_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("scheduler_config.json");
    std::fs::write(
        &config,
        r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}"#,
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let (ok, stderr) = schedule(&["ddim", "--steps", "5", "--base", c]);
    assert!(!ok, "{stderr}");
    let expected = format!(
        "{c}: scheduler class \"FlowMatchEulerDiscreteScheduler\" is a flow-matching scheduler"
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains("flow-matching schedulers are not implemented in difflab yet"),
        "{stderr}"
    );
}
