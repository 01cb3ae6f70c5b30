//! CSV with a header row: the same rules as JSON lines, per column.
//!
//! The step comes from a `step`, `global_step` or `iter` column, else the row's index (0-based,
//! after the header); the wall time from `time`, `wall_time` or `timestamp`. Every other column
//! is a series; a cell that is empty or not a number is no point. `nan` and `inf` are read as
//! such. A row with a different number of fields than the header is counted in
//! [`Skipped::bad_records`].
//!
//! Rows are read up to the last newline, so a row being written waits until it is complete.
//! (A quoted field that spans lines is not supported while a file grows.)

use super::{Point, ScalarSink, Skipped};

const STEP_KEYS: [&str; 3] = ["step", "global_step", "iter"];
const TIME_KEYS: [&str; 3] = ["time", "wall_time", "timestamp"];

/// Incremental CSV decoder (see the module docs for the rules).
#[derive(Debug, Default)]
pub struct CsvDecoder {
    header: Option<Header>,
    row: u64,
    skipped: Skipped,
}

#[derive(Debug)]
struct Header {
    names: Vec<String>,
    step: Option<usize>,
    time: Option<usize>,
}

impl Header {
    fn new(record: &csv::ByteRecord) -> Header {
        let names: Vec<String> = record
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

    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// See [`super::Decoder::decode`].
    pub fn decode(&mut self, buf: &[u8], eof: bool, sink: &mut dyn ScalarSink) -> usize {
        let complete = if eof {
            buf.len()
        } else {
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => return 0,
            }
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&buf[..complete]);
        let mut record = csv::ByteRecord::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                // Byte records do not fail on content; an I/O error cannot happen on a slice.
                Err(_) => {
                    self.skipped.bad_records += 1;
                    break;
                }
            }
            let Some(header) = &self.header else {
                self.header = Some(Header::new(&record));
                continue;
            };
            let index = self.row;
            self.row += 1;
            if record.len() != header.names.len() {
                // A lone empty field is a blank line with spaces; not worth counting.
                if !(record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace)) {
                    self.skipped.bad_records += 1;
                }
                continue;
            }
            let step = header
                .step
                .and_then(|i| parse_number(&record[i]))
                .filter(|s| s.is_finite())
                .map(|s| s.round() as i64)
                .unwrap_or(index as i64);
            let wall_time = header
                .time
                .and_then(|i| parse_number(&record[i]))
                .unwrap_or(f64::NAN);
            for (i, cell) in record.iter().enumerate() {
                if Some(i) == header.step || Some(i) == header.time {
                    continue;
                }
                if let Some(value) = parse_number(cell) {
                    sink.scalar(&header.names[i], Point::new(step, wall_time, value));
                }
            }
        }
        complete
    }
}

fn parse_number(cell: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(cell).ok()?.trim();
    if s.is_empty() {
        return None;
    }
    s.parse::<f64>().ok()
}
