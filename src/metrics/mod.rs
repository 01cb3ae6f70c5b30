//! Training-log metrics: readers for JSON lines, CSV and TensorBoard event files, a live follower,
//! and series tools (smoothing, downsampling, axes).
//!
//! Every reader is an incremental [`Decoder`]: it is fed the bytes of a file as they become
//! available, consumes whole lines or records, and leaves a partial tail for the next call. The
//! same decoders serve a one-shot [`load`] and the live [`follow::Follower`], so a file is parsed
//! the same way whether it is read once or followed as it grows.
//!
//! A directory tree is a set of runs: each folder that holds at least one log file is a run,
//! named by its path relative to the root given.

pub mod csv;
pub mod diff;
pub mod follow;
pub mod format;
pub mod image_strip;
pub mod item;
pub mod jsonl;
pub mod mlflow;
pub mod report;
pub mod run_config;
pub mod series;
pub mod store;
pub mod tail;
pub mod tfevents;
pub mod wandb;

use std::fmt;
use std::path::{Path, PathBuf};

pub use follow::{FollowEvent, FollowOptions, Follower};
pub use format::{FORMATS, Format, LogFormat, LogReader};
pub use item::{FactKind, ImageSource, LogImage};
pub use series::{Point, Series};
pub use store::{Run, Source, Store};

/// Errors from the metrics readers.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A path could not be read.
    #[error("cannot read {}: {}", path.display(), crate::path_error::reason(path, error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A path given to a reader holds no log file difflab can read.
    #[error("{0}: no JSON lines, CSV or TensorBoard event files found")]
    NoLogs(PathBuf),
    /// A CSV log whose first row holds numbers, not column names.
    #[error(
        "{0}: this CSV log has no header row; difflab needs a first row naming the columns, e.g. step,loss"
    )]
    MissingHeader(PathBuf),
    /// A path that is a FIFO, socket or device: reading it could wait forever.
    #[error(
        "{0} is not a regular file or folder (a FIFO, socket or device); give a log file or a folder of them"
    )]
    NotAFile(PathBuf),
    /// The file watcher could not be set up.
    #[error("watching {path}: {message}")]
    Watch { path: PathBuf, message: String },
}

impl MetricsError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        MetricsError::Io {
            path: path.into(),
            error,
        }
    }
}

/// What a decoder could not use. Every corrupt input ends up counted here; nothing is dropped
/// silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Lines, rows or records that were complete but could not be decoded (bad JSON, a row with
    /// the wrong number of fields, a TFRecord whose data checksum or protobuf is broken).
    pub bad_records: u64,
    /// Bytes skipped while resynchronising after a TFRecord header with a bad length checksum.
    pub skipped_bytes: u64,
    /// Bytes of an incomplete last line or record at the end of a file that was read once.
    pub partial_tail_bytes: u64,
    /// A CSV log's first row holds numbers, not column names: nothing in it can be named.
    pub missing_header: bool,
}

impl Skipped {
    /// True when nothing was skipped.
    pub fn is_empty(&self) -> bool {
        *self == Skipped::default()
    }

    /// Adds another count to this one.
    pub fn add(&mut self, other: &Skipped) {
        self.bad_records += other.bad_records;
        self.skipped_bytes += other.skipped_bytes;
        self.partial_tail_bytes += other.partial_tail_bytes;
        self.missing_header |= other.missing_header;
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.bad_records > 0 {
            parts.push(format!("{} bad records", self.bad_records));
        }
        if self.skipped_bytes > 0 {
            parts.push(format!("{} bytes resynced", self.skipped_bytes));
        }
        if self.partial_tail_bytes > 0 {
            parts.push(format!("{} bytes partial tail", self.partial_tail_bytes));
        }
        if self.missing_header {
            parts.push(
                "all rows (no header row: the first row must name the columns, e.g. step,loss)"
                    .into(),
            );
        }
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// One scalar read from a log: a value of the series `tag` at `step`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub point: Point,
}

/// Receives what a reader reads. Tags are borrowed so that a sink that already knows a tag (the usual
/// case: a handful of tags, millions of points) need not allocate.
pub trait LogSink {
    fn scalar(&mut self, tag: &str, point: Point);

    /// An image logged under `tag`.
    fn image(&mut self, _tag: &str, _image: LogImage) {}

    /// A run-level fact; a later fact with the same kind and key replaces the earlier one.
    fn fact(&mut self, _kind: FactKind, _key: &str, _value: serde_json::Value) {}

    /// What follows belongs to the run `part` below the run of the file read (an `mlflow.db` holds many
    /// runs: `part` is "EXPERIMENT/RUN_NAME"); "" is the file's own run, where every reader starts.
    fn part(&mut self, _part: &str) {}

