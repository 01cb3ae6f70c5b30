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

use super::tail::FileTail;
use super::{Format, MetricsError, PassedBy, Point, ScalarSink, Skipped, discover, root_labels};

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
    /// `path` shrank, was replaced or rewritten: drop what was read from it; it is being read
    /// again from the start (its points follow).
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
    tail: FileTail,
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
                    for path in changed {
                        if self.tails.contains_key(&path) {
                            self.poll(&path);
                        } else {
                            rescan = true;
                        }
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
                let mut tail = FileTail::new(&f.path, f.format);
                if !from_start {
                    // Read to the end without reporting.
                    let _ = tail.poll(&mut |_: &str, _: Point| {}, false);
                }
                self.tails.insert(
                    f.path.clone(),
                    Followed {
                        run: f.run,
                        skipped: tail.skipped(),
                        tail,
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
            .filter(|(_, f)| f.tail.offset() == 0)
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
            run: &followed.run,
            path,
            format: followed.tail.format(),
            batch: options.batch.max(1),
            pending: Vec::new(),
            index: HashMap::new(),
            count: 0,
            on_event,
            alive,
        };
        let result = followed.tail.poll(&mut sink, false);
        sink.flush();
        let run = followed.run.clone();
        let format = followed.tail.format();
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
        let skipped = followed.tail.skipped();
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
    run: &'a str,
    path: &'a Path,
    format: Format,
    batch: usize,
    pending: Vec<(String, Vec<Point>)>,
    index: HashMap<String, usize>,
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
        if self.pending.is_empty() {
            return;
        }
        self.index.clear();
        self.count = 0;
        let series = std::mem::take(&mut self.pending);
        self.send(FollowEvent::Points {
            run: self.run.to_owned(),
            path: self.path.to_path_buf(),
            format: self.format,
            series,
        });
    }
}

impl<F: FnMut(FollowEvent) -> bool> ScalarSink for BatchSink<'_, F> {
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

    fn reset(&mut self) {
        self.flush();
        self.send(FollowEvent::Reset {
            run: self.run.to_owned(),
            path: self.path.to_path_buf(),
            format: self.format,
        });
    }
}
