//! W&B offline runs and MLflow stores followed live, as while training writes them: a `.wandb` file that
//! grows (a record cut at the end waits for its rest), rows MLflow commits to `mlflow.db` (journal and WAL
//! mode), lines appended to a file-store metric file — each arrives once, and what the follower ends with
//! is what reading the finished files gives.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use difflab::metrics::report::runs_json;
use difflab::metrics::{FactKind, FollowEvent, FollowOptions, Follower, Store};

const ARRIVAL: Duration = Duration::from_secs(5);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runs")
}

/// Applies events to `store` until `done` holds, for at most [`ARRIVAL`].
fn wait_until(
    rx: &Receiver<FollowEvent>,
    store: &mut Store,
    done: impl Fn(&Store) -> bool,
) -> bool {
    let deadline = Instant::now() + ARRIVAL;
    while !done(store) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        if let Ok(e) = rx.recv_timeout(left.min(Duration::from_millis(50))) {
            store.apply(&e);
        }
    }
    true
}

fn points(store: &Store, run: &str, tag: &str) -> usize {
    store
        .run(run)
        .and_then(|r| r.series(tag))
        .map_or(0, |s| s.len())
}

fn follow(root: &Path) -> (Follower, Receiver<FollowEvent>) {
    Follower::spawn(&[root.to_path_buf()], FollowOptions::default()).unwrap()
}

#[test]
fn a_growing_wandb_run_arrives_whole() {
    let source = fixtures().join("wandb_offline/wandb");
    let run_dir = std::fs::read_dir(&source)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("dlabwb01"))
        .unwrap();
    let bytes = std::fs::read(run_dir.join("run-dlabwb01.wandb")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir
        .path()
        .join("wandb/offline-run-20261206_223805-dlabwb01");
    copy_dir(&run_dir.join("files"), &folder.join("files"));
    let log = folder.join("run-dlabwb01.wandb");
    // Cut inside a record of the last block (the first holds the run record, its 80 KB config split over
    // three blocks): what is complete arrives, the rest waits.
    let cut = bytes.len() - 3_001;
    std::fs::write(&log, &bytes[..cut]).unwrap();
    let (_follower, rx) = follow(dir.path());
    let mut store = Store::new();
    assert!(wait_until(&rx, &mut store, |s| points(
        s,
        "dlabwb01",
        "train/loss"
    ) > 0));
    let early = points(&store, "dlabwb01", "train/loss");
    assert!(early < 30, "{early} points before the rest was written");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&bytes[cut..])
        .unwrap();
    let state = |s: &Store| {
        let facts = s.run("dlabwb01").map(|r| r.facts()).unwrap_or_default();
        facts.get(&(FactKind::Info, "state".into())).cloned()
    };
    // The exit record is the last: the run is finished once everything arrived.
    assert!(wait_until(&rx, &mut store, |s| state(s)
        == Some(serde_json::json!("finished"))));
    let run = store.run("dlabwb01").unwrap();
    assert!(run.skipped().is_empty(), "{}", run.skipped());
    assert_eq!(points(&store, "dlabwb01", "train/loss"), 30);
    assert_eq!(run.images("validation").len(), 8);
    let whole = difflab::metrics::load(&[dir.path()]).unwrap();
    assert_eq!(runs_json(&store, &[]), runs_json(&whole, &[]));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Rows MLflow would commit for `ddim-short` (run id from the fixture), steps `steps`.
fn log_metrics(db: &Path, wal: bool, steps: std::ops::Range<i64>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    if wal {
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    }
    let run: String = conn
        .query_row(
            "SELECT run_uuid FROM runs WHERE name = 'ddim-short'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for step in steps {
        conn.execute(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES ('train/loss', ?1, ?2, ?3, ?4, 0)",
            rusqlite::params![0.1, 1_700_000_200_000i64 + 1000 * step, run, step],
        )
        .unwrap();
    }
}

fn follows_mlflow_db(wal: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("proj/mlflow.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::copy(fixtures().join("mlflow_sqlite/mlflow.db"), &db).unwrap();
    let (_follower, rx) = follow(dir.path());
    let mut store = Store::new();
    let run = "proj/difflab-fixtures/ddim-short";
    assert!(wait_until(&rx, &mut store, |s| points(
        s,
        run,
        "train/loss"
    ) == 10));
    log_metrics(&db, wal, 10..13);
    assert!(wait_until(&rx, &mut store, |s| points(
        s,
        run,
        "train/loss"
    ) == 13));
    log_metrics(&db, wal, 13..14);
    assert!(wait_until(&rx, &mut store, |s| points(
        s,
        run,
        "train/loss"
    ) == 14));
    // Nothing twice: a last look after a poll interval finds the same 14.
    std::thread::sleep(Duration::from_millis(700));
    while let Ok(e) = rx.try_recv() {
        store.apply(&e);
    }
    assert_eq!(points(&store, run, "train/loss"), 14);
    assert_eq!(
        points(&store, "proj/difflab-fixtures/ddpm-base", "train/loss"),
        30
    );
}

#[test]
fn rows_mlflow_commits_arrive_once() {
    follows_mlflow_db(false);
}

#[test]
fn rows_mlflow_commits_in_wal_mode_arrive_once() {
    follows_mlflow_db(true);
}

#[test]
fn lines_appended_to_a_file_store_metric_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proj/mlruns");
    copy_dir(&fixtures().join("mlflow_files/mlruns"), &root);
    let (_follower, rx) = follow(dir.path());
    let mut store = Store::new();
    let run = "proj/difflab-fixtures/ddim-short";
    assert!(wait_until(&rx, &mut store, |s| points(
        s,
        run,
        "train/loss"
    ) == 10));
    let metric = walk(&root)
        .into_iter()
        .find(|p| p.ends_with("metrics/train/loss") && points_in(p) == 10)
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&metric)
        .unwrap();
    f.write_all(b"1700000210000 0.2 10\n1700000211000 0.1")
        .unwrap();
    f.flush().unwrap();
    assert!(wait_until(&rx, &mut store, |s| points(
        s,
        run,
        "train/loss"
    ) == 11));
    f.write_all(b"9 11\n").unwrap();
    assert!(wait_until(&rx, &mut store, |s| points(
        s,
        run,
        "train/loss"
    ) == 12));
    let last = store.run(run).unwrap().series("train/loss").unwrap().points[11];
    assert_eq!((last.step, last.value), (11, 0.19));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn points_in(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}
