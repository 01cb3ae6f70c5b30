//! MLflow's SQLite and file stores read by `MlflowDb` and `FileStore`: the fixtures written by MLflow 3.17
//! match `tests/data/mlflow/expected.json`, and what MLflow adds later is read once, never twice.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use difflab::metrics::mlflow::{FileStore, MlflowDb, MlflowError, is_file_store, is_mlflow_db};
use difflab::metrics::{FactKind, LogSink, Point};
use rusqlite::Connection;
use serde_json::{Value, json};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/runs");
const DDPM: &str = "difflab-fixtures/ddpm-base";
const DDIM: &str = "difflab-fixtures/ddim-short";
const DDIM_ID: &str = "3235fb7c79504b08a556bb2d295ce917";

/// Everything a reader reported, by part.
#[derive(Debug, Default)]
struct Collect {
    part: String,
    scalars: BTreeMap<String, BTreeMap<String, Vec<Point>>>,
    facts: BTreeMap<String, BTreeMap<(FactKind, String), Value>>,
    /// Calls in order, to tell what one poll reported.
    calls: usize,
    resets: usize,
}

impl LogSink for Collect {
    fn scalar(&mut self, tag: &str, point: Point) {
        let part = self.scalars.entry(self.part.clone()).or_default();
        part.entry(tag.to_owned()).or_default().push(point);
        self.calls += 1;
    }

    fn fact(&mut self, kind: FactKind, key: &str, value: Value) {
        let part = self.facts.entry(self.part.clone()).or_default();
        part.insert((kind, key.to_owned()), value);
        self.calls += 1;
    }

    fn part(&mut self, part: &str) {
        self.part = part.to_owned();
    }

    fn reset(&mut self) {
        *self = Collect {
            resets: self.resets + 1,
            ..Collect::default()
        };
    }
}

impl Collect {
    fn points(&self, part: &str, tag: &str) -> Vec<Point> {
        self.scalars
            .get(part)
            .and_then(|p| p.get(tag))
            .cloned()
            .unwrap_or_default()
    }

    fn fact(&self, part: &str, kind: FactKind, key: &str) -> Option<&Value> {
        self.facts.get(part)?.get(&(kind, key.to_owned()))
    }

    fn info(&self, part: &str, key: &str) -> Option<&Value> {
        self.fact(part, FactKind::Info, key)
    }
}

fn expected() -> Value {
    serde_json::from_str(&fs::read_to_string(format!("{DATA}/expected.json")).unwrap()).unwrap()
}

/// A value of expected.json: a number, or "NaN" / "Infinity" / "-Infinity".
fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "NaN" => f64::NAN,
        Value::String(s) if s == "Infinity" => f64::INFINITY,
        Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
        v => v.as_f64().unwrap(),
    }
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Checks every MLflow run of `kind` in expected.json against what `got` collected.
fn check_expected(got: &Collect, kind: &str) {
    let expected = expected();
    let mut checked = 0;
    for run in expected["runs"].as_object().unwrap().values() {
        if run["kind"] != kind {
            continue;
        }
        let part = format!(
            "{}/{}",
            run["experiment"].as_str().unwrap(),
            run["run_name"].as_str().unwrap()
        );
        assert_eq!(got.info(&part, "id"), Some(&run["run_id"]), "{part}");
        assert_eq!(got.info(&part, "name"), Some(&run["run_name"]), "{part}");
        assert_eq!(
            got.info(&part, "experiment"),
            Some(&run["experiment"]),
            "{part}"
        );
        let state = run["status"].as_str().unwrap().to_lowercase();
        assert_eq!(got.info(&part, "state"), Some(&json!(state)), "{part}");
        for (key, value) in run["params"].as_object().unwrap() {
            assert_eq!(
                got.fact(&part, FactKind::Config, key),
                Some(value),
                "{part} param {key}"
            );
        }
        let params = got.facts[&part]
            .keys()
            .filter(|(k, _)| *k == FactKind::Config)
            .count();
        assert_eq!(params, run["params"].as_object().unwrap().len(), "{part}");
        let scalars = run["scalars"].as_object().unwrap();
        assert_eq!(got.scalars[&part].len(), scalars.len(), "{part} tags");
        for (tag, want) in scalars {
            check_series(&part, tag, got.points(&part, tag), want);
        }
        checked += 1;
    }
    assert_eq!(checked, 2, "runs of {kind} in expected.json");
}

