//! The SQLite tracking store (`mlflow.db`, MLflow 2.x and 3.x schema).
//!
//! - The file is opened read-only (`SQLITE_OPEN_READONLY`, never created) with a busy timeout, so it can
//!   be read while MLflow writes it. A read-only connection never takes a write lock. In rollback-journal
//!   mode (MLflow's default) it creates no file; a read holds a shared lock, and MLflow's commit waits
//!   for it (MLflow sets a 20 s busy timeout). In WAL mode SQLite cannot read without the `-wal` and
//!   `-shm` files: while MLflow has the database open they exist and are shared; when no writer has it
//!   open, SQLite creates them (an empty `-wal` and the `-shm` index) if the folder is writable, and
//!   cannot remove them on closing, since only a connection that may write checkpoints and deletes them.
//!   The database itself is never changed; MLflow's next connection uses them and removes them when it
//!   closes last.
//! - Metrics are followed by row id: each poll reads, in one query ordered by row id and streamed, the
//!   rows after the largest row id read before. Runs, params and tags are small and re-read on each poll
//!   that finds the database changed (`PRAGMA data_version`); a poll that finds it unchanged reads
//!   nothing. One poll reads in one read transaction, so runs and metrics come from the same snapshot.
//! - The last row read is remembered; when it is gone or different (rows deleted at the end, a `VACUUM`
//!   that renumbered rows) or the file was replaced, the sink is reset and everything is read again.
//! - A metric row whose value has the wrong type, or whose run is not in the runs table, is counted in
//!   [`Skipped::bad_records`]. Rows of deleted runs are passed over; a run restored later has its rows
//!   read then.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row, ffi};

use super::facts::{Parts, RunInfo, Shown};
use super::{LogSink, MlflowError, PartSink, Skipped, from_stored, point};

/// How long a query waits for a writer's lock before the poll gives up (MLflow's own writes hold it
/// for milliseconds).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The tables read; a database without one of them is not an MLflow store.
const TABLES: [&str; 5] = ["experiments", "runs", "metrics", "params", "tags"];

/// The metric rows after a row id, in the order they were written.
const NEW_METRICS: &str = "SELECT rowid, key, value, timestamp, run_uuid, step, is_nan FROM metrics \
     WHERE rowid > ?1 ORDER BY rowid";

/// One run's rows in a row-id range: those passed over while it was deleted.
const RUN_METRICS: &str = "SELECT rowid, key, value, timestamp, run_uuid, step, is_nan FROM metrics \
     WHERE run_uuid = ?1 AND rowid > ?2 AND rowid <= ?3 ORDER BY rowid";

/// A reader of an MLflow SQLite tracking database. See the module docs.
#[derive(Debug)]
pub struct MlflowDb {
    path: PathBuf,
    conn: Connection,
    /// (device, inode) of the file opened, to notice it being replaced.
    identity: Option<(u64, u64)>,
    state: State,
}

/// What was read so far.
#[derive(Debug, Default)]
struct State {
    /// `PRAGMA data_version` at the last poll; `None` before the first.
    data_version: Option<i64>,
    runs: Vec<DbRun>,
    /// Index into `runs` by run id.
    index: HashMap<String, usize>,
    parts: Parts,
    /// The largest metric row id read.
    last_rowid: i64,
    /// The row at `last_rowid` as read.
    last_row: Option<RowMark>,
    /// The run of the previous metric row: rows come in runs of one run, so most lookups end here.
    cached_run: (String, Option<usize>),
    skipped: Skipped,
}

#[derive(Debug)]
struct DbRun {
    shown: Option<Shown>,
    visible: bool,
    /// The `last_rowid` when the run was last hidden (or first seen): its rows after it were not reported.
    hidden_after: i64,
}

/// What identifies a metric row besides its row id.
#[derive(Debug, Clone, PartialEq)]
struct RowMark {
    key: String,
    timestamp: i64,
    step: i64,
    run: String,
}

/// A run row with what belongs to it, as read in one poll.
struct RunRow {
    info: RunInfo,
    visible: bool,
}

