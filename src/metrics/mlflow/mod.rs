//! MLflow's two local tracking stores: the SQLite database (`mlflow.db`, read by [`MlflowDb`]) and the
//! older `mlruns/` folder (the file store, read by [`FileStore`]).
//!
//! Both are store readers: each [`poll`](MlflowDb::poll) reads only what was added or changed since the
//! previous one and reports it to a [`LogSink`]. Everything of one MLflow run is reported after
//! `sink.part("EXPERIMENT/RUN")`, where RUN is the run's name (the `mlflow.runName` tag, else the name
//! MLflow stored, else the run id). A part is named when its run is first seen and keeps that name: a
//! renamed run reports a new `name` fact, not a new part. Two shown runs of one experiment with the same
//! name are told apart by their id: the one seen later is `EXPERIMENT/RUN (run 1a2b3c4d)`.
//!
//! What is reported for a run:
//! - every metric value as a scalar of its key: step, wall time (MLflow's millisecond timestamp in
//!   seconds) and value, NaN and ±infinity included;
//! - [`FactKind::Info`] facts `id`, `name`, `experiment`, `state` (MLflow's status lower-cased:
//!   "running", "scheduled", "finished", "failed", "killed"), `start_time` and `end_time` (Unix seconds,
//!   absent while unknown), `user`, `source` (the `mlflow.source.name` tag), and `tags`: the user's tags
//!   (not `mlflow.*`) as a JSON list of `"key=value"` strings sorted by key (`"key"` alone when the value
//!   is empty). Info `tags` is a list of strings in every reader (W&B's tags are labels); `key=value` keeps
//!   an MLflow tag's value while fitting that shape;
//! - every param as a [`FactKind::Config`] fact holding its value as a JSON string (MLflow keeps params
//!   as strings; "0.0001" is not turned into a number).
//!
//! A fact is reported when it is new or changed since the last poll; one that went away is reported as
//! `null`. Deleted runs and runs of deleted experiments are not shown; a shown run that is deleted later
//! gets the Info fact `deleted: true` (and `deleted: null` when it is restored).

mod db;
mod facts;
mod file_store;
mod meta_yaml;
mod reader;

use std::path::{Path, PathBuf};

pub use db::MlflowDb;
pub use file_store::{FileStore, check_metric_file};
pub use reader::{MlflowFiles, MlflowSqlite};

use super::{FactKind, LogSink, Point, Skipped};

/// The file name MLflow's documentation and its default tracking URI (`sqlite:///mlflow.db`) give the
/// database.
const DB_NAME: &str = "mlflow.db";

