//! JSON lines: one object per line, every numeric field a series.
//!
//! - The step comes from `step`, `global_step` or `iter` (the first present, in that order),
//!   else the line's index in the file (0-based). The wall time comes from `time`, `wall_time`
//!   or `timestamp` when it is a number (seconds since the epoch). These keys are not series.
//! - Other numeric fields are series; nested objects are flattened with `/`
//!   (`{"train": {"loss": 1}}` is the tag `train/loss`). Strings, booleans, nulls and arrays
//!   are ignored. Lines may carry different keys: an eval line with only `step` and `fid` adds
//!   a point to `fid` alone.
//! - Python's `json` writes `NaN`, `Infinity` and `-Infinity`, which are not JSON; they are
//!   read as the non-finite values they stand for.
//! - A line that is not a JSON object is counted in [`Skipped::bad_records`]. Blank lines are
//!   ignored.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::{Decoder, LogDecoder, LogFormat, LogSink, Point, Skipped};

/// JSON lines logs (`*.jsonl`, `*.ndjson`), in the format table.
pub struct JsonLines;

impl LogFormat for JsonLines {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn is_log_file(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        lower.ends_with(".jsonl") || lower.ends_with(".ndjson")
    }

    fn decoder(&self) -> Option<Decoder> {
        Some(Box::new(JsonlDecoder::new()))
    }
}

const STEP_KEYS: [&str; 3] = ["step", "global_step", "iter"];
const TIME_KEYS: [&str; 3] = ["time", "wall_time", "timestamp"];

/// Incremental JSON-lines decoder (see the module docs for the rules).
#[derive(Debug, Default)]
pub struct JsonlDecoder {
    /// Index of the next line in the file.
    line: u64,
    /// The previous call consumed a last line that had no newline yet; a newline at the
    /// start of the next input ends that line rather than starting an empty one.
    open_line: bool,
    skipped: Skipped,
    fields: Fields,
    patched: Vec<u8>,
}

/// Fields of one line, reused from line to line so that decoding allocates nothing once warm.
#[derive(Debug, Default)]
struct Fields {
    /// The tags of `entries`, back to back.
    keys: String,
    /// The key being read, with the prefix of the objects it is nested in.
    path: String,
    entries: Vec<(usize, usize, f64)>,
    step: [Option<f64>; 3],
    time: [Option<f64>; 3],
    /// Read the strings "NaN", "Infinity" and "-Infinity" as numbers (set when a line was
    /// rewritten from Python's non-standard tokens).
    lenient: bool,
}

impl JsonlDecoder {
    pub fn new() -> Self {
        JsonlDecoder::default()
    }

    fn line_complete(&mut self, line: &[u8], sink: &mut dyn LogSink) {
        let index = self.line;
        self.line += 1;
        if is_blank(line) {
            return;
        }
        if self.parse(line) {
            self.emit_at(index, sink);
        } else {
            self.skipped.bad_records += 1;
        }
    }

    /// Parses one line into `self.fields`; false if it is not a JSON object.
    fn parse(&mut self, line: &[u8]) -> bool {
        self.fields.lenient = false;
        if parse_object(line, &mut self.fields) {
            return true;
        }
        // Python's json.dumps writes NaN and Infinity bare; rewrite them as strings and retry.
        if contains(line, b"NaN") || contains(line, b"Infinity") {
            self.patched.clear();
            if quote_non_finite(line, &mut self.patched) {
                self.fields.lenient = true;
                let patched = std::mem::take(&mut self.patched);
                let ok = parse_object(&patched, &mut self.fields);
                self.patched = patched;
                return ok;
            }
        }
        false
    }

    fn emit(&mut self, sink: &mut dyn LogSink) {
        self.emit_at(self.line, sink)
    }

    fn emit_at(&mut self, index: u64, sink: &mut dyn LogSink) {
        let f = &self.fields;
        let step = f
            .step
            .iter()
            .flatten()
            .copied()
            .find(|s| s.is_finite())
            .map(|s| s.round() as i64)
            .unwrap_or(index as i64);
        let wall_time = f.time.iter().flatten().copied().next().unwrap_or(f64::NAN);
        for &(start, end, value) in &f.entries {
            sink.scalar(&f.keys[start..end], Point::new(step, wall_time, value));
        }
    }
}

