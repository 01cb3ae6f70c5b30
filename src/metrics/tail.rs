//! Reading a log file from where the last read stopped.
//!
//! A [`FileTail`] remembers how far a file was read and the bytes of an incomplete last line or
//! record. Each [`poll`](FileTail::poll) reads only the bytes appended since, so nothing is read
//! twice, and memory holds no more than that incomplete tail plus one read buffer. A file that
//! shrank, was replaced (another inode) or was rewritten (its first bytes changed) is read
//! again from its start, and the poll says so.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::series::Resumed;
use super::store::Facts;
use super::{
    Decoder, FactKind, Format, LogDecoder, LogFile, LogImage, LogReader, LogSink, MetricsError,
    Point, Series, Skipped, Source,
};

/// Bytes read from a file per step.
const CHUNK: u64 = 1 << 20;
/// How many leading bytes are kept to tell a rewritten file from a grown one.
const PREFIX: usize = 64;

/// A log file being read incrementally.
#[derive(Debug)]
pub struct FileTail {
    path: PathBuf,
    format: Format,
    decoder: Decoder,
    /// Bytes of the file read so far.
    offset: u64,
    /// Bytes read but not yet decoded (an incomplete last line or record).
    pending: Vec<u8>,
    /// (device, inode) of the file read.
    identity: Option<(u64, u64)>,
    /// The file's first bytes, as read.
    prefix: Vec<u8>,
}

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollStatus {
    /// The file shrank, was replaced or rewritten: everything read from it before is void, and
    /// it was read again from its start.
    pub reset: bool,
    /// Bytes read from the file in this poll.
    pub bytes_read: u64,
    /// The file does not exist (any more).
    pub gone: bool,
}