/// Errors of the MLflow store readers. Each message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    /// The database could not be opened for reading.
    #[error(
        "cannot open {} read-only: {source}; check that the file exists and is readable (and, for a \
         database in WAL mode, that its folder is writable or its -wal and -shm files exist)",
        path.display()
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The file is not a SQLite database at all.
    #[error(
        "{} is not a SQLite database; give the mlflow.db that MLflow's tracking URI \
         (sqlite:///…/mlflow.db) names",
        path.display()
    )]
    NotSqlite { path: PathBuf },
    /// A SQLite database without MLflow's tables.
    #[error(
        "{} is a SQLite database but not an MLflow tracking store (it has no `{table}` table); give the \
         database of an MLflow tracking URI sqlite:///…, or run `mlflow db upgrade` on it if MLflow \
         created it long ago",
        path.display()
    )]
    NotMlflow { path: PathBuf, table: &'static str },
    /// MLflow held the database locked for longer than the reader waits.
    #[error(
        "{} stayed locked by a writer for more than {} s; nothing was lost, poll again",
        path.display(),
        db::BUSY_TIMEOUT.as_secs()
    )]
    Busy { path: PathBuf },
    /// A query failed while reading.
    #[error(
        "reading {}: {source}; if MLflow is upgrading this database (`mlflow db upgrade`) wait for it \
         and poll again, else the file may be damaged (`sqlite3 {} 'PRAGMA integrity_check'`)",
        path.display(),
        path.display()
    )]
    Query {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// A file or folder of a file store could not be read.
    #[error("cannot read {}: {source}; check that it exists and is readable", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A folder given as a file store is not one.
    #[error("{} is not an MLflow file store: {why}", path.display())]
    NotFileStore { path: PathBuf, why: &'static str },
}

/// Whether a file named `name` is an MLflow database found while walking folders: only `mlflow.db`.
///
/// Other `*.db` files are not opened to look for MLflow's tables: most are some other program's SQLite
/// files, and opening every one a walk passes costs time and file handles. A database of another name is
/// read by giving its path to [`MlflowDb::open`], which accepts any SQLite file with MLflow's tables and
/// says clearly when a file has none.
pub fn is_mlflow_db(name: &str) -> bool {
    name == DB_NAME
}

/// Whether `dir` is an MLflow file store: a folder holding at least one experiment folder, that is a
/// folder whose `meta.yaml` has an `experiment_id`.
///
/// The folder's name is not enough: a folder named `mlruns` beside an `mlflow.db` holds that database's
/// artifacts (`mlruns/<experiment>/<run>/artifacts`) and no runs. An experiment or run folder is not a
/// store either (its `meta.yaml` is read by the store above it).
pub fn is_file_store(dir: &Path) -> bool {
    file_store::holds_experiment(dir)
}

/// MLflow's run status as the `state` fact says it; `None` for a status MLflow does not have.
fn state_of(status: &str) -> Option<&'static str> {
    Some(match status {
        "RUNNING" => "running",
        "SCHEDULED" => "scheduled",
        "FINISHED" => "finished",
        "FAILED" => "failed",
        "KILLED" => "killed",
        _ => return None,
    })
}

/// MLflow's stand-ins for non-finite values in the database (a `FLOAT` column cannot hold infinity):
/// ±`f64::MAX` are ±infinity.
fn from_stored(value: f64, is_nan: bool) -> f64 {
    if is_nan {
        f64::NAN
    } else if value == f64::MAX {
        f64::INFINITY
    } else if value == -f64::MAX {
        f64::NEG_INFINITY
    } else {
        value
    }
}

/// A point from MLflow's millisecond timestamp.
fn point(step: i64, timestamp_ms: i64, value: f64) -> Point {
    Point::new(step, timestamp_ms as f64 / 1000.0, value)
}

/// Calls `sink.part` only when the run changes, so that a stream of one run's rows costs one call.
struct PartSink<'a> {
    sink: &'a mut dyn LogSink,
    /// The reader's index of the run whose part was entered last in this poll.
    current: Option<usize>,
    /// Whether anything was reported.
    reported: bool,
}

impl<'a> PartSink<'a> {
    fn new(sink: &'a mut dyn LogSink) -> Self {
        PartSink {
            sink,
            current: None,
            reported: false,
        }
    }

    fn enter(&mut self, run: usize, part: &str) {
        if self.current != Some(run) {
            self.sink.part(part);
            self.current = Some(run);
        }
    }

    fn scalar(&mut self, run: usize, part: &str, tag: &str, point: Point) {
        self.enter(run, part);
        self.sink.scalar(tag, point);
        self.reported = true;
    }

    fn fact(
        &mut self,
        run: usize,
        part: &str,
        kind: FactKind,
        key: &str,
        value: serde_json::Value,
    ) {
        self.enter(run, part);
        self.sink.fact(kind, key, value);
        self.reported = true;
    }

    /// Everything sent before is void: the store is read again from its start.
    fn reset(&mut self) {
        self.sink.reset();
        self.current = None;
        self.reported = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_are_infinities() {
        assert_eq!(from_stored(f64::MAX, false), f64::INFINITY);
        assert_eq!(from_stored(-f64::MAX, false), f64::NEG_INFINITY);
        assert!(from_stored(0.0, true).is_nan());
        assert_eq!(from_stored(1.5, false), 1.5);
    }

    #[test]
    fn only_mlflow_db_is_claimed_by_name() {
        assert!(is_mlflow_db("mlflow.db"));
        assert!(!is_mlflow_db("other.db"));
        assert!(!is_mlflow_db("mlflow.db-wal"));
    }
}