    /// The file being read shrank, was replaced or rewritten: what was sent from it before is void, and
    /// it is read again from its start (its items follow).
    fn reset(&mut self) {}
}

impl<F: FnMut(&str, Point)> LogSink for F {
    fn scalar(&mut self, tag: &str, point: Point) {
        self(tag, point)
    }
}

/// An incremental decoder for one log file.
pub trait LogDecoder: fmt::Debug + Send {
    /// Decodes the complete lines or records at the start of `buf`, sends their scalars to
    /// `sink`, and returns how many bytes were consumed. The rest of `buf` (an incomplete last
    /// line or record) must be passed again, followed by newer bytes, on the next call.
    ///
    /// With `eof` set the file is taken as finished: a last line without a newline is decoded
    /// if it can be, and an incomplete tail is counted in [`Skipped::partial_tail_bytes`]; all
    /// of `buf` is then consumed.
    fn decode(&mut self, buf: &[u8], eof: bool, sink: &mut dyn LogSink) -> usize;

    /// What was skipped so far.
    fn skipped(&self) -> Skipped;
}

/// A decoder of whichever format a file is in.
pub type Decoder = Box<dyn LogDecoder>;

/// Decodes a whole in-memory log, as if it were a complete file. Handy for tests and fuzzing.
pub fn decode_bytes(format: Format, bytes: &[u8]) -> (Vec<Scalar>, Skipped) {
    let Some(mut decoder) = format.decoder() else {
        return (Vec::new(), Skipped::default());
    };
    let mut out = Vec::new();
    let mut sink = |tag: &str, point: Point| {
        out.push(Scalar {
            tag: tag.to_owned(),
            point,
        })
    };
    let used = decoder.decode(bytes, true, &mut sink);
    debug_assert_eq!(used, bytes.len());
    (out, decoder.skipped())
}

/// Decodes `bytes` fed in pieces of the given sizes (cycled), the way a growing file is read,
/// then finishes as at the end of a file.
pub fn decode_chunked(format: Format, bytes: &[u8], sizes: &[usize]) -> (Vec<Scalar>, Skipped) {
    let Some(mut decoder) = format.decoder() else {
        return (Vec::new(), Skipped::default());
    };
    let mut out = Vec::new();
    let mut sink = |tag: &str, point: Point| {
        out.push(Scalar {
            tag: tag.to_owned(),
            point,
        })
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut i = 0;
    while fed < bytes.len() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        let end = (fed + n).min(bytes.len());
        pending.extend_from_slice(&bytes[fed..end]);
        fed = end;
        i += 1;
        let used = decoder.decode(&pending, false, &mut sink);
        assert!(
            used <= pending.len(),
            "a decoder consumed more than it was given"
        );
        pending.drain(..used);
    }
    let used = decoder.decode(&pending, true, &mut sink);
    assert_eq!(
        used,
        pending.len(),
        "a decoder left bytes at the end of a file"
    );
    (out, decoder.skipped())
}

/// The invariants the fuzz targets check on arbitrary input: decoding never panics, and a file
/// read in pieces (as while following it) gives what it gives when read whole, whenever the
/// whole read found nothing to skip.
#[doc(hidden)]
pub fn check_decoder(format: Format, data: &[u8]) {
    let (whole, skipped) = decode_bytes(format, data);
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let sizes = [1 + (first as usize % 61), 1, 7, 4096];
    let (pieces, pieces_skipped) = decode_chunked(format, rest, &sizes);
    let (whole_rest, rest_skipped) = decode_bytes(format, rest);
    if rest_skipped.is_empty() {
        let key = |s: &Scalar| {
            (
                s.tag.clone(),
                s.point.step,
                s.point.wall_time.to_bits(),
                s.point.value.to_bits(),
            )
        };
        let a: Vec<_> = whole_rest.iter().map(key).collect();
        let b: Vec<_> = pieces.iter().map(key).collect();
        assert_eq!(a, b, "read in pieces differs from read whole");
        assert_eq!(pieces_skipped, rest_skipped);
    }
    let _ = (whole, skipped);
}

/// Loads every run under each of `roots` (directories or single log files) into a [`Store`].
///
/// With one root, run names are paths relative to it (`.` for the root itself); with several,
/// each name starts with its root relative to the roots' common folder (see [`root_labels`]), so runs
/// from different roots stay apart and read short.
pub fn load<P: AsRef<Path>>(roots: &[P]) -> Result<Store, MetricsError> {
    let mut store = Store::new();
    let Found { files, passed_by } = discover_all(roots)?;
    // Files are independent: decode them on a few threads, then merge in a stable order.
    let results = tail::read_files_parallel(&files);
    for (file, result) in files.iter().zip(results) {
        for (part, source) in result? {
            store.insert_source(&join_run(&file.run, &part), source);
        }
    }
    store.passed_by = passed_by;
    Ok(store)
}

/// The name of the run `part` below `run` (an MLflow run below the folder of its `mlflow.db`).
pub fn join_run(run: &str, part: &str) -> String {
    match (run, part) {
        (run, "") => run.to_owned(),
        (".", part) => part.to_owned(),
        (run, part) => format!("{}/{part}", run.trim_end_matches('/')),
    }
}

/// A log file found under a root, with the run it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub run: String,
    pub path: PathBuf,
    pub format: Format,
}