impl FileTail {
    pub fn new(path: impl Into<PathBuf>, format: Format) -> Self {
        FileTail {
            path: path.into(),
            format,
            decoder: decoder_of(format),
            offset: 0,
            pending: Vec::new(),
            identity: None,
            prefix: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes of the file read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes waiting for the rest of their line or record.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn reset(&mut self) {
        self.decoder = decoder_of(self.format);
        self.offset = 0;
        self.pending.clear();
        self.prefix.clear();
    }
}

impl LogReader for FileTail {
    fn skipped(&self) -> Skipped {
        self.decoder.skipped()
    }

    fn started(&self) -> bool {
        self.offset > 0
    }

    /// Reads what was appended since the last poll and sends what it holds to `sink`.
    ///
    /// With `finish` set, the file is taken as complete: an incomplete last line or record is
    /// decoded if it can be, or counted as skipped (use this to read a file once).
    fn poll(&mut self, sink: &mut dyn LogSink, finish: bool) -> io::Result<PollStatus> {
        let mut status = PollStatus::default();
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                status.gone = true;
                return Ok(status);
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let identity = file_identity(&meta);
        let len = meta.len();
        let replaced = self.identity.is_some_and(|id| Some(id) != identity);
        let shrank = len < self.offset;
        let rewritten = !replaced && !shrank && !self.prefix.is_empty() && {
            let mut head = vec![0; self.prefix.len()];
            read_exact_at(&file, &mut head, 0)? && head != self.prefix
        };
        if replaced || shrank || rewritten {
            self.reset();
            sink.reset();
            status.reset = true;
        }
        self.identity = identity;
        if len > self.offset {
            use std::io::Seek;
            file.seek(io::SeekFrom::Start(self.offset))?;
            loop {
                let n = (&mut file).take(CHUNK).read_to_end(&mut self.pending)? as u64;
                if n == 0 {
                    break;
                }
                if self.prefix.len() < PREFIX && (self.offset as usize) < PREFIX {
                    // The first bytes of the file are at the start of `pending` only before
                    // anything was decoded; collect them from what was just read.
                    let start = self.pending.len() - n as usize;
                    let want = (PREFIX - self.prefix.len()).min(n as usize);
                    if self.prefix.len() as u64 == self.offset {
                        self.prefix
                            .extend_from_slice(&self.pending[start..start + want]);
                    }
                }
                self.offset += n;
                status.bytes_read += n;
                let used = self.decoder.decode(&self.pending, false, sink);
                self.pending.drain(..used);
            }
        }
        if finish && !self.pending.is_empty() {
            let used = self.decoder.decode(&self.pending, true, sink);
            self.pending.drain(..used);
        }
        Ok(status)
    }
}

/// The byte-stream decoder of `format`; a format read otherwise gets one that reads nothing from it.
fn decoder_of(format: Format) -> Decoder {
    format
        .decoder()
        .unwrap_or_else(|| Box::new(NotAStream::default()))
}

/// Counts every byte as skipped: a [`FileTail`] is only opened on byte-stream formats.
#[derive(Debug, Default)]
struct NotAStream(Skipped);

impl LogDecoder for NotAStream {
    fn decode(&mut self, buf: &[u8], _eof: bool, _sink: &mut dyn LogSink) -> usize {
        self.0.skipped_bytes += buf.len() as u64;
        buf.len()
    }

    fn skipped(&self) -> Skipped {
        self.0
    }
}

#[cfg(unix)]
fn file_identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_identity(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Reads `buf.len()` bytes at `offset`; false if the file is shorter.
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        match file.read_exact_at(buf, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        use std::io::{Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        match f.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Collects scalars into series by tag, cheaply: logs interleave a few tags over many points,
/// so the last tag is checked before the map.
#[derive(Debug, Default)]
pub struct SeriesBuilder {
    index: HashMap<String, usize>,
    series: Vec<(String, Series)>,
    last: Option<usize>,
    resumed: Resumed,
}

impl SeriesBuilder {
    pub fn new() -> Self {
        SeriesBuilder::default()
    }

    pub fn push(&mut self, tag: &str, point: Point) {
        let i = match self.last {
            Some(i) if self.series[i].0 == tag => i,
            _ => match self.index.get(tag) {
                Some(&i) => i,
                None => {
                    self.index.insert(tag.to_owned(), self.series.len());
                    self.series.push((tag.to_owned(), Series::new()));
                    self.series.len() - 1
                }
            },
        };
        self.last = Some(i);
        let dropped = self.series[i].1.append(point);
        self.resumed.count(dropped, point.step);
    }

    /// The series by tag, and where their steps went back.
    pub fn finish(self) -> (BTreeMap<String, Series>, Resumed) {
        (self.series.into_iter().collect(), self.resumed)
    }
}

impl LogSink for SeriesBuilder {
    fn scalar(&mut self, tag: &str, point: Point) {
        self.push(tag, point)
    }

    fn reset(&mut self) {
        *self = SeriesBuilder::default();
    }
}

/// What a reader reported for one run part, collected.
#[derive(Debug, Default)]
struct PartBuilder {
    series: SeriesBuilder,
    images: BTreeMap<String, Vec<LogImage>>,
    facts: Facts,
}

/// Collects everything a reader reports, by run part ("" for the file's own run).
#[derive(Debug, Default)]
pub struct SourceBuilder {
    parts: Vec<(String, PartBuilder)>,
    current: usize,
}

impl SourceBuilder {
    fn part_mut(&mut self) -> &mut PartBuilder {
        if self.parts.is_empty() {
            self.parts.push((String::new(), PartBuilder::default()));
            self.current = 0;
        }
        let last = self.parts.len() - 1;
        &mut self.parts[self.current.min(last)].1
    }

    /// One [`Source`] of `path` per run part, with what the reader skipped on the first.
    pub fn finish(self, path: &Path, format: Format, skipped: Skipped) -> PartSources {
        let mut out = Vec::new();
        for (i, (part, builder)) in self.parts.into_iter().enumerate() {
            let (series, resumed) = builder.series.finish();
            let mut source = Source::new(path, format);
            source.series = series;
            source.resumed = resumed;
            source.images = builder.images;
            source.facts = builder.facts;
            if i == 0 {
                source.skipped = skipped;
            }
            out.push((part, source));
        }
        if out.is_empty() {
            let mut source = Source::new(path, format);
            source.skipped = skipped;
            out.push((String::new(), source));
        }
        out
    }
}

impl LogSink for SourceBuilder {
    fn scalar(&mut self, tag: &str, point: Point) {
        self.part_mut().series.push(tag, point)
    }

    fn image(&mut self, tag: &str, image: LogImage) {
        let images = &mut self.part_mut().images;
        match images.get_mut(tag) {
            Some(list) => list.push(image),
            None => {
                images.insert(tag.to_owned(), vec![image]);
            }
        }
    }

    fn fact(&mut self, kind: FactKind, key: &str, value: Value) {
        self.part_mut().facts.insert((kind, key.to_owned()), value);
    }

    fn part(&mut self, part: &str) {
        self.current = match self.parts.iter().position(|(p, _)| p == part) {
            Some(i) => i,
            None => {
                self.parts.push((part.to_owned(), PartBuilder::default()));
                self.parts.len() - 1
            }
        };
    }

    fn reset(&mut self) {
        *self = SourceBuilder::default();
    }
}

/// The sources read from one log, by the run part each belongs to.
pub type PartSources = Vec<(String, Source)>;

/// Reads a whole log into one [`Source`] per run it feeds, with the run part each belongs to ("" for
/// the log's own run; an `mlflow.db` feeds one run per MLflow run).
pub fn read_file(path: &Path, format: Format) -> Result<PartSources, MetricsError> {
    let mut reader = format.open(path);
    let mut builder = SourceBuilder::default();
    let status = reader
        .poll(&mut builder, true)
        .map_err(|e| MetricsError::io(path, e))?;
    if status.gone {
        return Err(MetricsError::io(
            path,
            io::Error::new(io::ErrorKind::NotFound, "file vanished"),
        ));
    }
    if reader.skipped().missing_header {
        return Err(MetricsError::MissingHeader(path.to_path_buf()));
    }
    Ok(builder.finish(path, format, reader.skipped()))
}

/// Reads `files` on up to as many threads as there are cores; results in the order given.
pub fn read_files_parallel(files: &[LogFile]) -> Vec<Result<PartSources, MetricsError>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len());
    if threads <= 1 {
        return files.iter().map(|f| read_file(&f.path, f.format)).collect();
    }
    // Each thread reads every `threads`-th file; the results go back in file order.
    let mut read: Vec<(usize, Result<PartSources, MetricsError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                scope.spawn(move || {
                    (first..files.len())
                        .step_by(threads)
                        .map(|i| (i, read_file(&files[i].path, files[i].format)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    read.sort_by_key(|(i, _)| *i);
    let mut read = read.into_iter().peekable();
    // A reader thread that panicked leaves its files unread: each becomes an error, in place.
    (0..files.len())
        .map(|i| match read.next_if(|(j, _)| *j == i) {
            Some((_, r)) => r,
            None => Err(MetricsError::io(
                &files[i].path,
                io::Error::other("the reader stopped"),
            )),
        })
        .collect()
}