impl MlflowDb {
    /// Opens `path` read-only and checks that it has MLflow's tables.
    pub fn open(path: &Path) -> Result<MlflowDb, MlflowError> {
        let conn = connect(path)?;
        Ok(MlflowDb {
            path: path.to_path_buf(),
            conn,
            identity: file_identity(path),
            state: State::default(),
        })
    }

    /// Reads what is new since the last poll and reports it to `sink`; `Ok(true)` when anything was
    /// reported.
    pub fn poll(&mut self, sink: &mut dyn LogSink) -> Result<bool, MlflowError> {
        let mut out = PartSink::new(sink);
        let identity = file_identity(&self.path);
        if identity.is_some() && identity != self.identity {
            self.conn = connect(&self.path)?;
            self.identity = identity;
            self.state = State::default();
            out.reset();
        }
        let err = |e| query_error(&self.path, e);
        let version = data_version(&self.conn).map_err(err)?;
        if self.state.data_version == Some(version) {
            return Ok(out.reported);
        }
        let tx = self.conn.unchecked_transaction().map_err(err)?;
        if !self.state.last_row_intact(&tx).map_err(err)? {
            self.state = State::default();
            out.reset();
        }
        let runs = read_runs(&tx).map_err(err)?;
        self.state.update_runs(&tx, runs, &mut out).map_err(err)?;
        self.state.read_new_metrics(&tx, &mut out).map_err(err)?;
        tx.commit().map_err(err)?;
        self.state.data_version = Some(version);
        Ok(out.reported)
    }

    /// What could not be read so far.
    pub fn skipped(&self) -> Skipped {
        self.state.skipped
    }
}

/// Opens the database read-only, waiting for writers' locks, and checks its tables.
fn connect(path: &Path) -> Result<Connection, MlflowError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open_error = |source| MlflowError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    let tables = table_names(&conn).map_err(|e| query_error(path, e))?;
    if let Some(table) = TABLES.into_iter().find(|t| !tables.contains(*t)) {
        return Err(MlflowError::NotMlflow {
            path: path.to_path_buf(),
            table,
        });
    }
    Ok(conn)
}

fn table_names(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let names = stmt.query_map([], |row| row.get::<_, String>(0))?;
    names.collect()
}

/// A counter SQLite changes whenever another connection commits to the database.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "data_version", |row| row.get(0))
}

/// The error of a failed query, told apart by what the user can do about it.
fn query_error(path: &Path, source: rusqlite::Error) -> MlflowError {
    let path = path.to_path_buf();
    match source.sqlite_error_code() {
        Some(ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked) => {
            MlflowError::Busy { path }
        }
        Some(ffi::ErrorCode::NotADatabase) => MlflowError::NotSqlite { path },
        _ => MlflowError::Query { path, source },
    }
}

/// Every run with its tags and params, by start time (so that parts are named in the order runs began).
fn read_runs(conn: &Connection) -> rusqlite::Result<Vec<RunRow>> {
    let experiments = read_experiments(conn)?;
    let mut tags = read_pairs(conn, "SELECT run_uuid, key, value FROM tags")?;
    let mut params = read_pairs(conn, "SELECT run_uuid, key, value FROM params")?;
    let mut stmt = conn.prepare_cached(
        "SELECT run_uuid, name, status, start_time, end_time, lifecycle_stage, \
         CAST(experiment_id AS TEXT), user_id, source_name FROM runs ORDER BY start_time, run_uuid",
    )?;
    let mut rows = stmt.query([])?;
    let mut runs = Vec::new();
    while let Some(row) = rows.next()? {
        let Some(id) = text(row, 0) else { continue };
        let experiment_id = text(row, 6).unwrap_or_default();
        let (experiment, experiment_active) = experiments
            .get(&experiment_id)
            .cloned()
            .unwrap_or((experiment_id, true));
        let info = RunInfo {
            stored_name: text(row, 1),
            experiment,
            status: text(row, 2),
            start_ms: int(row.get_ref(3)?),
            end_ms: int(row.get_ref(4)?),
            user: text(row, 7),
            source_name: text(row, 8),
            tags: tags.remove(&id).unwrap_or_default(),
            params: params.remove(&id).unwrap_or_default(),
            id,
        };
        let visible = experiment_active && !is_deleted(text(row, 5).as_deref());
        runs.push(RunRow { info, visible });
    }
    Ok(runs)
}

