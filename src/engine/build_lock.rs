//! One TensorRT engine build at a time per engine cache. ONNX Runtime writes engines and the timing cache
//! in place, without a temporary file: shards of a job array that start together would each build the same
//! engine into the same files. With the lock, the first builds and the others wait, then load its engine.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct BuildLock {
    _file: File,
    /// How long another holder kept us waiting.
    pub waited: Option<Duration>,
    pub path: PathBuf,
}

impl BuildLock {
    /// Takes `.build.lock` in `dir` (created if need be), waiting while another process or thread holds it.
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(".build.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let waited = match file.try_lock() {
            Ok(()) => None,
            Err(TryLockError::WouldBlock) => {
                let start = Instant::now();
                file.lock()?;
                Some(start.elapsed())
            }
            Err(TryLockError::Error(e)) => return Err(e),
        };
        Ok(Self {
            _file: file,
            waited,
            path,
        })
    }

    /// A line for the log when the lock was held by another: who waited how long, and for what.
    pub fn wait_note(&self) -> Option<String> {
        self.waited.map(|w| {
            format!(
                "waited {:.0} s for another process building TensorRT engines (lock {})",
                w.as_secs_f64(),
                self.path.display()
            )
        })
    }
}
