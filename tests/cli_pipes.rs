//! The command line at the ends of pipes and without a terminal: a closed stdout ends difflab quietly
//! (status 0 or 141, as Unix tools do), and the dashboard refuses to start without a terminal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

fn difflab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_difflab"))
}

/// Runs `args`, reads the first bytes of stdout, closes it, and returns the exit status and stderr.
fn read_head_then_close(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = difflab()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // The read end is dropped here: every later write by difflab hits a closed pipe.
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_quiet_end(args: &[&str]) {
    let (status, stderr) = read_head_then_close(args);
    let quiet =
        status.code() == Some(0) || status.signal() == Some(13) || status.code() == Some(141);
    assert!(quiet, "{args:?}: {status:?}, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

#[test]
fn a_closed_stdout_ends_schedule_quietly() {
    // 1000 steps of JSON are far more than a pipe buffer holds, so difflab writes after the close.
    assert_quiet_end(&["schedule", "ddpm", "--steps", "1000", "--json"]);
}

#[test]
fn a_closed_stdout_ends_metrics_quietly() {
    let runs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/metrics");
    assert_quiet_end(&["metrics", runs]);
}

#[test]
fn the_dashboard_without_a_terminal_says_it_needs_one() {
    let exp = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/analytic.toml");
    let out = difflab()
        .args(["ui", exp])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the dashboard needs a terminal") && stderr.contains("difflab run"),
        "{stderr}"
    );
}

#[test]
fn demo_needs_two_seeds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_difflab"))
        .args(["demo", "--seeds", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--seeds") && stderr.contains("2..=1000000"),
        "{stderr}"
    );
}
