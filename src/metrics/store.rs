//! Runs, their files, and the series read from them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::series::Resumed;
use super::{FactKind, FollowEvent, Format, LogImage, PassedBy, Series, Skipped};

/// Run-level facts by kind and key.
pub type Facts = BTreeMap<(FactKind, String), Value>;

/// The series read from one log file.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub path: PathBuf,
    pub format: Format,
    pub series: BTreeMap<String, Series>,
    pub skipped: Skipped,
    /// Where the file's steps went back and points were dropped.
    pub resumed: Resumed,
    /// Images by tag, in the order logged.
    pub images: BTreeMap<String, Vec<LogImage>>,
    /// What the file says of its run: name, state, config, summary.
    pub facts: Facts,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, format: Format) -> Self {
        Source {
            path: path.into(),
            format,
            series: BTreeMap::new(),
            skipped: Skipped::default(),
            resumed: Resumed::default(),
            images: BTreeMap::new(),
            facts: Facts::new(),
        }
    }
}

/// A run: the log files of one folder.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Run {
    pub name: String,
    pub sources: BTreeMap<PathBuf, Source>,
}

impl Run {
    /// Every tag of the run, sorted.
    pub fn tags(&self) -> BTreeSet<&str> {
        self.sources
            .values()
            .flat_map(|s| s.series.keys().map(String::as_str))
            .collect()
    }

    /// The series of `tag`. When several files of the run hold it (a TensorBoard run restarted
    /// into a new event file, say), their points are read in file order as one log: where a later
    /// file goes back in step, the earlier points from there on are dropped, as TensorBoard does.
    pub fn series(&self, tag: &str) -> Option<Cow<'_, Series>> {
        let mut found = self.sources.values().filter_map(|s| s.series.get(tag));
        let first = found.next()?;
        let Some(second) = found.next() else {
            return Some(Cow::Borrowed(first));
        };
        let mut merged = first.clone();
        for p in second.points.iter().chain(found.flat_map(|s| &s.points)) {
            merged.append(*p);
        }
        Some(Cow::Owned(merged))
    }

    /// Where the run's steps went back, in its files and between them.
    pub fn resumed(&self) -> Resumed {
        let mut total = Resumed::default();
        for s in self.sources.values() {
            total.add(&s.resumed);
        }
        for tag in self.tags() {
            let mut found = self.sources.values().filter_map(|s| s.series.get(tag));
            let Some(first) = found.next() else { continue };
            let mut merged = first.clone();
            for p in found.flat_map(|s| &s.points) {
                total.count(merged.append(*p), p.step);
            }
        }
        total
    }

    /// What was skipped in all the run's files.
    pub fn skipped(&self) -> Skipped {
        let mut total = Skipped::default();
        for s in self.sources.values() {
            total.add(&s.skipped);
        }
        total
    }

    /// Every image tag of the run, sorted.
    pub fn image_tags(&self) -> BTreeSet<&str> {
        self.sources
            .values()
            .flat_map(|s| s.images.keys().map(String::as_str))
            .collect()
    }

    /// The images of `tag` with the file each is in, files in order (a resumed run's parts in turn).
    pub fn images(&self, tag: &str) -> Vec<(&Path, Format, &LogImage)> {
        self.sources
            .values()
            .flat_map(|s| {
                let images = s.images.get(tag).map(Vec::as_slice).unwrap_or_default();
                images.iter().map(|i| (s.path.as_path(), s.format, i))
            })
            .collect()
    }

    /// The run's facts, its files read in order: a later file's fact replaces an earlier one's (the
    /// summary of a resumed run is its last part's).
    pub fn facts(&self) -> Facts {
        let mut all = Facts::new();
        for s in self.sources.values() {
            all.extend(s.facts.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        all
    }

    /// Total points in the run.
    pub fn point_count(&self) -> usize {
        self.sources
            .values()
            .flat_map(|s| s.series.values())
            .map(Series::len)
            .sum()
    }
}

/// Every run read, by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Store {
    runs: BTreeMap<String, Run>,
    /// Files named like logs that were not read, with why.
    pub passed_by: Vec<PassedBy>,
}

impl Store {
    pub fn new() -> Self {
        Store::default()
    }

    pub fn runs(&self) -> impl Iterator<Item = &Run> {
        self.runs.values()
    }

    pub fn run(&self, name: &str) -> Option<&Run> {
        self.runs.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Adds (or replaces) the series read from one file of `run`.
    pub fn insert_source(&mut self, run: &str, source: Source) {
        let entry = self.runs.entry(run.to_owned()).or_insert_with(|| Run {
            name: run.to_owned(),
            sources: BTreeMap::new(),
        });
        entry.sources.insert(source.path.clone(), source);
    }

    fn source_mut(&mut self, run: &str, path: &Path, format: Format) -> &mut Source {
        let entry = self.runs.entry(run.to_owned()).or_insert_with(|| Run {
            name: run.to_owned(),
            sources: BTreeMap::new(),
        });
        entry
            .sources
            .entry(path.to_path_buf())
            .or_insert_with(|| Source::new(path, format))
    }

    /// Applies a follower's event: new points are appended, a reset empties the file's series.
    pub fn apply(&mut self, event: &FollowEvent) {
        match event {
            FollowEvent::Points {
                run,
                path,
                format,
                series,
            } => {
                let source = self.source_mut(run, path, *format);
                for (tag, points) in series {
                    let s = source.series.entry(tag.clone()).or_default();
                    for &p in points {
                        let dropped = s.append(p);
                        source.resumed.count(dropped, p.step);
                    }
                }
            }
            FollowEvent::Images {
                run,
                path,
                format,
                images,
            } => {
                let source = self.source_mut(run, path, *format);
                for (tag, list) in images {
                    source
                        .images
                        .entry(tag.clone())
                        .or_default()
                        .extend(list.iter().cloned());
                }
            }
            FollowEvent::Facts {
                run,
                path,
                format,
                facts,
            } => {
                let source = self.source_mut(run, path, *format);
                for (kind, key, value) in facts {
                    source.facts.insert((*kind, key.clone()), value.clone());
                }
            }
            FollowEvent::Reset { path, .. } => {
                // Every run the file fed (an mlflow.db feeds many) starts again.
                for run in self.runs.values_mut() {
                    if let Some(source) = run.sources.get_mut(path) {
                        *source = Source::new(path, source.format);
                    }
                }
            }
            FollowEvent::Skipped {
                run,
                path,
                format,
                skipped,
            } => {
                self.source_mut(run, path, *format).skipped = *skipped;
            }
            FollowEvent::PassedBy(p) => {
                if !self.passed_by.contains(p) {
                    self.passed_by.push(p.clone());
                }
            }
            FollowEvent::CaughtUp | FollowEvent::Error { .. } => {}
        }
    }
}