impl LogDecoder for JsonlDecoder {
    /// See [`super::Decoder::decode`].
    fn decode(&mut self, buf: &[u8], eof: bool, sink: &mut dyn LogSink) -> usize {
        let mut pos = 0;
        if self.open_line {
            // The rest of a line whose object was already taken: whitespace up to the newline
            // is its end; anything else makes it a bad line (its scalars already went out).
            match buf.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    if !is_blank(&buf[..nl]) {
                        self.skipped.bad_records += 1;
                    }
                    self.open_line = false;
                    pos = nl + 1;
                }
                None if eof => {
                    if !is_blank(buf) {
                        self.skipped.bad_records += 1;
                    }
                    self.open_line = false;
                    return buf.len();
                }
                // Keep waiting for the newline; whitespace can be dropped meanwhile.
                None if is_blank(buf) => return buf.len(),
                None => return 0,
            }
        }
        while pos < buf.len() {
            let rest = &buf[pos..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.line_complete(&rest[..nl], sink);
                    pos += nl + 1;
                }
                None => {
                    // A last line without its newline. A JSON object cannot be the prefix of a
                    // longer valid line, so if it parses it is whole and is taken now; otherwise
                    // it waits for more bytes (or, at the end of the file, is a partial tail).
                    if is_blank(rest) {
                        if eof {
                            pos = buf.len();
                        }
                        break;
                    }
                    // Only a tail ending in `}` can be a whole object: checking that first
                    // keeps a long line arriving in small pieces from being parsed again and
                    // again.
                    let ends_object = rest.trim_ascii_end().ends_with(b"}");
                    if ends_object && self.parse(rest) {
                        self.emit(sink);
                        self.line += 1;
                        self.open_line = !eof;
                        pos = buf.len();
                    } else if eof {
                        self.skipped.partial_tail_bytes += rest.len() as u64;
                        self.line += 1;
                        pos = buf.len();
                    }
                    break;
                }
            }
        }
        pos
    }
    fn skipped(&self) -> Skipped {
        self.skipped
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn parse_object(line: &[u8], fields: &mut Fields) -> bool {
    fields.keys.clear();
    fields.path.clear();
    fields.entries.clear();
    fields.step = [None; 3];
    fields.time = [None; 3];
    let mut de = serde_json::Deserializer::from_slice(line);
    let seed = ObjectSeed {
        fields,
        prefix_len: 0,
        top: true,
    };
    if seed.deserialize(&mut de).is_err() || de.end().is_err() {
        return false;
    }
    true
}

/// Copies `line` to `out` with bare `NaN`, `Infinity` and `-Infinity` (outside strings) turned
/// into JSON strings. Returns false if there was nothing to rewrite.
fn quote_non_finite(line: &[u8], out: &mut Vec<u8>) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    let mut changed = false;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            out.push(b);
            i += 1;
            continue;
        }
        let rest = &line[i..];
        let token: Option<&[u8]> = [&b"-Infinity"[..], b"Infinity", b"NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push(b'"');
            out.extend_from_slice(t);
            out.push(b'"');
            i += t.len();
            changed = true;
            continue;
        }
        if b == b'"' {
            in_string = true;
        }
        out.push(b);
        i += 1;
    }
    changed
}

/// Visits a JSON object, appending its numeric fields (flattened) to `fields`.
struct ObjectSeed<'a> {
    fields: &'a mut Fields,
    /// Length of the key prefix (`outer/`) in `fields.path` for nested objects.
    prefix_len: usize,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fields = self.fields;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let key = key.as_str();
            let special = if self.top {
                STEP_KEYS
                    .iter()
                    .position(|k| *k == key)
                    .map(|i| (true, i))
                    .or_else(|| TIME_KEYS.iter().position(|k| *k == key).map(|i| (false, i)))
            } else {
                None
            };
            fields.path.truncate(self.prefix_len);
            fields.path.push_str(key);
            let lenient = fields.lenient;
            let value = map.next_value_seed(ValueSeed {
                fields: &mut *fields,
                lenient,
            })?;
            if let Value::Number(v) = value {
                match special {
                    Some((true, i)) => fields.step[i] = Some(v),
                    Some((false, i)) => fields.time[i] = Some(v),
                    None => {
                        let start = fields.keys.len();
                        fields.keys.push_str(&fields.path);
                        fields.entries.push((start, fields.keys.len(), v));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

enum Value {
    Number(f64),
    Nested,
    Other,
}

struct ValueSeed<'a> {
    fields: &'a mut Fields,
    lenient: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Other)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        if self.lenient {
            match v {
                "NaN" => return Ok(Value::Number(f64::NAN)),
                "Infinity" => return Ok(Value::Number(f64::INFINITY)),
                "-Infinity" => return Ok(Value::Number(f64::NEG_INFINITY)),
                _ => {}
            }
        }
        Ok(Value::Other)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        let fields = self.fields;
        fields.path.push('/');
        let prefix_len = fields.path.len();
        ObjectSeed {
            fields,
            prefix_len,
            top: false,
        }
        .visit_map(map)?;
        Ok(Value::Nested)
    }
}
