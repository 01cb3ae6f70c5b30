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

/// On a flow-matching base config `euler` is flow Euler (timesteps σ·1000 on SD3's shifted grid) and `ddim`,
/// which has no flow form, is refused naming the samplers that have one.
#[test]
fn a_flow_matching_base_config_makes_short_names_flow_samplers() {
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
    assert!(
        stderr.contains("`ddim` has no flow-matching form"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_difflab"))
        .args(["schedule", "euler", "--steps", "28", "--base", c])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("FlowMatchEulerDiscreteScheduler"),
        "{stdout}"
    );
    // SD3's 28-step grid: 1000, 987.3806, ..., 8.9286 (diffusers).
    assert!(stdout.contains("987.38"), "{stdout}");
}

/// An unknown name points to the one meant instead of listing them all; A1111's DPM++ 2S a is a sampler of
/// the k-diffusion loop family, two calls a step but the last.
#[test]
fn an_unknown_sampler_points_to_the_closest_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_difflab"))
        .args(["schedule", "DPM++ 2S a", "--steps", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("KDiffusionSampler (DPM++ 2S a), 5 steps"),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(char::is_numeric))
            .count(),
        9,
        "{stdout}"
    );
    let (ok, stderr) = schedule(&["DPM++ 2M Karas", "--steps", "5"]);
    assert!(!ok, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: unknown sampler \"DPM++ 2M Karas\"; did you mean `dpm++2m-karras`?"
    );
}

/// `--schedule` takes an experiment's schedule names: Align Your Steps' SD 1.x table on Euler a starts at
/// 14.614641 and takes 6.474576 next; a class without sigma schedules says so, as does an unknown name.
#[test]
fn a_web_ui_schedule_is_printed_step_by_step() {
    let out = Command::new(env!("CARGO_BIN_EXE_difflab"))
        .args(["schedule", "Euler a", "--schedule", "ays", "--steps", "10"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("14.614641     6.474576"), "{stdout}");
    let (ok, stderr) = schedule(&["ddim", "--schedule", "kl_optimal", "--steps", "10"]);
    assert!(
        !ok && stderr.contains("ddim (DDIMScheduler) has no \"kl_optimal\" schedule"),
        "{stderr}"
    );
    let (ok, stderr) = schedule(&["euler", "--schedule", "cosine", "--steps", "10"]);
    assert!(
        !ok && stderr.contains("unknown schedule \"cosine\"; use one of karras"),
        "{stderr}"
    );
}
