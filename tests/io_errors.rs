//! I/O failures name the path and what difflab was doing, in words: no OS error codes and no debug
//! dumps reach the user.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A file that is in the way of folders below it.
fn a_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difflab-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("afile");
    std::fs::write(&file, "not a folder").unwrap();
    file
}

fn stderr_of(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_difflab"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn each_failure_names_its_path_and_what_was_being_done() {
    let file = a_file();
    let f = file.display().to_string();
    let below = file.join("out");
    let (png, json) = (file.join("x.png"), file.join("c.json"));
    let cases: Vec<(Vec<&std::ffi::OsStr>, String)> = vec![
        (
            vec![
                "run".as_ref(),
                "experiments/analytic.toml".as_ref(),
                "--out".as_ref(),
                below.as_os_str(),
            ],
            format!(
                "cannot create the output folder {}: {f} is a file, not a folder",
                below.display()
            ),
        ),
        (
            vec![
                "metrics".as_ref(),
                "tests/data/metrics".as_ref(),
                "--plot".as_ref(),
                png.as_os_str(),
            ],
            format!("cannot write the plot {f}/x.png: {f} is a file, not a folder"),
        ),
        (
            vec![
                "schedule".as_ref(),
                json.as_os_str(),
                "--steps".as_ref(),
                "3".as_ref(),
            ],
            format!("cannot read scheduler config {f}/c.json: {f} is a file, not a folder"),
        ),
        (
            vec!["metrics".as_ref(), "no/such/logs".as_ref()],
            "cannot read no/such/logs: No such file or directory".to_string(),
        ),
    ];
    for (args, message) in cases {
        let stderr = stderr_of(&args);
        assert!(
            stderr.contains(&message),
            "{args:?}: {stderr:?} should contain {message:?}"
        );
        assert!(
            !stderr.contains("os error") && !stderr.contains("Os {"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            stderr.matches("No such file").count().min(1),
            usize::from(message.contains("No such file")),
            "said once: {stderr}"
        );
    }
}