fn check_series(part: &str, tag: &str, mut points: Vec<Point>, want: &Value) {
    assert_eq!(
        points.len() as u64,
        want["points"].as_u64().unwrap(),
        "{part} {tag}"
    );
    // Sorted by step; ties keep the order read (a stable sort).
    points.sort_by_key(|p| p.step);
    for (end, p) in [
        ("first", points.first().unwrap()),
        ("last", points.last().unwrap()),
    ] {
        let w = &want[end];
        assert_eq!(p.step, w[0].as_i64().unwrap(), "{part} {tag} {end} step");
        assert!(
            same(p.value, number(&w[1])),
            "{part} {tag} {end}: {} vs {}",
            p.value,
            w[1]
        );
    }
    let nan = points.iter().filter(|p| p.value.is_nan()).count() as u64;
    let inf = points.iter().filter(|p| p.value.is_infinite()).count() as u64;
    assert_eq!(nan, want["nan"].as_u64().unwrap_or(0), "{part} {tag} NaN");
    assert_eq!(inf, want["inf"].as_u64().unwrap_or(0), "{part} {tag} inf");
}

/// The fixture database, copied into a fresh folder.
fn db_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlflow.db");
    fs::copy(format!("{DATA}/mlflow_sqlite/mlflow.db"), &path).unwrap();
    (dir, path)
}

