//! Shared by the integration tests: a sink that records everything, and the fixture files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use difflab::metrics::wandb::WandbDecoder;
use difflab::metrics::{FactKind, LogDecoder, LogImage, LogSink, Point, Skipped};
use serde_json::Value;

/// One thing a decoder sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Scalar(String, Point),
    Image(String, LogImage),
    Fact(FactKind, String, Value),
    Part(String),
    Reset,
}

/// Records every call.
#[derive(Debug, Default)]
pub struct Collect(pub Vec<Event>);

impl LogSink for Collect {
    fn scalar(&mut self, tag: &str, point: Point) {
        self.0.push(Event::Scalar(tag.into(), point));
    }
    fn image(&mut self, tag: &str, image: LogImage) {
        self.0.push(Event::Image(tag.into(), image));
    }
    fn fact(&mut self, kind: FactKind, key: &str, value: Value) {
        self.0.push(Event::Fact(kind, key.into(), value));
    }
    fn part(&mut self, part: &str) {
        self.0.push(Event::Part(part.into()));
    }
    fn reset(&mut self) {
        self.0.push(Event::Reset);
    }
}

/// What reading a file gave.
#[derive(Debug)]
pub struct Read {
    pub events: Vec<Event>,
    pub skipped: Skipped,
    pub records: u64,
}

impl Read {
    /// Everything, as text (NaN points compare equal this way).
    pub fn text(&self) -> String {
        format!("{:?}", (&self.events, self.skipped, self.records))
    }

    pub fn scalars(&self, tag: &str) -> Vec<Point> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Scalar(t, p) if t == tag => Some(*p),
                _ => None,
            })
            .collect()
    }
}

/// Reads `bytes` in one call.
pub fn read_whole(bytes: &[u8]) -> Read {
    let mut d = WandbDecoder::new();
    let mut sink = Collect::default();
    let used = d.decode(bytes, true, &mut sink);
    assert_eq!(used, bytes.len());
    Read {
        events: sink.0,
        skipped: d.skipped(),
        records: d.records(),
    }
}

/// Reads `bytes` as a follower would: pieces arrive with the given sizes (cycled), each call
/// gets what is left over plus the new piece; the last call has `eof`.
pub fn read_pieces(bytes: &[u8], sizes: &[usize]) -> Read {
    let mut d = WandbDecoder::new();
    let mut sink = Collect::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + size.max(1)).min(bytes.len());
        pending.extend_from_slice(&bytes[at..end]);
        at = end;
        let used = d.decode(&pending, false, &mut sink);
        assert!(used <= pending.len());
        pending.drain(..used);
    }
    let used = d.decode(&pending, true, &mut sink);
    assert_eq!(used, pending.len());
    Read {
        events: sink.0,
        skipped: d.skipped(),
        records: d.records(),
    }
}

pub fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runs")
}

/// The run folders and transaction logs of a run id, in folder-name (start) order.
pub fn run_files(id: &str) -> Vec<PathBuf> {
    let wandb = data().join("wandb_offline/wandb");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&wandb)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("offline-run-") && n.ends_with(&format!("-{id}")))
        })
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|d| d.join(format!("run-{id}.wandb")))
        .collect()
}

pub fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(data().join(name)).unwrap()).unwrap()
}

/// Tiny xorshift generator: the tests need varied bytes, not good randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Every chunk of a well-formed file: (offset, payload length, type), found by walking headers
/// without checking them (an independent walk to compare the decoder with).
pub fn chunks(bytes: &[u8]) -> Vec<(usize, usize, u8)> {
    const BLOCK: usize = 32768;
    let mut out = Vec::new();
    let mut pos = 7;
    while pos < bytes.len() {
        let block_end = (pos / BLOCK + 1) * BLOCK;
        if pos + 7 > block_end.min(bytes.len()) {
            pos = block_end;
            continue;
        }
        let len = u16::from_le_bytes([bytes[pos + 4], bytes[pos + 5]]) as usize;
        out.push((pos, len, bytes[pos + 6]));
        pos += 7 + len;
    }
    out
}
