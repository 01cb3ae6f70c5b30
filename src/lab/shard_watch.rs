//! Watching a sharded run from its output folder: each shard writes how far it is with each cell
//! (`progress.json`, at most once a second, by the shard alone); the watcher adds the shards up per
//! cell, reports what changed, and merges once every shard is done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::events::LabEvent;
use super::merge::{read_manifest, shard_counts};
use super::plan::{Cell, Plan};
use super::results::Results;
use super::shard::{Shard, shard_folder};
use crate::atomic_file::write_atomic;

/// How often a shard rewrites its progress file, and the watcher looks.
const EVERY: Duration = Duration::from_secs(1);

/// A shard's progress file: samples done per cell key, rewritten atomically.
pub struct ProgressWriter {
    path: PathBuf,
    done: BTreeMap<String, usize>,
    written: Option<Instant>,
}

impl ProgressWriter {
    pub fn new(folder: &Path) -> Self {
        Self {
            path: folder.join("progress.json"),
            done: BTreeMap::new(),
            written: None,
        }
    }

    /// Cell `key` has `done` samples; written now when `now` or a second after the last write.
    pub fn record(&mut self, key: &str, done: usize, now: bool) {
        self.done.insert(key.to_string(), done);
        if now || self.written.is_none_or(|t| t.elapsed() >= EVERY) {
            // Progress is for watching only: a failed write costs a stale count, never a result.
            if let Ok(text) = serde_json::to_vec(&self.done) {
                let _ = write_atomic(&self.path, &text);
            }
            self.written = Some(Instant::now());
        }
    }
}

/// One cell across the shards: samples done of all, and how many shards have finished it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellProgress {
    pub samples_done: usize,
    pub samples_total: usize,
    pub shards_done: usize,
}

/// The shard count whose shards ran this plan, if any wrote there (the largest, if several).
pub fn shards_of(out: &Path, plan: &Plan) -> Option<usize> {
    let key = plan.key();
    shard_counts(out).into_iter().rev().find(|&count| {
        (0..count).any(|index| {
            read_manifest(&shard_folder(out, Shard { index, count })).is_ok_and(|m| m.plan == key)
        })
    })
}

/// Each cell's progress over the `count` shards, read from their results and progress files.
pub fn progress(out: &Path, cells: &[Cell], count: usize) -> Vec<CellProgress> {
    let mut all: Vec<CellProgress> = (cells.iter())
        .map(|c| CellProgress {
            samples_done: 0,
            samples_total: c.samples(),
            shards_done: 0,
        })
        .collect();
    for index in 0..count {
        let folder = shard_folder(out, Shard { index, count });
        let results: Results = std::fs::read_to_string(folder.join("results.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let running: BTreeMap<String, usize> =
            std::fs::read_to_string(folder.join("progress.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        for (cell, p) in cells.iter().zip(&mut all) {
            match results.cells.iter().find(|r| r.key == cell.key) {
                Some(r) => {
                    p.samples_done += r.samples;
                    p.shards_done += 1;
                }
                None => p.samples_done += running.get(&cell.key).copied().unwrap_or(0),
            }
        }
    }
    all
}

/// Reports each cell's progress over the shards as it changes, until every shard has finished every
/// cell (`Ok(true)`) or the watch is cancelled (`Ok(false)`).
pub fn watch(
    out: &Path,
    cells: &[Cell],
    count: usize,
    cancel: &AtomicBool,
    tx: &Sender<LabEvent>,
) -> bool {
    let mut last: Vec<Option<CellProgress>> = vec![None; cells.len()];
    loop {
        let now = progress(out, cells, count);
        for (cell, (p, seen)) in now.iter().zip(&mut last).enumerate() {
            if *seen != Some(*p) {
                *seen = Some(*p);
                let _ = tx.send(LabEvent::ShardProgress {
                    cell,
                    samples_done: p.samples_done,
                    samples_total: p.samples_total,
                    shards_done: p.shards_done,
                    shards: count,
                });
            }
        }
        if now.iter().all(|p| p.shards_done == count) {
            return true;
        }
        let until = Instant::now() + EVERY;
        while Instant::now() < until {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
