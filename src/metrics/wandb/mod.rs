//! W&B offline runs: the transaction log `run-<id>.wandb` that `wandb.init` writes in every run
//! folder (`wandb/offline-run-<time>-<id>/`), which holds everything about the run.
//!
//! The log is a LevelDB-style record log (see [`framing`]) of `Record` protobufs (see [`proto`]).
//! History rows give scalars and images (the images are files under the run folder's `files/`),
//! the run, config, summary and exit records give facts. Other records (console output, system
//! stats, telemetry, file uploads...) are valid but not read.
//!
//! A corrupt chunk costs the rest of its 32 KiB block, as in wandb-core's own reader; a record
//! cut off at the end of a file waits for the rest while the file is followed and is counted as a
//! partial tail when the file is read once; a file that is not a W&B log is skipped whole.

mod facts;
pub mod framing;
mod history;
mod json;
mod paths;
pub mod proto;

use prost::Message;

use std::io;
use std::path::Path;

use super::{
    Decoder, FactKind, ImageSource, LogDecoder, LogFormat, LogImage, LogSink, Point, Skipped,
};
use framing::Framer;
use history::Rows;

pub use paths::{is_run_file, load_image, run_id, run_key};

/// W&B offline runs, in the format table: a run is named by the folder holding `wandb/` and its id, so
/// the parts of a run resumed offline are one run.
pub struct Wandb;

impl LogFormat for Wandb {
    fn name(&self) -> &'static str {
        "wandb"
    }

    fn is_log_file(&self, name: &str) -> bool {
        is_run_file(name)
    }

    fn run_path(&self, rel: &Path) -> Vec<String> {
        let key = run_key(rel).unwrap_or_default();
        key.split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn run_of_file(&self, path: &Path) -> Option<String> {
        run_id(path)
    }

    fn decoder(&self) -> Option<Decoder> {
        Some(Box::new(WandbDecoder::new()))
    }

    fn load_image(&self, path: &Path, source: &ImageSource) -> io::Result<Vec<u8>> {
        load_image(path, source)
    }
}

/// Incremental decoder of a `.wandb` file.
#[derive(Debug, Default)]
pub struct WandbDecoder {
    framer: Framer,
    rows: Rows,
    /// Framed records that did not decode, or held values that did not parse.
    bad_records: u64,
}

impl WandbDecoder {
    /// A decoder for a file read from its start.
    pub fn new() -> Self {
        WandbDecoder::default()
    }

    /// Whole records framed so far, whether or not they decoded.
    pub fn records(&self) -> u64 {
        self.framer.records()
    }
}

impl LogDecoder for WandbDecoder {
    /// See [`LogDecoder::decode`]. The decoder counts what it consumed, since chunks are aligned
    /// to 32 KiB blocks from the start of the file.
    fn decode(&mut self, buf: &[u8], eof: bool, sink: &mut dyn LogSink) -> usize {
        let rows = &mut self.rows;
        let bad = &mut self.bad_records;
        self.framer.feed(buf, eof, &mut |payload| {
            if !decode_record(payload, rows, sink) {
                *bad += 1;
            }
        })
    }

    fn skipped(&self) -> Skipped {
        let mut skipped = self.framer.skipped();
        skipped.bad_records += self.bad_records;
        skipped
    }
}

/// Sends what one serialized `Record` holds to `sink`; false if it does not decode or some of its
/// values do not parse (the others are still sent).
fn decode_record(payload: &[u8], rows: &mut Rows, sink: &mut dyn LogSink) -> bool {
    // Decoded from a buffer of its own, the record's strings are views into it, not copies.
    let Ok(record) = proto::Record::decode(bytes::Bytes::copy_from_slice(payload)) else {
        return false;
    };
    let mut bad = 0;
    if let Some(h) = &record.history {
        bad += history::row(h, rows, sink);
    }
    if let Some(r) = &record.run {
        bad += facts::run(r, sink);
    }
    if let Some(c) = &record.config {
        bad += facts::config(c, sink);
    }
    if let Some(s) = &record.summary {
        bad += facts::summary(s, sink);
    }
    if let Some(e) = &record.exit {
        facts::exit(e, sink);
    }
    bad == 0
}
