//! MLflow's stores as the format table reads them: a [`LogReader`] over [`MlflowDb`] or [`FileStore`],
//! opened on its first poll (a store that cannot be opened is an error of that poll, retried on the next),
//! and the two [`LogFormat`]s.

use std::io;
use std::path::{Path, PathBuf};

use super::{FileStore, MlflowDb, MlflowError, is_file_store, is_mlflow_db};
use crate::metrics::tail::PollStatus;
use crate::metrics::{Format, LogFormat, LogReader, LogSink, Skipped};

/// Which store a reader reads.
#[derive(Debug)]
enum Store {
    Db(Box<MlflowDb>),
    Files(FileStore),
}

/// A store read poll by poll.
#[derive(Debug)]
pub struct StoreReader {
    path: PathBuf,
    folder: bool,
    store: Option<Store>,
    polled: bool,
}

impl StoreReader {
    fn new(path: &Path, folder: bool) -> Self {
        StoreReader {
            path: path.to_path_buf(),
            folder,
            store: None,
            polled: false,
        }
    }

    fn open(&self) -> Result<Store, MlflowError> {
        Ok(match self.folder {
            true => Store::Files(FileStore::open(&self.path)?),
            false => Store::Db(Box::new(MlflowDb::open(&self.path)?)),
        })
    }
}

impl LogReader for StoreReader {
    fn poll(&mut self, sink: &mut dyn LogSink, finish: bool) -> io::Result<PollStatus> {
        if !self.path.exists() {
            return Ok(PollStatus {
                gone: true,
                ..PollStatus::default()
            });
        }
        let to_io = |e: MlflowError| io::Error::other(e.to_string());
        if self.store.is_none() {
            self.store = Some(self.open().map_err(to_io)?);
        }
        let Some(store) = self.store.as_mut() else {
            return Ok(PollStatus::default());
        };
        let reported = match store {
            Store::Db(db) => db.poll(sink).map_err(to_io)?,
            Store::Files(files) => {
                let reported = files.poll(sink).map_err(to_io)?;
                if finish {
                    files.finish();
                }
                reported
            }
        };
        self.polled = true;
        Ok(PollStatus {
            bytes_read: u64::from(reported),
            ..PollStatus::default()
        })
    }

    fn skipped(&self) -> Skipped {
        match &self.store {
            Some(Store::Db(db)) => db.skipped(),
            Some(Store::Files(files)) => files.skipped(),
            None => Skipped::default(),
        }
    }

    fn started(&self) -> bool {
        self.polled
    }
}

/// MLflow's SQLite store (`mlflow.db`): a run per MLflow run, below the folder holding the database.
pub struct MlflowSqlite;

impl LogFormat for MlflowSqlite {
    fn name(&self) -> &'static str {
        "mlflow-sqlite"
    }

    fn is_log_file(&self, name: &str) -> bool {
        is_mlflow_db(name)
    }

    fn run_of_file(&self, _path: &Path) -> Option<String> {
        Some(".".into())
    }

    fn open(&self, path: &Path, _format: Format) -> Box<dyn LogReader> {
        Box::new(StoreReader::new(path, false))
    }
}

/// MLflow's file store (an `mlruns/` folder): a run per MLflow run, below the folder holding it.
pub struct MlflowFiles;

impl LogFormat for MlflowFiles {
    fn name(&self) -> &'static str {
        "mlflow-files"
    }

    /// Found in a walk only under MLflow's default name, so that a walk does not open the `meta.yaml`
    /// files below every folder it passes; a store of another name is read when given itself.
    fn is_log_folder(&self, dir: &Path) -> bool {
        dir.file_name().is_some_and(|n| n == "mlruns") && is_file_store(dir)
    }

    fn is_log_root(&self, dir: &Path) -> bool {
        is_file_store(dir)
    }

    fn open(&self, path: &Path, _format: Format) -> Box<dyn LogReader> {
        Box::new(StoreReader::new(path, true))
    }
}