/// Finds the log files under each root. Errors if a root does not exist or holds no logs.
pub fn discover_all<P: AsRef<Path>>(roots: &[P]) -> Result<Found, MetricsError> {
    let labels = root_labels(roots);
    let mut all = Found::default();
    for (root, label) in roots.iter().zip(&labels) {
        let root = root.as_ref();
        let found = discover(root, label.as_deref())?;
        if found.files.is_empty() {
            return Err(MetricsError::NoLogs(root.to_path_buf()));
        }
        all.files.extend(found.files);
        all.passed_by.extend(found.passed_by);
    }
    Ok(all)
}

/// Finds the log files under `root`, sorted by run then path. A missing root is an error; a
/// root without logs gives an empty list.
/// The folder a root names its run by: its own, or an event file's folder (TensorBoard names a run by
/// its folder; an event file's name is a timestamp and host).
fn run_folder(root: &Path) -> &Path {
    match (Format::detect(root), root.parent()) {
        (Some(Format::TfEvents), Some(dir)) if !dir.as_os_str().is_empty() && root.is_file() => dir,
        _ => root,
    }
}

/// The name each root gives its runs when there are several: its run folder relative to the
/// folder all of them share (`runs/a`, `runs/b` → `a`, `b`); `None` for a single root.
pub fn root_labels<P: AsRef<Path>>(roots: &[P]) -> Vec<Option<String>> {
    if roots.len() < 2 {
        return vec![None; roots.len()];
    }
    let folders: Vec<&Path> = roots.iter().map(|r| run_folder(r.as_ref())).collect();
    let mut base = folders[0].parent().unwrap_or(Path::new(""));
    // Strictly above every folder, so that each keeps at least its own name.
    while !folders.iter().all(|f| f.starts_with(base) && *f != base) && !base.as_os_str().is_empty()
    {
        base = base.parent().unwrap_or(Path::new(""));
    }
    folders
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(base).unwrap_or(f).display().to_string();
            Some(if rel.is_empty() {
                f.display().to_string()
            } else {
                rel
            })
        })
        .collect()
}

/// What a walk of a log folder found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub files: Vec<LogFile>,
    /// Files named like logs that are not read (a FIFO, socket or device, a symlink to a folder), with why.
    pub passed_by: Vec<PassedBy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedBy {
    pub path: PathBuf,
    pub why: &'static str,
}

impl std::fmt::Display for PassedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: skipped: {}", self.path.display(), self.why)
    }
}

/// Why a file named like a log is not read, when it is not a regular file.
fn not_regular(path: &Path, kind: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_file() || (kind.is_symlink() && path.is_file()) {
        return None;
    }
    Some(if kind.is_fifo() {
        "it is a FIFO (named pipe), not a log file; reading it would wait for a writer forever"
    } else if kind.is_socket() {
        "it is a socket, not a log file"
    } else if kind.is_block_device() || kind.is_char_device() {
        "it is a device, not a log file"
    } else if path.is_dir() {
        "it is a symlink to a folder, which is not followed (it could make a cycle)"
    } else {
        "it is a symlink to nothing, or to something that is not a log file"
    })
}

