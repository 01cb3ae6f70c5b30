//! TensorBoard event files (`events.out.tfevents.*`): TFRecords of `Event` protobufs.
//!
//! Scalars are read from `Summary.Value.simple_value` (TF 1.x, tensorboardX) and from rank-0
//! tensors (TF 2.x `tf.summary.scalar`, and writers that log in double or half precision):
//! `DT_FLOAT`, `DT_DOUBLE`, `DT_HALF` and `DT_BFLOAT16` (and integers), from their typed fields
//! or from `tensor_content`. Both kinds land in the same series for a tag.
//!
//! A record with a bad data checksum, or whose protobuf does not decode, is skipped and counted;
//! a header with a bad length checksum makes the reader scan for the next valid record; a
//! record cut off at the end of a file waits for the rest while the file is followed and is
//! counted as a partial tail when the file is read once.

pub mod proto;
pub mod record;

use prost::Message;

use super::{Decoder, LogDecoder, LogFormat, LogSink, Point, Skipped};
use record::Frame;

/// TensorBoard's event files, in the format table.
pub struct TfEvents;

impl LogFormat for TfEvents {
    fn name(&self) -> &'static str {
        "tfevents"
    }

    fn is_log_file(&self, name: &str) -> bool {
        name.starts_with("events.out.tfevents.")
    }

    fn decoder(&self) -> Option<Decoder> {
        Some(Box::new(EventDecoder::new()))
    }
}

/// Incremental event-file decoder.
#[derive(Debug, Default)]
pub struct EventDecoder {
    skipped: Skipped,
    /// In the middle of skipping garbage after a bad header: the bad record is already counted.
    resyncing: bool,
}

impl EventDecoder {
    pub fn new() -> Self {
        EventDecoder::default()
    }

    fn skip(&mut self, bytes: usize) {
        if !self.resyncing {
            self.skipped.bad_records += 1;
            self.resyncing = true;
        }
        self.skipped.skipped_bytes += bytes as u64;
    }
}

impl LogDecoder for EventDecoder {
    /// See [`super::Decoder::decode`].
    fn decode(&mut self, buf: &[u8], eof: bool, sink: &mut dyn LogSink) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            match record::frame(rest) {
                Frame::Record {
                    data,
                    size,
                    data_ok,
                } => {
                    self.resyncing = false;
                    if !data_ok || decode_event(data, sink).is_err() {
                        self.skipped.bad_records += 1;
                    }
                    pos += size;
                }
                Frame::Incomplete if !eof => break,
                Frame::Incomplete => {
                    // The file ends inside this record. If a valid record follows anyway (a
                    // writer that died mid-record, then more was appended), skip to it.
                    match record::resync(&rest[1..]) {
                        Some(skip) if rest.len() >= record::HEADER_LEN => {
                            self.skip(skip + 1);
                            pos += skip + 1;
                        }
                        _ => {
                            self.skipped.partial_tail_bytes += rest.len() as u64;
                            pos = buf.len();
                        }
                    }
                }
                Frame::BadHeader => match record::resync(&rest[1..]) {
                    Some(skip) => {
                        self.skip(skip + 1);
                        pos += skip + 1;
                    }
                    None => {
                        let keep = if eof { 0 } else { record::resync_keep(rest) };
                        self.skip(rest.len() - keep);
                        pos += rest.len() - keep;
                        break;
                    }
                },
            }
        }
        pos
    }
    fn skipped(&self) -> Skipped {
        self.skipped
    }
}

/// Sends the scalars of one serialized `Event` to `sink`.
pub fn decode_event(data: &[u8], sink: &mut dyn LogSink) -> Result<(), prost::DecodeError> {
    let event = proto::Event::decode(data)?;
    let Some(summary) = event.summary else {
        return Ok(());
    };
    for value in &summary.value {
        let scalar = match (&value.simple_value, &value.tensor) {
            (Some(v), _) => Some(*v as f64),
            (None, Some(t)) => proto::tensor_scalar(t),
            (None, None) => None,
        };
        if let Some(v) = scalar {
            sink.scalar(&value.tag, Point::new(event.step, event.wall_time, v));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Format, decode_bytes};

    fn event(step: i64, tag: &str, value: f32) -> Vec<u8> {
        proto::Event {
            wall_time: 1000.0 + step as f64,
            step,
            file_version: None,
            summary: Some(proto::Summary {
                value: vec![proto::SummaryValue {
                    tag: tag.into(),
                    simple_value: Some(value),
                    tensor: None,
                    metadata: None,
                }],
            }),
        }
        .encode_to_vec()
    }

    fn file(n: i64) -> Vec<u8> {
        let mut buf = Vec::new();
        let version = proto::Event {
            wall_time: 1.0,
            file_version: Some("brain.Event:2".into()),
            ..Default::default()
        };
        record::encode_record(&version.encode_to_vec(), &mut buf);
        for i in 0..n {
            record::encode_record(&event(i, "loss", i as f32), &mut buf);
        }
        buf
    }

    #[test]
    fn reads_simple_values() {
        let (s, skipped) = decode_bytes(Format::TfEvents, &file(5));
        assert!(skipped.is_empty());
        assert_eq!(s.len(), 5);
        assert_eq!(s[3].tag, "loss");
        assert_eq!(s[3].point, Point::new(3, 1003.0, 3.0));
    }

    #[test]
    fn skips_bad_length_crc_and_resyncs() {
        let mut buf = file(5);
        // Offsets of the records of steps 0..5, after the file_version record.
        let sizes: Vec<usize> = (0..5)
            .map(|i| event(i, "loss", i as f32).len() + 16)
            .collect();
        let start = buf.len() - sizes.iter().sum::<usize>();
        let step2 = start + sizes[0] + sizes[1];
        // Break the length checksum of the record of step 2.
        buf[step2 + 9] ^= 0xff;
        let (s, skipped) = decode_bytes(Format::TfEvents, &buf);
        assert_eq!(
            s.iter().map(|s| s.point.step).collect::<Vec<_>>(),
            vec![0, 1, 3, 4]
        );
        assert_eq!(skipped.bad_records, 1);
        assert_eq!(skipped.skipped_bytes, sizes[2] as u64);
    }

    #[test]
    fn skips_bad_data_crc() {
        let mut buf = file(5);
        let last = buf.len() - 1;
        buf[last] ^= 0x01;
        let (s, skipped) = decode_bytes(Format::TfEvents, &buf);
        assert_eq!(s.len(), 4);
        assert_eq!(skipped.bad_records, 1);
        assert_eq!(skipped.skipped_bytes, 0);
    }

    #[test]
    fn chunked_equals_whole() {
        let buf = file(20);
        let (whole, _) = decode_bytes(Format::TfEvents, &buf);
        let mut d = EventDecoder::new();
        let mut got = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for chunk in buf.chunks(7) {
            pending.extend_from_slice(chunk);
            let used = d.decode(&pending, false, &mut |t: &str, p: Point| {
                got.push((t.to_string(), p))
            });
            pending.drain(..used);
        }
        assert!(pending.is_empty());
        assert_eq!(got.len(), whole.len());
    }
}
