//! Following run directories live.
//!
//! A [`Follower`] owns a thread that reads every log file under its roots from the start, then
//! waits for file-system notifications (and, as a safety net, polls every
//! [`FollowOptions::poll_interval`]) and reads what was appended. What it reads arrives as
//! [`FollowEvent`]s, through a channel ([`Follower::spawn`]) or a callback
//! ([`Follower::spawn_with`]); [`Store::apply`](super::Store::apply) folds them into runs.
//!
//! A partial last line or record waits until it is complete; a file that shrinks or is
//! replaced is announced with [`FollowEvent::Reset`] and read again; new files and folders
//! are picked up as they appear. The follower keeps no points, only each file's offset and
//! incomplete tail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use serde_json::Value;

use super::{
    FactKind, Format, LogImage, LogReader, LogSink, MetricsError, PassedBy, Point, Skipped,
    discover, join_run, root_labels,
};

/// What a follower reports.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowEvent {
    /// Points newly read from `path`, by tag (each tag's points in file order).
    Points {
        run: String,
        path: PathBuf,
        format: Format,
        series: Vec<(String, Vec<Point>)>,
    },
    /// Images newly read from `path`, by tag.
    Images {
        run: String,
        path: PathBuf,
        format: Format,
        images: Vec<(String, Vec<LogImage>)>,
    },
    /// Facts about `run` newly read from `path` (each replaces the fact of its kind and key).
    Facts {
        run: String,
        path: PathBuf,
        format: Format,
        facts: Vec<(FactKind, String, Value)>,
    },
    /// `path` shrank, was replaced or rewritten: drop what was read from it, in every run it fed; it
    /// is being read again from the start (its points follow).
    Reset {
        run: String,
        path: PathBuf,
        format: Format,
    },
    /// The skipped counts of `path` changed; these are its new totals.
    Skipped {
        run: String,
        path: PathBuf,
        format: Format,
        skipped: Skipped,
    },
    /// Everything present when the follower started has been read; from here on, events
    /// carry new data.
    CaughtUp,
    /// A file could not be read (it is retried on the next change).
    Error { path: PathBuf, message: String },
    /// A file named like a log that is not read (a FIFO, say), once.
    PassedBy(PassedBy),
}

/// Follower settings.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// How often every file is checked even without a notification (notifications can be
    /// missed on network file systems, and do not cross some container mounts).
    pub poll_interval: Duration,
    /// Read files from their start (true) or only what is appended after the follower starts.
    pub from_start: bool,
    /// Points per [`FollowEvent::Points`] at most, so a huge initial read arrives in pieces.
    pub batch: usize,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            poll_interval: Duration::from_millis(500),
            from_start: true,
            batch: 65_536,
        }
    }
}

enum Msg {
    Fs(Vec<PathBuf>),
    Stop,
}

/// A running follower; dropping it stops its thread.
pub struct Follower {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").finish_non_exhaustive()
    }
}

impl Follower {
    /// Starts following `roots` (directories or log files); events arrive on the receiver. The
    /// follower stops when it is dropped or the receiver is.
    pub fn spawn(
        roots: &[PathBuf],
        options: FollowOptions,
    ) -> Result<(Follower, Receiver<FollowEvent>), MetricsError> {
        let (tx, rx) = mpsc::channel();
        let follower = Follower::spawn_with(roots, options, move |e| tx.send(e).is_ok())?;
        Ok((follower, rx))
    }

