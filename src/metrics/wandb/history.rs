//! History rows (`run.log`): numbers become scalars, W&B image media become images.
//!
//! Each item of a row has a key, or a nested key path (`{"eval": {"fid": x}}` is written as the
//! path `["eval", "fid"]`, and a logged image as one item per field of its media dict). The items
//! are put back together into one JSON tree per row and walked: a number is a scalar whose tag is
//! its path joined with `.`; a dict with a `_type` is media.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::json;
use super::proto::{HistoryRecord, Item};
use super::{ImageSource, LogImage, LogSink, Point};

/// W&B stores media files under the run folder's `files/`; media paths are relative to it.
const MEDIA_ROOT: &str = "files";

/// What rows need from the rows before them.
#[derive(Debug, Default)]
pub struct Rows {
    /// The step of a row that says none: one past the previous row's.
    next_step: i64,
}

/// The path of an item: its key, or its nested key.
pub fn item_path(item: &Item) -> Vec<&str> {
    if item.key.is_empty() {
        item.nested_key.iter().map(|k| text(k)).collect()
    } else {
        vec![text(&item.key)]
    }
}

/// A key's text: protobuf strings are UTF-8; bytes that are not (a damaged record) read as U+FFFD.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("\u{fffd}")
}

/// Sends the scalars and images of one row to `sink`; returns how many items did not parse.
pub fn row(h: &HistoryRecord, rows: &mut Rows, sink: &mut dyn LogSink) -> usize {
    let mut tree = Map::new();
    let mut step = None;
    let mut wall_time = f64::NAN;
    let mut bad = 0;
    for item in &h.item {
        let path = item_path(item);
        let Some(value) = item.json().and_then(json::parse) else {
            bad += 1;
            continue;
        };
        match path.as_slice() {
            ["_step"] => step = json::number(&value).map(|s| s as i64),
            ["_timestamp"] => wall_time = json::number(&value).unwrap_or(f64::NAN),
            [first, ..] if !first.starts_with('_') => insert(&mut tree, &path, value),
            _ => {}
        }
    }
    let step = step
        .or(h.step.as_ref().map(|s| s.num))
        .unwrap_or(rows.next_step);
    rows.next_step = step.saturating_add(1);
    let at = At { step, wall_time };
    for (key, value) in &tree {
        walk(&mut key.clone(), value, at, sink);
    }
    bad
}

/// Puts `value` at `path` in `tree`, merging dicts that meet.
fn insert(tree: &mut Map<String, Value>, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let slot = tree.entry(first.to_string()).or_insert(Value::Null);
    if rest.is_empty() {
        match (slot, value) {
            (Value::Object(old), Value::Object(new)) => old.extend(new),
            (slot, value) => *slot = value,
        }
        return;
    }
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(inner) = slot {
        insert(inner, rest, value);
    }
}

/// Where a row is.
#[derive(Debug, Clone, Copy)]
struct At {
    step: i64,
    wall_time: f64,
}

/// Sends what `value`, logged under `tag`, holds.
fn walk(tag: &mut String, value: &Value, at: At, sink: &mut dyn LogSink) {
    if let Some(v) = json::number(value) {
        sink.scalar(tag, Point::new(at.step, at.wall_time, v));
        return;
    }
    let Value::Object(dict) = value else {
        return;
    };
    if let Some(kind) = dict.get("_type") {
        media(tag, kind.as_str().unwrap_or_default(), dict, at, sink);
        return;
    }
    for (key, child) in dict {
        let len = tag.len();
        tag.push('.');
        tag.push_str(key);
        walk(tag, child, at, sink);
        tag.truncate(len);
    }
}

/// Sends the images of a media dict. Other media (tables, histograms...) are not read.
fn media(tag: &str, kind: &str, dict: &Map<String, Value>, at: At, sink: &mut dyn LogSink) {
    let width = dimension(dict.get("width"));
    let height = dimension(dict.get("height"));
    let image = |path: &str, caption: Option<&Value>| LogImage {
        step: at.step,
        wall_time: at.wall_time,
        width,
        height,
        caption: caption.and_then(Value::as_str).map(str::to_string),
        source: ImageSource::File(PathBuf::from(MEDIA_ROOT).join(path)),
    };
    match kind {
        "image-file" => {
            if let Some(path) = dict.get("path").and_then(Value::as_str) {
                sink.image(tag, image(path, dict.get("caption")));
            }
        }
        "images/separated" => {
            let Some(Value::Array(files)) = dict.get("filenames") else {
                return;
            };
            let captions = dict.get("captions").and_then(Value::as_array);
            for (i, file) in files.iter().enumerate() {
                if let Some(path) = file.as_str() {
                    let caption = captions.and_then(|c| c.get(i));
                    sink.image(tag, image(path, caption));
                }
            }
        }
        _ => {}
    }
}

