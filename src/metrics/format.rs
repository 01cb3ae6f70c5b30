//! The log formats difflab reads, in one table. A format is a [`LogFormat`]: how its logs are found (a file
//! by its name, or a whole folder), which run a log belongs to, how it is read incrementally (a byte-stream
//! [`Decoder`] behind a [`FileTail`], or a reader of its own, as for a database), and how its images are
//! loaded. A new format is its module and one row of [`FORMATS`] (and a [`Format`] name).

use std::fmt;
use std::io;
use std::path::Path;

use super::tail::{FileTail, PollStatus};
use super::{Decoder, ImageSource, LogSink, Skipped};

/// A log being read: each poll reads what was added since the last one.
pub trait LogReader: fmt::Debug + Send {
    /// Reads what was added since the last call and reports it to `sink`. With `finish` the log is taken
    /// as complete (read once): an incomplete last line or record is decoded if it can be, or counted.
    fn poll(&mut self, sink: &mut dyn LogSink, finish: bool) -> io::Result<PollStatus>;

    /// What could not be read so far.
    fn skipped(&self) -> Skipped;

    /// Whether the reader has read anything yet (a log found after the follower started is read from
    /// its start).
    fn started(&self) -> bool;
}

/// A log format.
pub trait LogFormat: Sync {
    /// Its short name, as `difflab metrics` prints it.
    fn name(&self) -> &'static str;

    /// Whether a file named `name` is a log of this format.
    fn is_log_file(&self, _name: &str) -> bool {
        false
    }

    /// Whether a file named `name` is read as part of a run when its folder holds a log of another format
    /// (a `config.json` beside an event file), and never alone.
    fn is_companion_file(&self, _name: &str) -> bool {
        false
    }

    /// Whether the folder `dir` is, as a whole, one log of this format (read as one, not walked).
    fn is_log_folder(&self, _dir: &Path) -> bool {
        false
    }

    /// Whether the folder `dir`, given as a root, is one log of this format (as [`Self::is_log_folder`],
    /// where a walk may look less closely).
    fn is_log_root(&self, dir: &Path) -> bool {
        self.is_log_folder(dir)
    }

    /// The run folder of the log at `rel` (relative to the root given, never empty), as path components;
    /// the log's own folder unless the format names its runs otherwise.
    fn run_path(&self, rel: &Path) -> Vec<String> {
        folder_parts(rel)
    }

    /// The run a log given directly (not found in a folder) is named by, when the format names it (a
    /// W&B run by its id); `None` keeps the usual name.
    fn run_of_file(&self, _path: &Path) -> Option<String> {
        None
    }

    /// A fresh byte-stream decoder, for formats read as a growing file.
    fn decoder(&self) -> Option<Decoder> {
        None
    }

    /// A reader of the log at `path`.
    fn open(&self, path: &Path, format: Format) -> Box<dyn LogReader> {
        Box::new(FileTail::new(path, format))
    }

    /// The PNG bytes of an image this format reported from the log at `path`.
    fn load_image(&self, _path: &Path, _source: &ImageSource) -> io::Result<Vec<u8>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{} logs hold no images", self.name()),
        ))
    }
}

/// The folders of the log at `rel`, as path components.
pub fn folder_parts(rel: &Path) -> Vec<String> {
    let dir = rel.parent().unwrap_or(Path::new(""));
    dir.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect()
}

/// A format's name in events and sources: an index into [`FORMATS`], cheap to copy and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// TensorBoard event files (`events.out.tfevents.*`).
    TfEvents,
    /// One JSON object per line (`*.jsonl`, `*.ndjson`).
    JsonLines,
    /// Comma-separated values with a header row (`*.csv`).
    Csv,
    /// W&B offline runs (`wandb/offline-run-*/run-<id>.wandb`).
    Wandb,
    /// MLflow's SQLite tracking store (`mlflow.db`).
    MlflowSqlite,
    /// MLflow's file store (an `mlruns/` folder).
    MlflowFiles,
    /// A run's config beside its logs (`config.json`, `args.json`, `hparams.json`).
    RunConfig,
}

/// Every format, in the order a file name is tried against them.
pub const FORMATS: &[(Format, &dyn LogFormat)] = &[
    (Format::TfEvents, &super::tfevents::TfEvents),
    (Format::JsonLines, &super::jsonl::JsonLines),
    (Format::Csv, &super::csv::Csv),
    (Format::Wandb, &super::wandb::Wandb),
    (Format::MlflowSqlite, &super::mlflow::MlflowSqlite),
    (Format::MlflowFiles, &super::mlflow::MlflowFiles),
    (Format::RunConfig, &super::run_config::RunConfig),
];

impl Format {
    /// The format of a file, from its name; `None` for files that are not logs.
    pub fn detect(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        FORMATS
            .iter()
            .find(|(_, f)| f.is_log_file(name))
            .map(|(format, _)| *format)
    }

    /// The format a file is read in as part of the run of its folder, if that folder holds a log.
    pub fn detect_companion(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        FORMATS
            .iter()
            .find(|(_, f)| f.is_companion_file(name))
            .map(|(format, _)| *format)
    }

    /// The format a folder is one log of, if any.
    pub fn detect_folder(dir: &Path) -> Option<Format> {
        FORMATS
            .iter()
            .find(|(_, f)| f.is_log_folder(dir))
            .map(|(format, _)| *format)
    }

    /// The format a folder given as a root is one log of, if any.
    pub fn detect_root(dir: &Path) -> Option<Format> {
        FORMATS
            .iter()
            .find(|(_, f)| f.is_log_root(dir))
            .map(|(format, _)| *format)
    }

    /// The format's table entry.
    pub fn entry(self) -> &'static dyn LogFormat {
        match FORMATS.iter().find(|(f, _)| *f == self) {
            Some((_, entry)) => *entry,
            None => FORMATS[0].1,
        }
    }

    /// A fresh byte-stream decoder for this format; `None` for formats read otherwise.
    pub fn decoder(self) -> Option<Decoder> {
        self.entry().decoder()
    }

    /// A reader of the log at `path`.
    pub fn open(self, path: &Path) -> Box<dyn LogReader> {
        self.entry().open(path, self)
    }

    /// The PNG bytes of an image reported from the log at `path`.
    pub fn load_image(self, path: &Path, source: &ImageSource) -> io::Result<Vec<u8>> {
        self.entry().load_image(path, source)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.entry().name())
    }
}
