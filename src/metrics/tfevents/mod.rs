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

use std::io;
use std::path::Path;

use super::format::folder_parts;
use super::item::png_size;
use super::{
    Decoder, FactKind, ImageSource, LogDecoder, LogFormat, LogImage, LogSink, Point, Skipped,
};
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

    /// Its folder; but torch's `add_hparams` (which accelerate's `init_trackers(config=...)` calls) writes the
    /// hyperparameters into a sub-folder named by the time (`1700000000.123`): they belong to the run above.
    fn run_path(&self, rel: &Path) -> Vec<String> {
        let mut parts = folder_parts(rel);
        if parts.last().is_some_and(|p| is_time_folder(p)) {
            parts.pop();
        }
        parts
    }

    fn decoder(&self) -> Option<Decoder> {
        Some(Box::new(EventDecoder::new()))
    }

    fn load_image(&self, path: &Path, source: &ImageSource) -> io::Result<Vec<u8>> {
        match source {
            ImageSource::Record { offset, len, index } => {
                load_record_image(path, *offset, *len, *index)
            }
            ImageSource::File(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TensorBoard images are inside their event file",
            )),
        }
    }
}

/// Whether a folder name is a Unix time with a fraction, as `str(time.time())` writes it.
fn is_time_folder(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.split_once('.')
        .is_some_and(|(secs, frac)| (9..=11).contains(&secs.len()) && digits(secs) && digits(frac))
}

/// Incremental event-file decoder.
#[derive(Debug, Default)]
pub struct EventDecoder {
    skipped: Skipped,
    /// Bytes of the file consumed before the current call: where each record starts.
    consumed: u64,
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
                    let at = self.consumed + pos as u64;
                    let record = Record {
                        offset: at,
                        len: size as u64,
                    };
                    if !data_ok || decode_event(data, record, sink).is_err() {
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
        self.consumed += pos as u64;
        pos
    }

    fn skipped(&self) -> Skipped {
        self.skipped
    }
}

/// Where a record is in its file.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub offset: u64,
    pub len: u64,
}

/// Sends the scalars and images of one serialized `Event`, read from `record`, to `sink`.
pub fn decode_event(
    data: &[u8],
    record: Record,
    sink: &mut dyn LogSink,
) -> Result<(), prost::DecodeError> {
    let event = proto::Event::decode(data)?;
    let Some(summary) = event.summary else {
        return Ok(());
    };
    let mut index = 0;
    for value in &summary.value {
        hparams(value, sink);
        let scalar = match (&value.simple_value, &value.tensor) {
            (Some(v), _) => Some(*v as f64),
            (None, Some(t)) => proto::tensor_scalar(t),
            (None, None) => None,
        };
        if let Some(v) = scalar {
            sink.scalar(&value.tag, Point::new(event.step, event.wall_time, v));
        }
        for (width, height) in value_images(value).map(|(w, h, _)| (w, h)) {
            let source = ImageSource::Record {
                offset: record.offset,
                len: record.len,
                index,
            };
            index += 1;
            let image = LogImage {
                step: event.step,
                wall_time: event.wall_time,
                width,
                height,
                caption: None,
                source,
            };
            sink.image(&value.tag, image);
        }
    }
    Ok(())
}

/// The hyperparameters an hparams-plugin summary holds, as config facts.
fn hparams(value: &proto::SummaryValue, sink: &mut dyn LogSink) {
    let Some(plugin) = value.metadata.as_ref().and_then(|m| m.plugin_data.as_ref()) else {
        return;
    };
    if plugin.plugin_name != "hparams" {
        return;
    }
    let Ok(data) = proto::HParamsPluginData::decode(plugin.content.as_slice()) else {
        return;
    };
    for (key, v) in data
        .session_start_info
        .map(|s| s.hparams)
        .unwrap_or_default()
    {
        let value = match (v.number_value, v.string_value, v.bool_value) {
            (Some(n), _, _) => crate::metrics::report::json_number(n),
            (_, Some(s), _) => serde_json::Value::String(s),
            (_, _, Some(b)) => serde_json::Value::Bool(b),
            _ => serde_json::Value::Null,
        };
        sink.fact(FactKind::Config, &key, value);
    }
}

/// The images of one summary value, with their sizes: a legacy image (one, often a grid of a batch), or the
/// images plugin's string tensor (several).
fn value_images(value: &proto::SummaryValue) -> impl Iterator<Item = (u32, u32, &[u8])> {
    let legacy = value.image.as_ref().map(|i| {
        let size = (i.width.max(0) as u32, i.height.max(0) as u32);
        let size = png_size(&i.encoded_image_string).unwrap_or(size);
        (size.0, size.1, i.encoded_image_string.as_slice())
    });
    let plugin = value
        .tensor
        .as_ref()
        .and_then(proto::tensor_images)
        .into_iter()
        .flat_map(|(w, h, images)| images.iter().map(move |png| (w, h, png.as_slice())));
    legacy.into_iter().chain(plugin)
}

/// The PNG of image `index` of the event record at `offset` (`len` bytes with its framing) of `path`.
fn load_record_image(path: &Path, offset: u64, len: u64, index: u32) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(len).read_to_end(&mut buf)?;
    let Frame::Record {
        data,
        data_ok: true,
        ..
    } = record::frame(&buf)
    else {
        return Err(invalid(
            "the image's record changed since it was read; read the log again",
        ));
    };
    let event = proto::Event::decode(data).map_err(|e| invalid(&e.to_string()))?;
    let summary = event.summary.unwrap_or_default();
    let png = summary
        .value
        .iter()
        .flat_map(value_images)
        .nth(index as usize)
        .map(|(_, _, png)| png.to_vec());
    png.ok_or_else(|| invalid("no such image in its record; read the log again"))
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
                    image: None,
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
    fn hparams_are_config_facts() {
        let data = proto::HParamsPluginData {
            session_start_info: Some(proto::SessionStartInfo {
                hparams: [
                    (
                        "lr".to_string(),
                        proto::ProtoValue {
                            number_value: Some(1e-4),
                            ..Default::default()
                        },
                    ),
                    (
                        "sched".to_string(),
                        proto::ProtoValue {
                            string_value: Some("ddim".into()),
                            ..Default::default()
                        },
                    ),
                ]
                .into(),
            }),
        };
        let value = proto::SummaryValue {
            tag: "_hparams_/session_start_info".into(),
            metadata: Some(proto::SummaryMetadata {
                plugin_data: Some(proto::PluginData {
                    plugin_name: "hparams".into(),
                    content: data.encode_to_vec(),
                }),
            }),
            ..Default::default()
        };
        let event = proto::Event {
            summary: Some(proto::Summary { value: vec![value] }),
            ..Default::default()
        };
        let mut facts = crate::metrics::tail::SourceBuilder::default();
        let record = Record { offset: 0, len: 0 };
        decode_event(&event.encode_to_vec(), record, &mut facts).unwrap();
        let sources = facts.finish(
            Path::new("x"),
            crate::metrics::Format::TfEvents,
            Skipped::default(),
        );
        let facts = &sources[0].1.facts;
        assert_eq!(
            facts[&(FactKind::Config, "lr".into())],
            serde_json::json!(1e-4)
        );
        assert_eq!(
            facts[&(FactKind::Config, "sched".into())],
            serde_json::json!("ddim")
        );
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