    /// Starts following `roots`, calling `on_event` on the follower's thread for each event;
    /// it returns false to stop following. To feed an async runtime, send into its channel
    /// from here.
    pub fn spawn_with<F>(
        roots: &[PathBuf],
        options: FollowOptions,
        on_event: F,
    ) -> Result<Follower, MetricsError>
    where
        F: FnMut(FollowEvent) -> bool + Send + 'static,
    {
        for root in roots {
            let meta = std::fs::metadata(root).map_err(|e| MetricsError::io(root, e))?;
            if !meta.is_file() && !meta.is_dir() {
                return Err(MetricsError::NotAFile(root.clone()));
            }
        }
        let (tx, rx) = mpsc::channel();
        let fs_tx = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Access events (open, read, close without writing) carry no new data, and the
            // follower's own reads cause them: answering them would read again, forever.
            if let Ok(event) = res.as_ref()
                && !event.kind.is_access()
            {
                let _ = fs_tx.send(Msg::Fs(event.paths.clone()));
            }
        });
        // Without notifications the follower still works by polling.
        let watcher = match watcher {
            Ok(mut w) => {
                for root in roots {
                    let (target, mode) = if root.is_file() {
                        // Watch the folder, so a file replaced by rename is still seen.
                        let parent = root
                            .parent()
                            .filter(|p| !p.as_os_str().is_empty())
                            .unwrap_or(Path::new("."));
                        (parent.to_path_buf(), RecursiveMode::NonRecursive)
                    } else {
                        (root.clone(), RecursiveMode::Recursive)
                    };
                    w.watch(&target, mode).map_err(|e| MetricsError::Watch {
                        path: target.clone(),
                        message: e.to_string(),
                    })?;
                }
                Some(w)
            }
            Err(_) => None,
        };
        let roots = roots.to_vec();
        let thread = std::thread::Builder::new()
            .name("difflab-follow".into())
            .spawn(move || {
                let mut state = State {
                    roots,
                    options,
                    tails: BTreeMap::new(),
                    passed_by: BTreeSet::new(),
                    on_event,
                    alive: true,
                };
                state.run(rx);
            })
            .map_err(|e| MetricsError::Watch {
                path: PathBuf::new(),
                message: e.to_string(),
            })?;
        Ok(Follower {
            tx,
            thread: Some(thread),
            _watcher: watcher,
        })
    }

    /// Stops the follower and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Followed {
    run: String,
    format: Format,
    reader: Box<dyn LogReader>,
    skipped: Skipped,
}

struct State<F> {
    roots: Vec<PathBuf>,
    options: FollowOptions,
    tails: BTreeMap<PathBuf, Followed>,
    /// Files already reported as passed by.
    passed_by: BTreeSet<PathBuf>,
    on_event: F,
    alive: bool,
}

impl<F: FnMut(FollowEvent) -> bool> State<F> {
    fn emit(&mut self, event: FollowEvent) {
        if self.alive && !(self.on_event)(event) {
            self.alive = false;
        }
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        self.discover(self.options.from_start);
        self.poll_all();
        self.emit(FollowEvent::CaughtUp);
        while self.alive {
            match rx.recv_timeout(self.options.poll_interval) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(Msg::Fs(paths)) => {
                    let mut changed = paths;
                    // Take every notification already queued: one read serves them all.
                    loop {
                        match rx.try_recv() {
                            Ok(Msg::Fs(more)) => changed.extend(more),
                            Ok(Msg::Stop) => return,
                            Err(_) => break,
                        }
                    }
                    changed.sort();
                    changed.dedup();
                    let mut rescan = false;
                    let mut owners = BTreeSet::new();
                    for path in changed {
                        match self.owner(&path) {
                            Some(owner) => {
                                owners.insert(owner);
                            }
                            None => rescan = true,
                        }
                    }
                    for owner in owners {
                        self.poll(&owner);
                    }
                    if rescan {
                        self.discover(true);
                        self.poll_new();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.discover(true);
                    self.poll_all();
                }
            }
        }
    }

    /// The log a changed path belongs to: the log itself, a file inside a folder read as one log (an
    /// MLflow file store), or a database's journal beside it (`mlflow.db-wal`).
    fn owner(&self, path: &Path) -> Option<PathBuf> {
        if self.tails.contains_key(path) {
            return Some(path.to_path_buf());
        }
        let name = path.file_name()?.to_string_lossy();
        self.tails.keys().find_map(|log| {
            let journal = log.parent() == path.parent()
                && log.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    name.starts_with(&*n) && name[n.len()..].starts_with('-')
                });
            (journal || (path.starts_with(log) && log.is_dir())).then(|| log.clone())
        })
    }

    /// Finds log files not followed yet. Files present at the start are skipped to their end
    /// when `from_start` is false.
    fn discover(&mut self, from_start: bool) {
        let labels = root_labels(&self.roots);
        for (root, label) in self.roots.clone().iter().zip(labels) {
            let Ok(found) = discover(root, label.as_deref()) else {
                continue;
            };
            for p in found.passed_by {
                if self.passed_by.insert(p.path.clone()) {
                    self.emit(FollowEvent::PassedBy(p));
                }
            }
            for f in found.files {
                if self.tails.contains_key(&f.path) {
                    continue;
                }
                let mut reader = f.format.open(&f.path);
                if !from_start {
                    // Read to the end without reporting.
                    let _ = reader.poll(&mut |_: &str, _: Point| {}, false);
                }
                self.tails.insert(
                    f.path.clone(),
                    Followed {
                        run: f.run,
                        format: f.format,
                        skipped: reader.skipped(),
                        reader,
                    },
                );
            }
        }
    }

    fn poll_all(&mut self) {
        let paths: Vec<PathBuf> = self.tails.keys().cloned().collect();
        for p in paths {
            self.poll(&p);
        }
    }

    fn poll_new(&mut self) {
        let paths: Vec<PathBuf> = self
            .tails
            .iter()
            .filter(|(_, f)| !f.reader.started())
            .map(|(p, _)| p.clone())
            .collect();
        for p in paths {
            self.poll(&p);
        }
    }

    fn poll(&mut self, path: &Path) {
        let State {
            tails,
            options,
            on_event,
            alive,
            ..
        } = self;
        let Some(followed) = tails.get_mut(path) else {
            return;
        };
        let mut sink = BatchSink {
            base: &followed.run,
            run: followed.run.clone(),
            path,
            format: followed.format,
            batch: options.batch.max(1),
            pending: Vec::new(),
            index: HashMap::new(),
            images: Vec::new(),
            facts: Vec::new(),
            count: 0,
            on_event,
            alive,
        };
        let result = followed.reader.poll(&mut sink, false);
        sink.flush();
        let run = followed.run.clone();
        let format = followed.format;
        let reset = match result {
            Ok(status) => status.reset,
            Err(e) => {
                self.emit(FollowEvent::Error {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                });
                return;
            }
        };
        let Some(followed) = self.tails.get_mut(path) else {
            return;
        };
        let skipped = followed.reader.skipped();
        if skipped != followed.skipped || (reset && !skipped.is_empty()) {
            followed.skipped = skipped;
            self.emit(FollowEvent::Skipped {
                run,
                path: path.to_path_buf(),
                format,
                skipped,
            });
        }
    }
}

