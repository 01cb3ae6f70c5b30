//! What a log holds besides scalars: images, and facts about the run (its name and state, config, summary).

use std::path::PathBuf;

/// Where the PNG of a logged image is; the image is read only when it is shown or written out, so that a
/// long run's images cost memory only for where they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Inside the log file: the record that starts `offset` bytes into the file and is `len` bytes long
    /// (framing included) holds it; `index` counts the images of that record in the order they were
    /// reported. The format re-reads the record and takes that image out.
    Record { offset: u64, len: u64, index: u32 },
    /// A file beside the log (W&B media), as a path relative to the log file's folder.
    File(PathBuf),
}

/// One logged image of a tag.
#[derive(Debug, Clone, PartialEq)]
pub struct LogImage {
    pub step: i64,
    /// Seconds since the Unix epoch; NaN when unknown.
    pub wall_time: f64,
    pub width: u32,
    pub height: u32,
    /// A caption the log gives the image, if any.
    pub caption: Option<String>,
    pub source: ImageSource,
}

/// What kind of run-level fact a reader reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactKind {
    /// About the run itself: `id`, `name`, `state` ("running", "finished", "failed", "killed", "crashed"),
    /// `tags` (a list of strings), `project`, `group`, `job_type`, `experiment`, `start_time` / `end_time`
    /// (Unix seconds), `user`, `source`.
    Info,
    /// A configuration value: W&B config, MLflow params, TensorBoard hparams, a `config.json` beside a log.
    Config,
    /// A summary value (W&B summary: the last or best value of a key).
    Summary,
}

/// The width and height a PNG's header gives, if `png` starts like a PNG.
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !png.starts_with(SIGNATURE) || png.get(12..16)? != b"IHDR" {
        return None;
    }
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(png.get(at..at + 4)?.try_into().ok()?))
    };
    Some((word(16)?, word(20)?))
}