/// Experiment names and whether each is active, by experiment id.
fn read_experiments(conn: &Connection) -> rusqlite::Result<HashMap<String, (String, bool)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT CAST(experiment_id AS TEXT), name, lifecycle_stage FROM experiments",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = HashMap::new();
    while let Some(row) = rows.next()? {
        if let (Some(id), Some(name)) = (text(row, 0), text(row, 1)) {
            out.insert(id, (name, !is_deleted(text(row, 2).as_deref())));
        }
    }
    Ok(out)
}

fn is_deleted(lifecycle_stage: Option<&str>) -> bool {
    lifecycle_stage == Some("deleted")
}

/// Key-value rows (tags, params) by run id.
fn read_pairs(
    conn: &Connection,
    sql: &str,
) -> rusqlite::Result<HashMap<String, BTreeMap<String, String>>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query([])?;
    let mut out: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    while let Some(row) = rows.next()? {
        if let (Some(run), Some(key)) = (text(row, 0), text(row, 1)) {
            let value = text(row, 2).unwrap_or_default();
            out.entry(run).or_default().insert(key, value);
        }
    }
    Ok(out)
}

/// A text column; `None` when NULL or not text.
fn text(row: &Row, column: usize) -> Option<String> {
    match row.get_ref(column).ok()? {
        ValueRef::Text(t) => std::str::from_utf8(t).ok().map(str::to_owned),
        _ => None,
    }
}

fn int(value: ValueRef) -> Option<i64> {
    match value {
        ValueRef::Integer(i) => Some(i),
        // A whole number SQLite stored as REAL.
        ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(f as i64),
        _ => None,
    }
}

fn real(value: ValueRef) -> Option<f64> {
    match value {
        ValueRef::Real(f) => Some(f),
        ValueRef::Integer(i) => Some(i as f64),
        _ => None,
    }
}

/// A metric row's fields, borrowed from the row.
struct MetricRow<'r> {
    key: &'r str,
    value: f64,
    timestamp: i64,
    run: &'r str,
    step: i64,
}

/// Decodes the columns of [`NEW_METRICS`] after the row id; `None` when one has the wrong type.
fn metric_row<'r>(row: &'r Row) -> rusqlite::Result<Option<MetricRow<'r>>> {
    let key = row.get_ref(1)?.as_str().ok();
    let value = real(row.get_ref(2)?);
    let timestamp = int(row.get_ref(3)?);
    let run = row.get_ref(4)?.as_str().ok();
    let step = int(row.get_ref(5)?);
    let is_nan = int(row.get_ref(6)?);
    Ok(match (key, value, timestamp, run, step, is_nan) {
        (Some(key), Some(value), Some(timestamp), Some(run), Some(step), Some(is_nan)) => {
            Some(MetricRow {
                key,
                value: from_stored(value, is_nan != 0),
                timestamp,
                run,
                step,
            })
        }
        _ => None,
    })
}

impl State {
    /// Whether the row read last is still there, unchanged.
    fn last_row_intact(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let Some(mark) = &self.last_row else {
            return Ok(true);
        };
        Ok(read_mark(conn, self.last_rowid)?.as_ref() == Some(mark))
    }

    /// Takes in this poll's runs: names the parts of runs shown for the first time, reports changed
    /// facts, and reads the passed-over rows of restored runs.
    fn update_runs(
        &mut self,
        conn: &Connection,
        runs: Vec<RunRow>,
        out: &mut PartSink,
    ) -> rusqlite::Result<()> {
        // A run id looked up before may be a run now.
        self.cached_run = (String::new(), None);
        let mut present = vec![false; self.runs.len()];
        for row in runs {
            let i = self.run_index(&row.info.id);
            if let Some(p) = present.get_mut(i) {
                *p = true;
            }
            if row.visible {
                self.show(conn, i, &row.info, out)?;
            } else {
                self.hide(i, out);
            }
        }
        // Runs gone from the table (`mlflow gc`) are deleted runs too.
        for (i, _) in present.iter().enumerate().filter(|(_, p)| !**p) {
            self.hide(i, out);
        }
        Ok(())
    }

