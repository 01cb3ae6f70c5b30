//! `difflab metrics` end to end: the summary table, plots, and --follow.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn difflab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_difflab"))
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/metrics")
}

#[test]
fn summary_table() {
    let out = difflab().arg("metrics").arg(data()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().next().unwrap();
    for col in ["run", "tag", "points", "last", "at step", "min"] {
        assert!(header.contains(col), "{header}");
    }
    let row = text
        .lines()
        .find(|l| l.starts_with("tb/simple ") && l.contains("train/loss"))
        .expect("a row for tb/simple train/loss");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[2], "50");
    assert_eq!(cells[4], "49");
    assert!(
        text.contains("tb/corrupt_crc: skipped 2 bad records"),
        "{text}"
    );
    assert!(text.contains("tb/truncated: skipped"), "{text}");
}

#[test]
fn tag_filter_and_smoothing() {
    let out = difflab()
        .args(["metrics", "--tag", "train/*", "--smooth", "0.9"])
        .arg(data().join("tb/simple"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("smoothed"));
    assert_eq!(text.lines().filter(|l| l.contains("train/")).count(), 2);

    let out = difflab()
        .args(["metrics", "--tag", "fid"])
        .arg(data().join("tb/simple"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no tag matches fid"));

    let out = difflab()
        .args(["metrics", "--smooth", "1.5"])
        .arg(data())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn plots_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("curves.png");
    let out = difflab()
        .args(["metrics", "--smooth", "0.6", "--plot"])
        .arg(&png)
        .arg(data())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 10_000);

    let svg = dir.path().join("curves.svg");
    let out = difflab()
        .args([
            "metrics", "--log-y", "--x", "relative", "--tag", "loss", "--plot",
        ])
        .arg(&svg)
        .arg(data())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"));
    assert!(
        text.contains("train/loss\n</text>"),
        "the panel title is text"
    );
    assert!(text.contains("time since start (s)"));

    let out = difflab()
        .args(["metrics", "--plot", "x.gif"])
        .arg(data())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn follow_streams_new_values() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("train.jsonl");
    std::fs::write(&log, b"{\"step\": 0, \"loss\": 1.0}\n").unwrap();
    let mut child = difflab()
        .args([
            "metrics",
            "--follow",
            "--follow-for",
            "20",
            "--smooth",
            "0.5",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let wait_for = |pred: &dyn Fn(&str) -> bool, limit: Duration| -> Option<String> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    assert!(wait_for(&|l| l.starts_with("following"), Duration::from_secs(10)).is_some());
    let t = Instant::now();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"{\"step\": 1, \"loss\": 0.5}\n").unwrap();
    f.flush().unwrap();
    let line = wait_for(&|l| l.contains("step=1"), Duration::from_secs(3)).expect("streamed line");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(
        line.contains("loss") && line.contains("value=0.5"),
        "{line}"
    );
    // Debiased EMA of [1.0, 0.5] with weight 0.5: (0.25 + 0.25) / 0.75.
    assert!(line.contains("smoothed=0.666667"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

fn runs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runs")
}

#[test]
fn json_diff_and_image_strips_of_wandb_mlflow_and_tensorboard_runs() {
    let out = difflab()
        .args(["metrics", "--json"])
        .arg(runs())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let grad = &json["runs"]["wandb_offline/dlabwb01"]["scalars"]["train/grad_norm"];
    assert_eq!(grad["nan"], 1, "{grad}");
    let inf =
        &json["runs"]["mlflow_sqlite/difflab-fixtures/ddpm-base"]["scalars"]["train/grad_norm"];
    assert_eq!(inf["inf"], 1, "{inf}");

    let out = difflab()
        .args(["metrics", "--diff"])
        .arg(runs().join("mlflow_sqlite"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("learning_rate"))
        .expect(&text);
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["learning_rate", "5e-05", "0.0001"]
    );
    assert!(!text.contains("train_batch_size  16  16"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let out = difflab()
        .args(["metrics", "--images"])
        .arg(dir.path())
        .arg(runs().join("tb_images"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // validation: a 64×16 grid at steps 0, 20 and 40, rows 2 pixels apart.
    let strip = image::open(dir.path().join("validation.png")).unwrap();
    assert_eq!((strip.width(), strip.height()), (64, 3 * 16 + 2 * 2));
    // validation_tf: 4 images of 16×16 a step, 2 pixels apart.
    let strip = image::open(dir.path().join("validation_tf.png")).unwrap();
    assert_eq!(
        (strip.width(), strip.height()),
        (4 * 16 + 3 * 2, 3 * 16 + 2 * 2)
    );
    assert!(dir.path().join("noise/gray.png").is_file());
}
