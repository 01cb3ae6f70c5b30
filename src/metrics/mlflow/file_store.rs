//! The file store: an `mlruns/` folder as MLflow's `FileStore` writes it.
//!
//! ```text
//! mlruns/<experiment_id>/meta.yaml                 name, lifecycle_stage
//! mlruns/<experiment_id>/<run_id>/meta.yaml        run_id, run_name, status (1 RUNNING, 2 SCHEDULED,
//!                                                  3 FINISHED, 4 FAILED, 5 KILLED), start_time, end_time
//!                                                  (ms), user_id, lifecycle_stage
//! mlruns/<experiment_id>/<run_id>/metrics/<key>    lines "timestamp value step" ("/" in a key: subfolders)
//! mlruns/<experiment_id>/<run_id>/params/<key>     the value, no newline (tags/<key> likewise)
//! ```
//!
//! - Each metric file is read from where the last poll stopped, a complete line at a time: an incomplete
//!   last line waits for its newline. A line is `timestamp value step`, or `timestamp value` (step 0, as
//!   MLflow reads it), or `timestamp value step dataset_name dataset_digest`; values are Python's
//!   `str(float)`, so `nan`, `inf` and `-inf` are written literally. Any other complete line is counted
//!   in [`Skipped::bad_records`]; blank lines are passed over.
//! - Experiments and runs are found anew on each poll, so those created later are read from their start.
//!   `.trash` (where MLflow moves deleted experiments) and other dot folders are passed over.
//! - A metric file that shrank or was replaced (MLflow only appends) makes the whole store be read again
//!   after `sink.reset()`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::facts::{Parts, RunInfo, Shown};
use super::meta_yaml::Meta;
use super::{LogSink, MlflowError, PartSink, Skipped, point};

/// The file that describes an experiment or a run.
const META: &str = "meta.yaml";

/// Bytes read from a metric file per step.
const CHUNK: usize = 1 << 20;

/// A reader of an MLflow file store (`mlruns/`). See the module docs.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    state: State,
}

/// What was read so far.
#[derive(Debug, Default)]
struct State {
    runs: Vec<FileRun>,
    /// Index into `runs` by run folder.
    index: HashMap<PathBuf, usize>,
    parts: Parts,
    skipped: Skipped,
}

#[derive(Debug)]
struct FileRun {
    /// The last complete meta.yaml read.
    meta: Option<Meta>,
    shown: Option<Shown>,
    visible: bool,
    metrics: BTreeMap<String, MetricFile>,
    /// Params read so far: MLflow never changes a param once logged.
    params: BTreeMap<String, String>,
}

/// How far one metric file was read.
#[derive(Debug, Default, Clone, Copy)]
struct MetricFile {
    /// Bytes decoded (up to the end of the last complete line).
    offset: u64,
    /// Bytes after `offset` that were read but end without a newline.
    pending: u64,
    /// (device, inode) of the file read.
    identity: Option<(u64, u64)>,
}

/// A run folder found in one poll.
struct Found {
    dir: PathBuf,
    /// Its meta.yaml; `None` while MLflow rewrites it.
    meta: Option<Meta>,
    experiment: String,
    experiment_active: bool,
}

/// Whether a poll could read on, or found a metric file rewritten.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done,
    Rewritten,
}