/// An image width or height; 0 when missing or not a size.
fn dimension(v: Option<&Value>) -> u32 {
    v.and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::wandb::proto::HistoryStep;

    #[derive(Default)]
    struct Got {
        scalars: Vec<(String, Point)>,
        images: Vec<(String, LogImage)>,
    }

    impl LogSink for Got {
        fn scalar(&mut self, tag: &str, point: Point) {
            self.scalars.push((tag.into(), point));
        }
        fn image(&mut self, tag: &str, image: LogImage) {
            self.images.push((tag.into(), image));
        }
    }

    fn item(path: &[&str], json: &str) -> Item {
        match path {
            [one] => Item::new(one, &[], json),
            _ => Item::new("", path, json),
        }
    }

    fn read(rows: &[HistoryRecord]) -> (Got, usize) {
        let mut got = Got::default();
        let mut state = Rows::default();
        let bad = rows.iter().map(|h| row(h, &mut state, &mut got)).sum();
        (got, bad)
    }

    #[test]
    fn nested_values_and_non_scalars() {
        let h = HistoryRecord {
            item: vec![
                item(&["_step"], "3"),
                item(&["_timestamp"], "1700000000.5"),
                item(&["_runtime"], "0.1"),
                item(&["eval", "fid"], "12.5"),
                item(
                    &["deep"],
                    r#"{"a": {"b": -Infinity}, "on": true, "s": "x"}"#,
                ),
                item(&["flag"], "false"),
                item(&["name"], "\"text\""),
                item(&["list"], "[1, 2]"),
                item(&["broken"], "{"),
            ],
            step: None,
        };
        let (got, bad) = read(&[h]);
        assert_eq!(bad, 1);
        let tags: Vec<&str> = got.scalars.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(tags, ["deep.a.b", "eval.fid"]);
        assert_eq!(got.scalars[0].1.value, f64::NEG_INFINITY);
        assert_eq!(got.scalars[1].1, Point::new(3, 1_700_000_000.5, 12.5));
    }

    #[test]
    fn steps_without_step_item() {
        let rows = [
            HistoryRecord {
                item: vec![item(&["x"], "1")],
                step: Some(HistoryStep { num: 5 }),
            },
            HistoryRecord {
                item: vec![item(&["x"], "NaN")],
                step: None,
            },
        ];
        let (got, _) = read(&rows);
        let steps: Vec<i64> = got.scalars.iter().map(|s| s.1.step).collect();
        assert_eq!(steps, [5, 6]);
        assert!(got.scalars.iter().all(|s| s.1.wall_time.is_nan()));
        assert!(got.scalars[1].1.value.is_nan());
    }

    #[test]
    fn media_as_one_dict_or_as_nested_items() {
        let whole = r#"{"_type": "image-file", "path": "media/images/a.png", "width": 8,
                        "height": 4, "caption": "a cat"}"#;
        let h = HistoryRecord {
            item: vec![
                item(&["_step"], "2"),
                item(&["single"], whole),
                item(&["grid", "_type"], "\"images/separated\""),
                item(&["grid", "width"], "16"),
                item(&["grid", "height"], "16"),
                item(&["grid", "count"], "2"),
                item(
                    &["grid", "filenames"],
                    r#"["media/images/g0.png", "media/images/g1.png"]"#,
                ),
                item(&["grid", "captions"], r#"["first"]"#),
                item(&["nofiles", "_type"], "\"images/separated\""),
                item(&["hist", "_type"], "\"histogram\""),
                item(&["hist", "bins"], "[1, 2]"),
            ],
            step: None,
        };
        let (got, bad) = read(&[h]);
        assert_eq!(bad, 0);
        assert!(got.scalars.is_empty());
        let images: Vec<(&str, &LogImage)> =
            got.images.iter().map(|(t, i)| (t.as_str(), i)).collect();
        assert_eq!(images.len(), 3);
        assert_eq!(images[0].0, "grid");
        assert_eq!(images[0].1.caption.as_deref(), Some("first"));
        assert_eq!(images[1].1.caption, None);
        assert_eq!(
            images[1].1.source,
            ImageSource::File(PathBuf::from("files/media/images/g1.png"))
        );
        let single = images[2].1;
        assert_eq!(images[2].0, "single");
        assert_eq!((single.step, single.width, single.height), (2, 8, 4));
        assert_eq!(single.caption.as_deref(), Some("a cat"));
        assert_eq!(
            single.source,
            ImageSource::File(PathBuf::from("files/media/images/a.png"))
        );
    }
}