    /// The index of run `id`, added (hidden, nothing read) when new.
    fn run_index(&mut self, id: &str) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.runs.len();
        self.runs.push(DbRun {
            shown: None,
            visible: false,
            hidden_after: self.last_rowid,
        });
        self.index.insert(id.to_owned(), i);
        i
    }

    fn show(
        &mut self,
        conn: &Connection,
        i: usize,
        info: &RunInfo,
        out: &mut PartSink,
    ) -> rusqlite::Result<()> {
        let last_rowid = self.last_rowid;
        let Some(run) = self.runs.get_mut(i) else {
            return Ok(());
        };
        let shown = run.shown.get_or_insert_with(|| {
            Shown::new(
                self.parts
                    .claim(&info.experiment, info.display_name(), &info.id),
            )
        });
        shown.report(out, i, info.facts());
        let was_visible = std::mem::replace(&mut run.visible, true);
        let hidden_after = run.hidden_after;
        if !was_visible && hidden_after < last_rowid {
            let range = (&info.id, hidden_after, last_rowid);
            if let Err(e) = self.read_rows(conn, RUN_METRICS, range, false, out) {
                // The next poll reads them again.
                if let Some(run) = self.runs.get_mut(i) {
                    run.visible = false;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn hide(&mut self, i: usize, out: &mut PartSink) {
        let last_rowid = self.last_rowid;
        let Some(run) = self.runs.get_mut(i) else {
            return;
        };
        if run.visible {
            run.visible = false;
            run.hidden_after = last_rowid;
            if let Some(shown) = &mut run.shown {
                shown.report_deleted(out, i);
            }
        }
    }

    /// Reads the metric rows added since the last poll.
    fn read_new_metrics(&mut self, conn: &Connection, out: &mut PartSink) -> rusqlite::Result<()> {
        self.read_rows(conn, NEW_METRICS, [self.last_rowid], true, out)?;
        if self.last_row.is_none() && self.last_rowid > 0 {
            self.last_row = read_mark(conn, self.last_rowid)?;
        }
        Ok(())
    }

    /// Streams the rows of `sql` to `out`. With `follow`, `last_rowid` moves on with each row, so that a
    /// read cut short by an error goes on from there.
    fn read_rows(
        &mut self,
        conn: &Connection,
        sql: &str,
        params: impl rusqlite::Params,
        follow: bool,
        out: &mut PartSink,
    ) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            if follow {
                self.last_rowid = row.get(0)?;
                self.last_row = None;
            }
            match metric_row(row)? {
                Some(metric) => self.report_metric(&metric, out),
                None => self.skipped.bad_records += 1,
            }
        }
        Ok(())
    }

    fn report_metric(&mut self, m: &MetricRow, out: &mut PartSink) {
        let Some(i) = self.lookup_run(m.run) else {
            self.skipped.bad_records += 1;
            return;
        };
        if let Some(DbRun {
            visible: true,
            shown: Some(shown),
            ..
        }) = self.runs.get(i)
        {
            out.scalar(i, &shown.part, m.key, point(m.step, m.timestamp, m.value));
        }
    }

    /// The index of the run with id `run`; `None` when the runs table does not have it.
    fn lookup_run(&mut self, run: &str) -> Option<usize> {
        if self.cached_run.0 != run {
            self.cached_run.0.clear();
            self.cached_run.0.push_str(run);
            self.cached_run.1 = self.index.get(run).copied();
        }
        self.cached_run.1
    }
}

/// What identifies the metric row `rowid`; `None` when there is none.
fn read_mark(conn: &Connection, rowid: i64) -> rusqlite::Result<Option<RowMark>> {
    let mut stmt =
        conn.prepare_cached("SELECT key, timestamp, step, run_uuid FROM metrics WHERE rowid = ?1")?;
    let mut rows = stmt.query([rowid])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(RowMark {
        key: text(row, 0).unwrap_or_default(),
        timestamp: int(row.get_ref(1)?).unwrap_or_default(),
        step: int(row.get_ref(2)?).unwrap_or_default(),
        run: text(row, 3).unwrap_or_default(),
    }))
}

#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_identity(_: &Path) -> Option<(u64, u64)> {
    None
}