fn writer(path: &Path, journal_mode: &str) -> Connection {
    let conn = Connection::open(path).unwrap();
    let mode: String = conn
        .query_row(&format!("PRAGMA journal_mode={journal_mode}"), [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(mode, journal_mode.to_lowercase());
    conn
}

/// Logs `train/loss` at `steps` to run `run` as MLflow does.
fn log_loss(conn: &Connection, run: &str, steps: std::ops::Range<i64>) {
    for s in steps {
        conn.execute(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES \
             ('train/loss', ?1, ?2, ?3, ?4, 0)",
            rusqlite::params![
                0.8 / (1.0 + s as f64 / 5.0),
                1700000200000i64 + 1000 * s,
                run,
                s
            ],
        )
        .unwrap();
    }
}

fn siblings(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---- SQLite ----

#[test]
fn db_fixture_matches_expected() {
    let mut db = MlflowDb::open(Path::new(&format!("{DATA}/mlflow_sqlite/mlflow.db"))).unwrap();
    let mut got = Collect::default();
    assert!(db.poll(&mut got).unwrap());
    check_expected(&got, "mlflow-sqlite");
    assert_eq!(db.skipped(), Default::default());
    assert_eq!(
        got.scalars.len(),
        2,
        "only the two runs: {:?}",
        got.scalars.keys()
    );
    // Facts beyond expected.json, as the fixture's README gives them.
    assert_eq!(got.info(DDPM, "start_time"), Some(&json!(1700000000.0)));
    assert_eq!(got.info(DDPM, "end_time"), Some(&json!(1700000100.0)));
    assert_eq!(got.info(DDIM, "end_time"), None, "a running run has no end");
    assert_eq!(got.info(DDPM, "user"), Some(&json!("fixture")));
    assert_eq!(
        got.info(DDPM, "source"),
        Some(&json!("train_text_to_image.py"))
    );
    assert_eq!(got.info(DDPM, "tags"), Some(&json!(["model=unet-tiny"])));
    assert_eq!(got.info(DDIM, "tags"), Some(&json!([])));
    // The metric logged twice at step 20 keeps both values, in the order logged; wall times in seconds.
    let fid = got.points(DDPM, "val/fid");
    let fid: Vec<_> = fid.iter().map(|p| (p.step, p.value, p.wall_time)).collect();
    assert_eq!(
        fid,
        [
            (10, 50.0, 1700000010.5),
            (20, 34.0, 1700000020.5),
            (20, 33.5, 1700000020.7)
        ]
    );
    let grad = got.points(DDPM, "train/grad_norm");
    assert!(grad[7].value.is_nan() && grad[7].step == 7);
    assert_eq!((grad[8].step, grad[8].value), (8, f64::INFINITY));
    // A second poll finds nothing new.
    let mut again = Collect::default();
    assert!(!db.poll(&mut again).unwrap());
    assert_eq!(again.calls, 0);
}

#[test]
fn db_reader_is_send() {
    fn send<T: Send + std::fmt::Debug>() {}
    send::<MlflowDb>();
    send::<FileStore>();
}

/// Rows, a param and a status change written after the first poll come in the next poll, once.
fn follow_writes(journal_mode: &str) {
    let (dir, path) = db_copy();
    let w = writer(&path, journal_mode);
    let mut db = MlflowDb::open(&path).unwrap();
    let mut got = Collect::default();
    db.poll(&mut got).unwrap();
    let first_calls = got.calls;

    // A transaction in progress is not seen, and does not block the reader.
    log_loss(&w, DDIM_ID, 10..12);
    w.execute_batch("BEGIN IMMEDIATE").unwrap();
    log_loss(&w, DDIM_ID, 12..15);
    assert!(db.poll(&mut got).unwrap());
    assert_eq!(got.points(DDIM, "train/loss").len(), 12);
    w.execute_batch("COMMIT").unwrap();
    assert!(db.poll(&mut got).unwrap());
    let loss = got.points(DDIM, "train/loss");
    assert_eq!(loss.len(), 15);
    assert_eq!(
        loss.iter().map(|p| p.step).collect::<Vec<_>>(),
        (0..15).collect::<Vec<_>>()
    );
    assert_eq!(got.calls, first_calls + 5, "only the five new points");

    w.execute(
        "INSERT INTO params (key, value, run_uuid) VALUES ('seed', '42', ?1)",
        [DDIM_ID],
    )
    .unwrap();
    w.execute(
        "UPDATE runs SET status = 'FINISHED', end_time = 1700000215000 WHERE run_uuid = ?1",
        [DDIM_ID],
    )
    .unwrap();
    log_loss(&w, DDIM_ID, 15..16);
    let before = got.calls;
    assert!(db.poll(&mut got).unwrap());
    assert_eq!(got.fact(DDIM, FactKind::Config, "seed"), Some(&json!("42")));
    assert_eq!(got.info(DDIM, "state"), Some(&json!("finished")));
    assert_eq!(got.info(DDIM, "end_time"), Some(&json!(1700000215.0)));
    assert_eq!(got.calls, before + 4, "seed, state, end_time and one point");
    assert!(!db.poll(&mut got).unwrap());
    assert_eq!(db.skipped(), Default::default());
    drop(db);
    drop(w);
    assert_eq!(siblings(dir.path()), ["mlflow.db"]);
}

#[test]
fn db_follows_writes_in_rollback_journal_mode() {
    follow_writes("DELETE");
}

#[test]
fn db_follows_writes_in_wal_mode() {
    follow_writes("WAL");
}

/// What a read-only reader does to a WAL database no writer has open: SQLite cannot read one without its
/// -wal and -shm files, so it creates them (empty -wal) in the writable folder and, being read-only, cannot
/// remove them on closing. The database itself is not touched; a writer opened later uses them.
#[test]
fn db_in_wal_mode_without_writer() {
    let (dir, path) = db_copy();
    drop(writer(&path, "WAL"));
    assert_eq!(
        siblings(dir.path()),
        ["mlflow.db"],
        "the writer's last close removed them"
    );
    let before = fs::read(&path).unwrap();
    let mut db = MlflowDb::open(&path).unwrap();
    let mut got = Collect::default();
    db.poll(&mut got).unwrap();
    check_expected(&got, "mlflow-sqlite");
    drop(db);
    assert_eq!(
        siblings(dir.path()),
        ["mlflow.db", "mlflow.db-shm", "mlflow.db-wal"]
    );
    assert_eq!(
        fs::metadata(dir.path().join("mlflow.db-wal"))
            .unwrap()
            .len(),
        0
    );
    assert!(
        fs::read(&path).unwrap() == before,
        "the database is unchanged"
    );
    // A reader opened while a writer works shares the writer's files and sees its commits.
    let w = writer(&path, "WAL");
    let mut db = MlflowDb::open(&path).unwrap();
    db.poll(&mut Collect::default()).unwrap();
    log_loss(&w, DDIM_ID, 10..12);
    let mut got = Collect::default();
    db.poll(&mut got).unwrap();
    assert_eq!(got.points(DDIM, "train/loss").len(), 2);
    drop(db);
    drop(w);
    assert_eq!(
        siblings(dir.path()),
        ["mlflow.db"],
        "the writer closing last removes them"
    );
}

#[test]
fn db_new_run_appears() {
    let (_dir, path) = db_copy();
    let mut db = MlflowDb::open(&path).unwrap();
    let mut got = Collect::default();
    db.poll(&mut got).unwrap();
    let w = writer(&path, "DELETE");
    w.execute_batch(
        "INSERT INTO runs (run_uuid, name, status, start_time, lifecycle_stage, experiment_id, user_id) \
         VALUES ('newrun', 'ddim-long', 'RUNNING', 1700000300000, 'active', 1, 'fixture');
         INSERT INTO tags (key, value, run_uuid) VALUES ('mlflow.runName', 'ddim-long', 'newrun');
         INSERT INTO tags (key, value, run_uuid) VALUES ('stage', '', 'newrun');",
    )
    .unwrap();
    log_loss(&w, "newrun", 0..3);
    assert!(db.poll(&mut got).unwrap());
    let part = "difflab-fixtures/ddim-long";
    assert_eq!(got.points(part, "train/loss").len(), 3);
    assert_eq!(got.info(part, "state"), Some(&json!("running")));
    assert_eq!(got.info(part, "tags"), Some(&json!(["stage"])));
    assert_eq!(got.points(DDIM, "train/loss").len(), 10, "nothing twice");
}

#[test]
fn db_runs_with_one_name_get_two_parts() {
    let (_dir, path) = db_copy();
    let w = writer(&path, "DELETE");
    w.execute(
        "UPDATE tags SET value = 'ddpm-base' WHERE run_uuid = ?1 AND key = 'mlflow.runName'",
        [DDIM_ID],
    )
    .unwrap();
    drop(w);
    let mut db = MlflowDb::open(&path).unwrap();
    let mut got = Collect::default();
    db.poll(&mut got).unwrap();
    // ddpm-base started first and keeps the plain name.
    assert_eq!(got.points(DDPM, "train/loss").len(), 30);
    assert_eq!(
        got.points("difflab-fixtures/ddpm-base (run 3235fb7c)", "train/loss")
            .len(),
        10
    );
}

#[test]
fn db_deleted_runs_are_hidden_and_restored() {
    let (_dir, path) = db_copy();
    let w = writer(&path, "DELETE");
    let set_stage = |stage: &str| {
        w.execute(
            "UPDATE runs SET lifecycle_stage = ?1 WHERE run_uuid = ?2",
            [stage, DDIM_ID],
        )
        .unwrap();
    };
    set_stage("deleted");
    let mut db = MlflowDb::open(&path).unwrap();
    let mut got = Collect::default();
    db.poll(&mut got).unwrap();
    assert!(!got.scalars.contains_key(DDIM) && !got.facts.contains_key(DDIM));
    // Restored: its rows are read then, with those logged since.
    set_stage("active");
    log_loss(&w, DDIM_ID, 10..12);
    db.poll(&mut got).unwrap();
    assert_eq!(got.points(DDIM, "train/loss").len(), 12);
    // Deleted again after being shown: said once, no points meanwhile, the rest on restoring.
    set_stage("deleted");
    db.poll(&mut got).unwrap();
    assert_eq!(got.info(DDIM, "deleted"), Some(&json!(true)));
    log_loss(&w, DDIM_ID, 12..13);
    assert!(!db.poll(&mut got).unwrap(), "a deleted run reports nothing");
    set_stage("active");
    db.poll(&mut got).unwrap();
    assert_eq!(got.info(DDIM, "deleted"), Some(&Value::Null));
    let steps: Vec<i64> = got
        .points(DDIM, "train/loss")
        .iter()
        .map(|p| p.step)
        .collect();
    assert_eq!(steps, (0..13).collect::<Vec<_>>());
    assert_eq!(db.skipped(), Default::default());
}

#[test]
fn db_bad_rows_are_counted() {
    let (_dir, path) = db_copy();
    let mut db = MlflowDb::open(&path).unwrap();
    let mut got = Collect::default();
    db.poll(&mut got).unwrap();
    let w = writer(&path, "DELETE");
    // MLflow turns foreign keys on; another writer (or a damaged file) can leave rows of no run.
    w.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO metrics VALUES ('train/loss', 1.0, 1, 'no-such-run', 0, 0);
         INSERT INTO metrics VALUES ('train/loss', 'abc', 2, '3235fb7c79504b08a556bb2d295ce917', 11, 0);
         INSERT INTO metrics VALUES ('train/loss', 0.5, 3, '3235fb7c79504b08a556bb2d295ce917', 12, 0);",
    )
    .unwrap();
    db.poll(&mut got).unwrap();
    assert_eq!(db.skipped().bad_records, 2);
    assert_eq!(got.points(DDIM, "train/loss").last().unwrap().step, 12);
}

#[test]
fn db_rewritten_table_is_read_again() {
    let (dir, path) = db_copy();
    let mut db = MlflowDb::open(&path).unwrap();
    let mut got = Collect::default();
    db.poll(&mut got).unwrap();
    // The last row read goes away (as `mlflow gc` of the newest run does).
    let w = writer(&path, "DELETE");
    w.execute_batch("DELETE FROM metrics WHERE rowid = (SELECT max(rowid) FROM metrics)")
        .unwrap();
    assert!(db.poll(&mut got).unwrap());
    assert_eq!(got.resets, 1);
    assert_eq!(got.points(DDIM, "train/loss").len(), 9);
    assert_eq!(got.points(DDPM, "train/loss").len(), 30);
    // The file is replaced by another (a fresh copy moved over it).
    drop(w);
    let fresh = dir.path().join("fresh.db");
    fs::copy(format!("{DATA}/mlflow_sqlite/mlflow.db"), &fresh).unwrap();
    fs::rename(&fresh, &path).unwrap();
    assert!(db.poll(&mut got).unwrap());
    assert_eq!(got.resets, 2);
    check_expected(&got, "mlflow-sqlite");
}

#[test]
fn db_errors_name_the_file_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE runs (x)")
        .unwrap();
    let err = MlflowDb::open(&other).unwrap_err();
    assert!(
        matches!(
            err,
            MlflowError::NotMlflow {
                table: "experiments",
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("other.db") && msg.contains("not an MLflow tracking store"),
        "{msg}"
    );

    let text = dir.path().join("mlflow.db");
    fs::write(
        &text,
        "this is not a database, it is a long enough text file to have a header",
    )
    .unwrap();
    let err = MlflowDb::open(&text).unwrap_err();
    assert!(matches!(err, MlflowError::NotSqlite { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is not a SQLite database"),
        "{err}"
    );

    let missing = dir.path().join("missing.db");
    let err = MlflowDb::open(&missing).unwrap_err();
    assert!(matches!(err, MlflowError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.db"), "{err}");
    assert!(!missing.exists(), "opening never creates the file");
}

#[test]
fn names_of_stores() {
    assert!(is_mlflow_db("mlflow.db"));
    assert!(!is_mlflow_db("runs.db"));
    let root = PathBuf::from(format!("{DATA}/mlflow_files/mlruns"));
    assert!(is_file_store(&root));
    let experiment = root.join("465353276440170581");
    assert!(
        !is_file_store(&experiment),
        "an experiment folder is not a store"
    );
    assert!(!is_file_store(Path::new(DATA)));
    // The artifact folder beside an mlflow.db is named mlruns too, and holds no runs.
    let artifacts = tempfile::tempdir().unwrap();
    fs::create_dir_all(artifacts.path().join("mlruns/1/abc/artifacts")).unwrap();
    assert!(!is_file_store(&artifacts.path().join("mlruns")));
    let err = FileStore::open(&experiment).unwrap_err();
    assert!(err.to_string().contains("give the mlruns folder"), "{err}");
}

// ---- File store ----

/// The fixture store, copied into a fresh folder; with the run folder of ddim-short.
fn store_copy() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mlruns");
    copy_dir(Path::new(&format!("{DATA}/mlflow_files/mlruns")), &root);
    let run = root.join("465353276440170581/4772ee967618438b8828f88380ad1de4");
    (dir, root, run)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn append(path: &Path, text: &[u8]) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text)
        .unwrap();
}

#[test]
fn store_fixture_matches_expected() {
    let mut store = FileStore::open(Path::new(&format!("{DATA}/mlflow_files/mlruns"))).unwrap();
    let mut got = Collect::default();
    assert!(store.poll(&mut got).unwrap());
    check_expected(&got, "mlflow-files");
    assert_eq!(store.skipped(), Default::default());
    assert_eq!(got.info(DDPM, "start_time"), Some(&json!(1700000000.0)));
    assert_eq!(got.info(DDPM, "end_time"), Some(&json!(1700000100.0)));
    assert_eq!(got.info(DDIM, "end_time"), None);
    assert_eq!(got.info(DDPM, "tags"), Some(&json!(["model=unet-tiny"])));
    assert_eq!(
        got.info(DDPM, "source"),
        Some(&json!("train_text_to_image.py"))
    );
    let fid: Vec<_> = got
        .points(DDPM, "val/fid")
        .iter()
        .map(|p| (p.step, p.value))
        .collect();
    assert_eq!(fid, [(10, 50.0), (20, 34.0), (20, 33.5)]);
    let mut again = Collect::default();
    assert!(!store.poll(&mut again).unwrap());
    assert_eq!(again.calls, 0);
}

#[test]
fn store_reads_appended_lines_once() {
    let (_dir, root, run) = store_copy();
    let loss = run.join("metrics/train/loss");
    let mut store = FileStore::open(&root).unwrap();
    let mut got = Collect::default();
    store.poll(&mut got).unwrap();
    let calls = got.calls;
    append(&loss, b"1700000210000 0.2666 10\n1700000211000 0.25");
    assert!(store.poll(&mut got).unwrap());
    assert_eq!(got.calls, calls + 1, "the half line waits");
    assert!(!store.poll(&mut got).unwrap());
    append(&loss, b"0 11\n");
    assert!(store.poll(&mut got).unwrap());
    let tail: Vec<_> = got.points(DDIM, "train/loss")[9..]
        .iter()
        .map(|p| (p.step, p.value))
        .collect();
    assert_eq!(tail, [(9, 0.28571428571428575), (10, 0.2666), (11, 0.250)]);
    assert_eq!(got.points(DDIM, "train/loss")[11].wall_time, 1700000211.0);
    // A status change and a new tag come as facts.
    let meta = fs::read_to_string(run.join("meta.yaml")).unwrap();
    fs::write(
        run.join("meta.yaml"),
        meta.replace("status: 1", "status: 4")
            .replace("end_time: null", "end_time: 1700000212000"),
    )
    .unwrap();
    fs::write(run.join("tags/best"), "yes").unwrap();
    let calls = got.calls;
    assert!(store.poll(&mut got).unwrap());
    assert_eq!(got.info(DDIM, "state"), Some(&json!("failed")));
    assert_eq!(got.info(DDIM, "end_time"), Some(&json!(1700000212.0)));
    assert_eq!(got.info(DDIM, "tags"), Some(&json!(["best=yes"])));
    assert_eq!(got.calls, calls + 3);
    assert_eq!(store.skipped(), Default::default());
}

#[test]
fn store_finds_new_runs_and_experiments() {
    let (_dir, root, run) = store_copy();
    let mut store = FileStore::open(&root).unwrap();
    let mut got = Collect::default();
    store.poll(&mut got).unwrap();
    // A new run in the experiment, and a new experiment holding a copy of a run.
    let new_run = run.with_file_name("0123456789abcdef0123456789abcdef");
    copy_dir(&run, &new_run);
    let meta = fs::read_to_string(new_run.join("meta.yaml")).unwrap();
    let meta = meta.replace(
        "4772ee967618438b8828f88380ad1de4",
        "0123456789abcdef0123456789abcdef",
    );
    fs::write(
        new_run.join("meta.yaml"),
        meta.replace("run_name: ddim-short", "run_name: ddim-again"),
    )
    .unwrap();
    fs::write(new_run.join("tags/mlflow.runName"), "ddim-again").unwrap();
    let exp = root.join("7");
    fs::create_dir(&exp).unwrap();
    fs::write(
        exp.join("meta.yaml"),
        "experiment_id: '7'\nlifecycle_stage: active\nname: 'second: try'\n",
    )
    .unwrap();
    copy_dir(&run, &exp.join("4772ee967618438b8828f88380ad1de4"));
    // Deleted experiments in .trash are not read.
    copy_dir(
        &root.join("465353276440170581"),
        &root.join(".trash/465353276440170581"),
    );
    assert!(store.poll(&mut got).unwrap());
    assert_eq!(
        got.points("difflab-fixtures/ddim-again", "train/loss")
            .len(),
        10
    );
    assert_eq!(got.points("second: try/ddim-short", "train/loss").len(), 10);
    assert_eq!(got.points(DDIM, "train/loss").len(), 10, "nothing twice");
    assert_eq!(got.scalars.len(), 4);
}

#[test]
fn store_deleted_run_is_hidden() {
    let (_dir, root, run) = store_copy();
    let meta = fs::read_to_string(run.join("meta.yaml")).unwrap();
    fs::write(
        run.join("meta.yaml"),
        meta.replace("lifecycle_stage: active", "lifecycle_stage: deleted"),
    )
    .unwrap();
    let mut store = FileStore::open(&root).unwrap();
    let mut got = Collect::default();
    store.poll(&mut got).unwrap();
    assert!(!got.facts.contains_key(DDIM));
    assert!(got.facts.contains_key(DDPM));
}

#[test]
fn store_garbage_is_counted() {
    let (_dir, root, run) = store_copy();
    let mut store = FileStore::open(&root).unwrap();
    let mut got = Collect::default();
    store.poll(&mut got).unwrap();
    let garbage: &[u8] = b"\xff\xfe\x00 1 2\n\
        1700000210000 0.5 10 extra\n\
        not a metric\n\
        1700000210000 0.5 99999999999999999999\n\
        \n\
        1700000210000 0.5 10\n\
        \x00\x00\x00\x00\n";
    append(&run.join("metrics/train/loss"), garbage);
    fs::write(
        run.join("metrics/train/noise"),
        [0x80u8, 0x0a, 0x31, 0x0a, 0xc3],
    )
    .unwrap();
    fs::write(run.join("meta.yaml.bak"), [0xffu8; 64]).unwrap();
    store.poll(&mut got).unwrap();
    assert_eq!(store.skipped().bad_records, 5 + 2);
    assert_eq!(got.points(DDIM, "train/loss").len(), 11);
    store.finish();
    assert_eq!(store.skipped().partial_tail_bytes, 1);
    // A metric file that shrank is read again from the store's start.
    fs::write(run.join("metrics/train/noise"), b"").unwrap();
    store.poll(&mut got).unwrap();
    assert_eq!(got.resets, 1);
    check_expected_after_garbage(&got);
}

fn check_expected_after_garbage(got: &Collect) {
    assert_eq!(got.points(DDPM, "train/loss").len(), 30);
    assert_eq!(got.points(DDIM, "train/loss").len(), 11);
}

#[test]
fn store_survives_a_broken_meta_yaml() {
    let (_dir, root, run) = store_copy();
    fs::write(run.join("meta.yaml"), [0xffu8, 0x3a, 0x0a, 0x20, 0x22]).unwrap();
    fs::write(root.join("465353276440170581/meta.yaml.tmp"), "x").unwrap();
    let mut store = FileStore::open(&root).unwrap();
    let mut got = Collect::default();
    store.poll(&mut got).unwrap();
    assert!(got.facts.contains_key(DDPM));
    assert!(
        !got.facts.contains_key(DDIM),
        "a run without a readable meta.yaml waits"
    );
}

#[test]
fn store_run_meta_being_rewritten_changes_nothing() {
    let (_dir, root, run) = store_copy();
    let mut store = FileStore::open(&root).unwrap();
    let mut got = Collect::default();
    store.poll(&mut got).unwrap();
    // MLflow's set_terminated rewrites meta.yaml in place: for a moment it is empty, then cut short.
    let meta = fs::read_to_string(run.join("meta.yaml")).unwrap();
    for partial in ["", &meta[..meta.find("run_id").unwrap() + 9]] {
        fs::write(run.join("meta.yaml"), partial).unwrap();
        assert!(!store.poll(&mut got).unwrap(), "{partial:?}");
    }
    fs::write(
        run.join("meta.yaml"),
        meta.replace("status: 1", "status: 3"),
    )
    .unwrap();
    let calls = got.calls;
    assert!(store.poll(&mut got).unwrap());
    assert_eq!(got.info(DDIM, "state"), Some(&json!("finished")));
    assert_eq!(got.calls, calls + 1);
}