impl FileStore {
    /// Opens the file store `mlruns_dir`; it is read on the first poll.
    pub fn open(mlruns_dir: &Path) -> Result<FileStore, MlflowError> {
        let meta = fs::metadata(mlruns_dir).map_err(|source| MlflowError::Io {
            path: mlruns_dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(MlflowError::NotFileStore {
                path: mlruns_dir.to_path_buf(),
                why: "it is not a folder; give the mlruns folder of MLflow's tracking URI file:…/mlruns",
            });
        }
        if mlruns_dir.join(META).is_file() {
            return Err(MlflowError::NotFileStore {
                path: mlruns_dir.to_path_buf(),
                why: "it is an experiment or run folder (it has a meta.yaml); give the mlruns folder \
                      that holds the experiment folders",
            });
        }
        Ok(FileStore {
            root: mlruns_dir.to_path_buf(),
            state: State::default(),
        })
    }

    /// Reads what is new since the last poll and reports it to `sink`; `Ok(true)` when anything was
    /// reported.
    pub fn poll(&mut self, sink: &mut dyn LogSink) -> Result<bool, MlflowError> {
        let mut out = PartSink::new(sink);
        // A rewritten file voids what was read; the second read starts from nothing, so it cannot
        // find one again unless the store is being rewritten right now (then the next poll goes on).
        for _ in 0..2 {
            if self.read(&mut out)? == Outcome::Done {
                break;
            }
            self.state = State::default();
            out.reset();
        }
        Ok(out.reported)
    }

    /// What could not be read so far.
    pub fn skipped(&self) -> Skipped {
        self.state.skipped
    }

    /// Takes the store as read once: the incomplete last lines of metric files are counted in
    /// [`Skipped::partial_tail_bytes`]. (A later poll still reads them once they are complete.)
    pub fn finish(&mut self) {
        for file in self
            .state
            .runs
            .iter_mut()
            .flat_map(|r| r.metrics.values_mut())
        {
            self.state.skipped.partial_tail_bytes += std::mem::take(&mut file.pending);
        }
    }

    fn read(&mut self, out: &mut PartSink) -> Result<Outcome, MlflowError> {
        let mut present = vec![false; self.state.runs.len()];
        let mut runs = Vec::new();
        for mut run in find_runs(&self.root)? {
            if let Some(&i) = self.state.index.get(&run.dir) {
                // A run whose meta.yaml is being rewritten is not deleted: it keeps its last one.
                if let Some(p) = present.get_mut(i) {
                    *p = true;
                }
                if run.meta.is_none() {
                    run.meta = self.state.runs.get(i).and_then(|r| r.meta.clone());
                }
            }
            runs.push(run);
        }
        // Parts are named in the order runs began.
        runs.sort_by_cached_key(|run| {
            let meta = run.meta.as_ref();
            let start = meta.and_then(|m| m.int("start_time")).unwrap_or(i64::MAX);
            (start, meta.and_then(run_id).unwrap_or_default().to_owned())
        });
        for run in runs {
            let Some(meta) = &run.meta else { continue };
            let i = self.state.run_index(&run.dir);
            self.state.keep_meta(i, meta);
            if self.state.read_run(i, &run, meta, out)? == Outcome::Rewritten {
                return Ok(Outcome::Rewritten);
            }
        }
        // Runs whose folder went (to .trash, or `mlflow gc`) are deleted runs.
        for (i, _) in present.iter().enumerate().filter(|(_, p)| !**p) {
            self.state.hide(i, out);
        }
        Ok(Outcome::Done)
    }
}

/// Whether `dir` holds an experiment folder.
pub(super) fn holds_experiment(dir: &Path) -> bool {
    sub_dirs(dir).is_ok_and(|subs| subs.iter().any(|sub| experiment_meta(sub).is_some()))
}

/// The experiment folders of `dir` with their `meta.yaml`.
fn experiment_dirs(dir: &Path) -> io::Result<Vec<(PathBuf, Meta)>> {
    let subs = sub_dirs(dir)?;
    Ok(subs
        .into_iter()
        .filter_map(|sub| experiment_meta(&sub).map(|meta| (sub, meta)))
        .collect())
}

/// The meta.yaml of an experiment folder; `None` for other folders (a run's meta.yaml has an
/// experiment_id too, and a run_id).
fn experiment_meta(dir: &Path) -> Option<Meta> {
    read_meta(dir).filter(|m| m.has("experiment_id") && run_id(m).is_none())
}

/// Every run folder: a folder of an experiment with a meta.yaml.
fn find_runs(root: &Path) -> Result<Vec<Found>, MlflowError> {
    let io_error = |path: &Path, source| MlflowError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for (exp_dir, exp_meta) in experiment_dirs(root).map_err(|e| io_error(root, e))? {
        let experiment = exp_meta
            .get("name")
            .map(str::to_owned)
            .unwrap_or_else(|| file_name(&exp_dir));
        let experiment_active = exp_meta.get("lifecycle_stage") != Some("deleted");
        let runs = match sub_dirs(&exp_dir) {
            Ok(runs) => runs,
            // The experiment went to .trash since it was listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&exp_dir, e)),
        };
        // models/ and datasets/ hold their meta.yaml files a level further down.
        for dir in runs.into_iter().filter(|d| d.join(META).is_file()) {
            // MLflow rewrites a run's meta.yaml in place: it may be empty or cut short for a moment.
            let meta = read_meta(&dir).filter(|m| run_id(m).is_some());
            found.push(Found {
                dir,
                meta,
                experiment: experiment.clone(),
                experiment_active,
            });
        }
    }
    Ok(found)
}

fn run_id(meta: &Meta) -> Option<&str> {
    meta.get("run_id").or_else(|| meta.get("run_uuid"))
}

/// The folders in `dir`, sorted, without dot folders (`.trash`) and without following links.
fn sub_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)?.flatten() {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The `meta.yaml` of `dir`; `None` when there is none (or it cannot be read yet).
fn read_meta(dir: &Path) -> Option<Meta> {
    let bytes = fs::read(dir.join(META)).ok()?;
    // PyYAML ends what it writes with a newline; without one the file is being written.
    if !bytes.ends_with(b"\n") {
        return None;
    }
    Some(Meta::parse(&String::from_utf8_lossy(&bytes)))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// MLflow's `RunStatus` numbers, as the file store writes them (or the names older stores wrote).
fn status_name(meta: &Meta) -> Option<String> {
    // A run without a status is RUNNING, as MLflow reads it.
    let status = meta.get("status").unwrap_or("1");
    let name = match status {
        "1" => "RUNNING",
        "2" => "SCHEDULED",
        "3" => "FINISHED",
        "4" => "FAILED",
        "5" => "KILLED",
        other => other,
    };
    Some(name.to_owned())
}

/// The files under `dir` (recursively, not following links) by their path relative to it, joined with
/// `/`: the keys of metrics, params and tags.
fn key_files(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = stack.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let key = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if kind.is_dir() {
                stack.push((entry.path(), format!("{key}/")));
            } else if kind.is_file() {
                out.push((key, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The contents of the key files under `dir`, for the keys `want` accepts.
fn read_values(
    dir: &Path,
    mut want: impl FnMut(&str) -> bool,
) -> Result<BTreeMap<String, String>, MlflowError> {
    let io_error = |path: &Path, source| MlflowError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BTreeMap::new();
    for (key, path) in key_files(dir).map_err(|e| io_error(dir, e))? {
        if !want(&key) {
            continue;
        }
        match fs::read(&path) {
            Ok(bytes) => {
                out.insert(key, String::from_utf8_lossy(&bytes).into_owned());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, e)),
        }
    }
    Ok(out)
}

impl State {
    /// The index of the run in `dir`, added (hidden, nothing read) when new.
    fn run_index(&mut self, dir: &Path) -> usize {
        if let Some(&i) = self.index.get(dir) {
            return i;
        }
        let i = self.runs.len();
        self.runs.push(FileRun {
            meta: None,
            shown: None,
            visible: false,
            metrics: BTreeMap::new(),
            params: BTreeMap::new(),
        });
        self.index.insert(dir.to_path_buf(), i);
        i
    }

    fn keep_meta(&mut self, i: usize, meta: &Meta) {
        if let Some(run) = self.runs.get_mut(i) {
            run.meta = Some(meta.clone());
        }
    }

    /// Reports what changed in one run folder.
    fn read_run(
        &mut self,
        i: usize,
        run: &Found,
        meta: &Meta,
        out: &mut PartSink,
    ) -> Result<Outcome, MlflowError> {
        let visible = run.experiment_active && meta.get("lifecycle_stage") != Some("deleted");
        if !visible {
            self.hide(i, out);
            return Ok(Outcome::Done);
        }
        let info = self.run_info(i, run, meta)?;
        let Some(r) = self.runs.get_mut(i) else {
            return Ok(Outcome::Done);
        };
        let parts = &mut self.parts;
        let shown = r.shown.get_or_insert_with(|| {
            Shown::new(parts.claim(&info.experiment, info.display_name(), &info.id))
        });
        shown.report(out, i, info.facts());
        r.visible = true;
        let part = shown.part.clone();
        let metrics = key_files(&run.dir.join("metrics")).map_err(|source| MlflowError::Io {
            path: run.dir.join("metrics"),
            source,
        })?;
        for (key, path) in metrics {
            let file = r.metrics.entry(key.clone()).or_default();
            let sink = |tag: &str, p| out.scalar(i, &part, tag, p);
            let read = read_metric_file(&path, &key, file, sink, &mut self.skipped);
            match read.map_err(|source| MlflowError::Io { path, source })? {
                Outcome::Done => {}
                Outcome::Rewritten => return Ok(Outcome::Rewritten),
            }
        }
        Ok(Outcome::Done)
    }

    /// The run as its folder describes it now; params are read once, tags every time.
    fn run_info(&mut self, i: usize, run: &Found, meta: &Meta) -> Result<RunInfo, MlflowError> {
        let params = self.read_params(i, &run.dir)?;
        Ok(RunInfo {
            id: run_id(meta).unwrap_or_default().to_owned(),
            stored_name: meta.get("run_name").map(str::to_owned),
            experiment: run.experiment.clone(),
            status: status_name(meta),
            start_ms: meta.int("start_time"),
            end_ms: meta.int("end_time"),
            user: meta.get("user_id").map(str::to_owned),
            source_name: meta.get("source_name").map(str::to_owned),
            tags: read_values(&run.dir.join("tags"), |_| true)?,
            params,
        })
    }

    /// The run's params: those read before, and the files of those not read yet.
    fn read_params(
        &mut self,
        i: usize,
        dir: &Path,
    ) -> Result<BTreeMap<String, String>, MlflowError> {
        let Some(run) = self.runs.get_mut(i) else {
            return Ok(BTreeMap::new());
        };
        let mut params = read_values(&dir.join("params"), |k| !run.params.contains_key(k))?;
        // An empty file may be one MLflow created but has not written yet: it is read again next time.
        for (key, value) in &params {
            if !value.is_empty() {
                run.params.insert(key.clone(), value.clone());
            }
        }
        params.extend(run.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(params)
    }

    fn hide(&mut self, i: usize, out: &mut PartSink) {
        let Some(run) = self.runs.get_mut(i) else {
            return;
        };
        if run.visible {
            run.visible = false;
            if let Some(shown) = &mut run.shown {
                shown.report_deleted(out, i);
            }
        }
    }
}

/// Reads the complete lines appended to one metric file since `file.offset`.
fn read_metric_file(
    path: &Path,
    key: &str,
    file: &mut MetricFile,
    mut sink: impl FnMut(&str, super::Point),
    skipped: &mut Skipped,
) -> io::Result<Outcome> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Done),
        Err(e) => return Err(e),
    };
    let identity = file_identity(&meta);
    let replaced = file.identity.is_some() && identity != file.identity;
    if replaced || meta.len() < file.offset + file.pending {
        return Ok(Outcome::Rewritten);
    }
    file.identity = identity;
    if meta.len() == file.offset + file.pending {
        return Ok(Outcome::Done);
    }
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(file.offset))?;
    let mut buf = Vec::new();
    loop {
        let n = (&mut f).take(CHUNK as u64).read_to_end(&mut buf)?;
        let used = decode_lines(&buf, key, &mut sink, skipped);
        buf.drain(..used.min(buf.len()));
        file.offset += used as u64;
        if n == 0 {
            break;
        }
    }
    file.pending = buf.len() as u64;
    Ok(Outcome::Done)
}

/// Decodes the complete lines at the start of `buf`; returns the bytes they take.
fn decode_lines(
    buf: &[u8],
    key: &str,
    sink: &mut impl FnMut(&str, super::Point),
    skipped: &mut Skipped,
) -> usize {
    let mut used = 0;
    while let Some(nl) = buf
        .get(used..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
    {
        let line = buf.get(used..used + nl).unwrap_or_default();
        used += nl + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line) {
            Some((timestamp, value, step)) => sink(key, point(step, timestamp, value)),
            None => skipped.bad_records += 1,
        }
    }
    used
}

/// The invariants the fuzz target checks on arbitrary bytes as a metric file and as a `meta.yaml`: never
/// a panic, and a metric file read in two pieces (cut where its first byte says) gives the points it gives
/// read whole.
#[doc(hidden)]
pub fn check_metric_file(data: &[u8]) {
    let _ = Meta::parse(&String::from_utf8_lossy(data));
    let read = |pieces: &[&[u8]]| {
        let (mut points, mut skipped, mut buf) = (Vec::new(), Skipped::default(), Vec::new());
        for piece in pieces {
            buf.extend_from_slice(piece);
            let mut sink = |_: &str, p: super::Point| {
                points.push((p.step, p.wall_time.to_bits(), p.value.to_bits()))
            };
            let used = decode_lines(&buf, "key", &mut sink, &mut skipped);
            buf.drain(..used.min(buf.len()));
        }
        (points, skipped.bad_records)
    };
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (head, tail) = data.split_at(cut);
    assert_eq!(
        read(&[data]),
        read(&[head, tail]),
        "read in pieces differs from read whole"
    );
}

/// One metric line: (timestamp ms, value, step).
fn parse_line(line: &[u8]) -> Option<(i64, f64, i64)> {
    let text = std::str::from_utf8(line).ok()?;
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let (timestamp, value, step) = match fields.as_slice() {
        [t, v] => (*t, *v, "0"),
        // The last two of five are the dataset's name and digest.
        [t, v, s] | [t, v, s, _, _] => (*t, *v, *s),
        _ => return None,
    };
    Some((
        timestamp.parse().ok()?,
        value.parse().ok()?,
        step.parse().ok()?,
    ))
}

#[cfg(unix)]
fn file_identity(meta: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_identity(_: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mlflow_lines() {
        assert_eq!(
            parse_line(b"1700000000000 1.0 0"),
            Some((1700000000000, 1.0, 0))
        );
        assert_eq!(
            parse_line(b"1700000000000 1e-05 3"),
            Some((1700000000000, 1e-5, 3))
        );
        assert_eq!(parse_line(b"17 0.5"), Some((17, 0.5, 0)));
        assert_eq!(parse_line(b"17 0.5 4 train abc123"), Some((17, 0.5, 4)));
        let (_, inf, _) = parse_line(b"17 inf 8").unwrap_or_default();
        assert_eq!(inf, f64::INFINITY);
        let (_, neg, _) = parse_line(b"17 -inf 8").unwrap_or_default();
        assert_eq!(neg, f64::NEG_INFINITY);
        assert!(parse_line(b"17 nan 7").is_some_and(|(_, v, _)| v.is_nan()));
        assert_eq!(parse_line(b"17 0.5 4 extra"), None);
        assert_eq!(parse_line(b"x 0.5 4"), None);
        assert_eq!(parse_line(b"\xff\xfe"), None);
    }

    #[test]
    fn a_partial_line_waits() {
        let mut got = Vec::new();
        let mut skipped = Skipped::default();
        let mut sink = |_: &str, p: super::super::Point| got.push(p.step);
        let used = decode_lines(b"1 1.0 0\n2 2.0 1\n3 3.", "k", &mut sink, &mut skipped);
        assert_eq!(used, 16);
        assert_eq!(got, vec![0, 1]);
    }
}
