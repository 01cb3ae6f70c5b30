//! Logs that are not plain files: a FIFO in a log folder is passed by with a note saying so (reading it
//! would wait forever), a FIFO given directly is an error, and a CSV without a header is an error naming it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difflab-special-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {}",
        path.display()
    );
}

/// Runs difflab with `args`, failing the test if it has not finished within 20 s (a hang).
fn difflab(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_difflab"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("difflab {args:?} hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_fifo_in_a_log_folder_is_passed_by() {
    let dir = folder("in-folder");
    mkfifo(&dir.join("live.jsonl"));
    std::fs::write(dir.join("train.jsonl"), "{\"step\": 1, \"loss\": 0.5}\n").unwrap();
    let out = difflab(&["metrics".as_ref(), dir.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().count(),
        2,
        "a header and the one series: {stdout}"
    );
    assert!(stdout.lines().nth(1).unwrap().contains("loss"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!(
            "note: {}: skipped: it is a FIFO (named pipe), not a log file; reading it would wait for a \
             writer forever",
            dir.join("live.jsonl").display()
        ),
        "said once, on stderr"
    );
}

#[test]
fn a_fifo_given_directly_is_an_error_also_when_following() {
    let dir = folder("direct");
    let fifo = dir.join("live.jsonl");
    mkfifo(&fifo);
    for follow in [false, true] {
        let mut args = vec!["metrics".as_ref(), fifo.as_os_str()];
        if follow {
            args.push("--follow".as_ref());
        }
        let out = difflab(&args);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{} is not a regular file or folder (a FIFO, socket or device)",
                fifo.display()
            )),
            "{stderr}"
        );
    }
}

#[test]
fn a_csv_without_a_header_is_an_error_naming_it() {
    let dir = folder("headerless");
    let csv = dir.join("loss.csv");
    std::fs::write(&csv, "1,0.5\n2,0.4\n3,0.3\n").unwrap();
    let out = difflab(&["metrics".as_ref(), csv.as_os_str()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: this CSV log has no header row; difflab needs a first row naming the columns, e.g. step,loss",
            csv.display()
        )),
        "{stderr}"
    );
    // With a header the same numbers are a series.
    std::fs::write(&csv, "step,loss\n1,0.5\n2,0.4\n3,0.3\n").unwrap();
    let out = difflab(&["metrics".as_ref(), csv.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("loss"));
}

/// Following a folder with a FIFO in it reports it once, though the folder is walked again on every poll.
#[test]
fn a_followed_folder_reports_its_fifo_once() {
    use difflab::metrics::{FollowEvent, FollowOptions, Follower};
    let dir = folder("follow");
    mkfifo(&dir.join("live.jsonl"));
    std::fs::write(dir.join("train.jsonl"), "{\"step\": 1, \"loss\": 0.5}\n").unwrap();
    let options = FollowOptions {
        poll_interval: Duration::from_millis(20),
        ..FollowOptions::default()
    };
    let (follower, rx) = Follower::spawn(std::slice::from_ref(&dir), options).unwrap();
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut passed = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Ok(FollowEvent::PassedBy(p)) = rx.recv_timeout(left) {
            passed.push(p.to_string());
        }
    }
    follower.stop();
    assert_eq!(
        passed,
        [format!(
            "{}: skipped: it is a FIFO (named pipe), not a log file; reading it would wait for a writer forever",
            dir.join("live.jsonl").display()
        )]
    );
}
