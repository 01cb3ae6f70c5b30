//! CSV with a header row: the same rules as JSON lines, per column.
//!
//! The step comes from a `step`, `global_step` or `iter` column, else the row's index (0-based,
//! after the header); the wall time from `time`, `wall_time` or `timestamp`. Every other column
//! is a series; a cell that is empty or not a number is no point. `nan` and `inf` are read as
//! such. A row with a different number of fields than the header is counted in
//! [`Skipped::bad_records`].
//!
//! Parsing is `csv_core`'s (the engine of the `csv` crate), fed as bytes arrive, so that a row
//! being written waits until it is complete, quoted newlines included.

use super::{Decoder, LogDecoder, LogFormat, LogSink, Point, Skipped};

/// CSV logs with a header row (`*.csv`), in the format table.
pub struct Csv;

impl LogFormat for Csv {
    fn name(&self) -> &'static str {
        "csv"
    }

    fn is_log_file(&self, name: &str) -> bool {
        name.to_ascii_lowercase().ends_with(".csv")
    }

    fn decoder(&self) -> Option<Decoder> {
        Some(Box::new(CsvDecoder::new()))
    }
}

const STEP_KEYS: [&str; 3] = ["step", "global_step", "iter"];
const TIME_KEYS: [&str; 3] = ["time", "wall_time", "timestamp"];

/// Incremental CSV decoder (see the module docs for the rules).
#[derive(Debug)]
pub struct CsvDecoder {
    reader: csv_core::Reader,
    header: Option<Header>,
    row: u64,
    skipped: Skipped,
    /// Field bytes and field ends of the record being read (kept across calls while a row
    /// is incomplete), and how much of each is filled.
    out: Vec<u8>,
    ends: Vec<usize>,
    nout: usize,
    nends: usize,
    /// Some input was seen (the byte-order mark can only come first).
    started: bool,
}

impl Default for CsvDecoder {
    fn default() -> Self {
        CsvDecoder {
            reader: csv_core::Reader::new(),
            header: None,
            row: 0,
            skipped: Skipped::default(),
            out: vec![0; 1024],
            ends: vec![0; 64],
            nout: 0,
            nends: 0,
            started: false,
        }
    }
}

#[derive(Debug)]
struct Header {
    names: Vec<String>,
    step: Option<usize>,
    time: Option<usize>,
}

impl Header {
    fn new(fields: &[&[u8]]) -> Header {
        let names: Vec<String> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let f = if i == 0 {
                    f.strip_prefix(b"\xef\xbb\xbf").unwrap_or(f)
                } else {
                    f
                };
                String::from_utf8_lossy(f).trim().to_string()
            })
            .collect();
        let find = |keys: &[&str]| keys.iter().find_map(|k| names.iter().position(|n| n == k));
        let step = find(&STEP_KEYS);
        let time = find(&TIME_KEYS);
        Header { names, step, time }
    }
}

impl CsvDecoder {
    pub fn new() -> Self {
        CsvDecoder::default()
    }

    fn record(&mut self, nout: usize, nends: usize, sink: &mut dyn LogSink) {
        let out = &self.out[..nout];
        let mut fields: Vec<&[u8]> = Vec::with_capacity(nends);
        let mut start = 0;
        for &end in &self.ends[..nends] {
            fields.push(&out[start..end]);
            start = end;
        }
        if self.skipped.missing_header {
            return;
        }
        let Some(header) = &self.header else {
            // A first row of numbers is data: taking it as names would invent series named "0.5".
            let numbers = fields.iter().all(|f| parse_number(f).is_some());
            if numbers {
                self.skipped.missing_header = true;
            } else {
                self.header = Some(Header::new(&fields));
            }
            return;
        };
        let index = self.row;
        self.row += 1;
        if fields.len() != header.names.len() {
            // A line of spaces only is a blank line, not worth counting.
            if !(fields.len() == 1 && fields[0].iter().all(u8::is_ascii_whitespace)) {
                self.skipped.bad_records += 1;
            }
            return;
        }
        let step = header
            .step
            .and_then(|i| parse_number(fields[i]))
            .filter(|s| s.is_finite())
            .map(|s| s.round() as i64)
            .unwrap_or(index as i64);
        let wall_time = header
            .time
            .and_then(|i| parse_number(fields[i]))
            .unwrap_or(f64::NAN);
        for (i, cell) in fields.iter().enumerate() {
            if Some(i) == header.step || Some(i) == header.time {
                continue;
            }
            if let Some(value) = parse_number(cell) {
                sink.scalar(&header.names[i], Point::new(step, wall_time, value));
            }
        }
    }
}

impl LogDecoder for CsvDecoder {
    /// See [`super::Decoder::decode`]. The CSV parser keeps its state between calls, so all
    /// of `buf` is consumed: a row being written is held, parsed so far, until its terminator
    /// arrives (a newline inside a quoted field does not end it).
    fn decode(&mut self, buf: &[u8], eof: bool, sink: &mut dyn LogSink) -> usize {
        use csv_core::ReadRecordResult as R;
        const BOM: &[u8] = b"\xef\xbb\xbf";
        if !self.started {
            // The parser drops a byte-order mark only when it sees all of it at once.
            if !eof && buf.len() < BOM.len() && BOM.starts_with(buf) {
                return 0;
            }
            self.started = !buf.is_empty();
        }
        let mut pos = 0;
        loop {
            if pos >= buf.len() && !eof {
                // Empty input would mean the end of the file to the parser.
                return pos;
            }
            let (res, i, o, e) = self.reader.read_record(
                &buf[pos..],
                &mut self.out[self.nout..],
                &mut self.ends[self.nends..],
            );
            pos += i;
            self.nout += o;
            self.nends += e;
            match res {
                R::InputEmpty => {}
                R::OutputFull => {
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                R::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                R::Record => {
                    self.record(self.nout, self.nends, sink);
                    self.nout = 0;
                    self.nends = 0;
                }
                R::End => return buf.len(),
            }
        }
    }
    fn skipped(&self) -> Skipped {
        self.skipped
    }
}

fn parse_number(cell: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(cell).ok()?.trim();
    if s.is_empty() {
        return None;
    }
    s.parse::<f64>().ok()
}