/// Finds the log files under `root`; runs are named relative to it, after `label` when given.
pub fn discover(root: &Path, label: Option<&str>) -> Result<Found, MetricsError> {
    let meta = std::fs::metadata(root).map_err(|e| MetricsError::io(root, e))?;
    let mut out = Vec::new();
    let mut passed_by = Vec::new();
    if !meta.is_file() && !meta.is_dir() {
        return Err(MetricsError::NotAFile(root.into()));
    }
    if meta.is_file() {
        let format = Format::detect(root).ok_or_else(|| MetricsError::NoLogs(root.into()))?;
        let run = match (label, format.entry().run_of_file(root)) {
            (Some(l), _) => l.to_string(),
            (None, Some(run)) => run,
            (None, None) => run_folder(root)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| ".".into()),
        };
        out.push(LogFile {
            run,
            path: root.to_path_buf(),
            format,
        });
        return Ok(Found {
            files: out,
            passed_by,
        });
    }
    if let Some(format) = Format::detect_root(root) {
        // The root is one log (an MLflow file store): its runs are named below it.
        out.push(LogFile {
            run: label.unwrap_or(".").to_string(),
            path: root.to_path_buf(),
            format,
        });
        return Ok(Found {
            files: out,
            passed_by,
        });
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // The root must be readable; a subfolder that vanished or is unreadable is passed by.
            Err(e) if dir == root => return Err(MetricsError::io(&dir, e)),
            Err(_) => continue,
        };
        let logs_before = out.len();
        let mut companions = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                match Format::detect_folder(&path) {
                    // A folder that is one log (an MLflow file store) is read as a whole.
                    Some(format) => out.push(LogFile {
                        run: run_of(root, &path, format, label),
                        path,
                        format,
                    }),
                    None => stack.push(path),
                }
            } else if let Some(format) = Format::detect(&path) {
                // Only regular files, through symlinks too: a FIFO would block the reader forever,
                // and a symlinked folder could make a cycle.
                if let Some(why) = not_regular(&path, kind) {
                    passed_by.push(PassedBy { path, why });
                    continue;
                }
                out.push(LogFile {
                    run: run_of(root, &path, format, label),
                    path,
                    format,
                });
            } else if let Some(format) = Format::detect_companion(&path)
                && not_regular(&path, kind).is_none()
            {
                companions.push(LogFile {
                    run: run_of(root, &path, format, label),
                    path,
                    format,
                });
            }
        }
        // A run's config.json is read only beside its logs: elsewhere it is likely a model's.
        if out.len() > logs_before {
            out.extend(companions);
        }
    }
    out.sort_by(|a, b| (&a.run, &a.path).cmp(&(&b.run, &b.path)));
    passed_by.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Found {
        files: out,
        passed_by,
    })
}

/// The run of the log at `path` under `root`, as its format names it, after the root's label.
fn run_of(root: &Path, path: &Path, format: Format, label: Option<&str>) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts = format.entry().run_path(rel);
    let rel = parts.join("/");
    match (label, rel.is_empty()) {
        (None, true) => ".".into(),
        (None, false) => rel,
        (Some(l), true) => l.to_string(),
        (Some(l), false) => format!("{}/{rel}", l.trim_end_matches('/')),
    }
}

/// The name of the run in `dir` under `root`: its path below the root, after the root's label.
pub fn run_name(root: &Path, dir: &Path, label: Option<&str>) -> String {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let rel = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    match (label, rel.is_empty()) {
        (None, true) => ".".into(),
        (None, false) => rel,
        (Some(l), true) => l.to_string(),
        (Some(l), false) => format!("{}/{rel}", l.trim_end_matches('/')),
    }
}

/// Matches a tag against a pattern: `*` and `?` are wildcards over the whole tag; a pattern
/// without wildcards matches every tag that contains it.
pub fn tag_matches(pattern: &str, tag: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return tag.contains(pattern);
    }
    glob_match(pattern.as_bytes(), tag.as_bytes())
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative wildcard matching with single-star backtracking: linear in practice, no
    // recursion to blow the stack on hostile patterns.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        assert_eq!(
            Format::detect(Path::new("a/events.out.tfevents.123.host")),
            Some(Format::TfEvents)
        );
        assert_eq!(
            Format::detect(Path::new("m.jsonl")),
            Some(Format::JsonLines)
        );
        assert_eq!(Format::detect(Path::new("m.CSV")), Some(Format::Csv));
        assert_eq!(Format::detect(Path::new("notes.txt")), None);
    }

    #[test]
    fn globs() {
        assert!(tag_matches("loss", "train/loss"));
        assert!(!tag_matches("loss", "fid"));
        assert!(tag_matches("train/*", "train/loss"));
        assert!(!tag_matches("train/*", "eval/loss"));
        assert!(tag_matches("*/l?ss", "eval/loss"));
        assert!(tag_matches("*a*b*", "xxaxxbxx"));
        assert!(!tag_matches("*a*b", "xxaxxbxx"));
    }

    #[test]
    fn run_names() {
        let root = Path::new("/logs");
        assert_eq!(run_name(root, Path::new("/logs"), None), ".");
        assert_eq!(run_name(root, Path::new("/logs/a/b"), None), "a/b");
        assert_eq!(run_name(root, Path::new("/logs/a"), Some("logs")), "logs/a");
        let labels = root_labels(&[
            Path::new("/x/runs/a"),
            Path::new("/x/runs/b/c"),
            Path::new("/x/runs"),
        ]);
        let labels: Vec<Option<&str>> = labels.iter().map(|l| l.as_deref()).collect();
        assert_eq!(labels, [Some("runs/a"), Some("runs/b/c"), Some("runs")]);
        assert_eq!(root_labels(&[Path::new("a")]), [None]);
    }
}