/// Groups scalars by tag into [`FollowEvent::Points`] of at most `batch` points, sent as they
/// fill so that a large first read does not pile up in memory.
struct BatchSink<'a, F> {
    /// The log's own run; `run` is the part being read below it.
    base: &'a str,
    run: String,
    path: &'a Path,
    format: Format,
    batch: usize,
    pending: Vec<(String, Vec<Point>)>,
    index: HashMap<String, usize>,
    images: Vec<(String, Vec<LogImage>)>,
    facts: Vec<(FactKind, String, Value)>,
    count: usize,
    on_event: &'a mut F,
    alive: &'a mut bool,
}

impl<F: FnMut(FollowEvent) -> bool> BatchSink<'_, F> {
    fn send(&mut self, event: FollowEvent) {
        if *self.alive && !(self.on_event)(event) {
            *self.alive = false;
        }
    }

    fn flush(&mut self) {
        let (run, path, format) = (self.run.clone(), self.path.to_path_buf(), self.format);
        if !self.pending.is_empty() {
            self.index.clear();
            self.count = 0;
            let series = std::mem::take(&mut self.pending);
            self.send(FollowEvent::Points {
                run: run.clone(),
                path: path.clone(),
                format,
                series,
            });
        }
        if !self.images.is_empty() {
            let images = std::mem::take(&mut self.images);
            let (run, path) = (run.clone(), path.clone());
            self.send(FollowEvent::Images {
                run,
                path,
                format,
                images,
            });
        }
        if !self.facts.is_empty() {
            let facts = std::mem::take(&mut self.facts);
            self.send(FollowEvent::Facts {
                run,
                path,
                format,
                facts,
            });
        }
    }
}

impl<F: FnMut(FollowEvent) -> bool> LogSink for BatchSink<'_, F> {
    fn scalar(&mut self, tag: &str, point: Point) {
        let i = match self.index.get(tag) {
            Some(&i) => i,
            None => {
                self.index.insert(tag.to_owned(), self.pending.len());
                self.pending.push((tag.to_owned(), Vec::new()));
                self.pending.len() - 1
            }
        };
        self.pending[i].1.push(point);
        self.count += 1;
        if self.count >= self.batch {
            self.flush();
        }
    }

    fn image(&mut self, tag: &str, image: LogImage) {
        match self.images.iter_mut().find(|(t, _)| t == tag) {
            Some((_, list)) => list.push(image),
            None => self.images.push((tag.to_owned(), vec![image])),
        }
        self.count += 1;
        if self.count >= self.batch {
            self.flush();
        }
    }

    fn fact(&mut self, kind: FactKind, key: &str, value: Value) {
        self.facts.push((kind, key.to_owned(), value));
    }

    fn part(&mut self, part: &str) {
        let run = join_run(self.base, part);
        if run != self.run {
            self.flush();
            self.run = run;
        }
    }

    fn reset(&mut self) {
        self.flush();
        self.send(FollowEvent::Reset {
            run: self.run.to_owned(),
            path: self.path.to_path_buf(),
            format: self.format,
        });
    }
}
