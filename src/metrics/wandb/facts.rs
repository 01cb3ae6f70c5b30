//! Run-level records: the run itself, its config, its summary and its exit.

use std::collections::HashSet;

use serde_json::Value;

use super::history::item_path;
use super::json;
use super::proto::{ConfigRecord, Item, RunExitRecord, RunRecord, SummaryRecord};
use super::{FactKind, LogSink};

/// Sends the facts of a run record, then its config and summary; returns how many items did not
/// parse.
pub fn run(r: &RunRecord, sink: &mut dyn LogSink) -> usize {
    let texts = [
        ("id", &r.run_id),
        ("name", &r.display_name),
        ("project", &r.project),
        ("group", &r.run_group),
        ("job_type", &r.job_type),
        ("notes", &r.notes),
    ];
    for (key, text) in texts {
        if !text.is_empty() {
            sink.fact(FactKind::Info, key, Value::from(text.as_str()));
        }
    }
    sink.fact(FactKind::Info, "tags", Value::from(r.tags.clone()));
    if let Some(t) = &r.start_time {
        sink.fact(FactKind::Info, "start_time", Value::from(t.unix_seconds()));
    }
    if r.resumed {
        sink.fact(FactKind::Info, "resumed", Value::Bool(true));
    }
    sink.fact(FactKind::Info, "state", Value::from("running"));
    let config = r.config.as_ref().map_or(0, |c| config(c, sink));
    config + r.summary.as_ref().map_or(0, |s| summary(s, sink))
}

/// Sends the state and exit code of a finished run.
pub fn exit(r: &RunExitRecord, sink: &mut dyn LogSink) {
    let state = if r.exit_code == 0 {
        "finished"
    } else {
        "failed"
    };
    sink.fact(FactKind::Info, "state", Value::from(state));
    sink.fact(FactKind::Info, "exit_code", Value::from(r.exit_code));
}

/// Sends config updates, and removed keys as `null`; returns how many items did not parse.
pub fn config(c: &ConfigRecord, sink: &mut dyn LogSink) -> usize {
    let mut bad = 0;
    for item in &c.update {
        match item.json().and_then(json::parse) {
            Some(v) => sink.fact(FactKind::Config, &key(item), json::for_fact(v)),
            None => bad += 1,
        }
    }
    for item in &c.remove {
        sink.fact(FactKind::Config, &key(item), Value::Null);
    }
    bad
}

/// Sends summary updates, and removed keys as `null`; returns how many items did not parse.
///
/// Keys starting with `_` (`_step`, `_runtime`, `_wandb.*`) are W&B's own. Media in the summary
/// (the last image logged under a key) are left out: the history has every image.
pub fn summary(s: &SummaryRecord, sink: &mut dyn LogSink) -> usize {
    let media = media_keys(&s.update);
    let mut bad = 0;
    for item in &s.update {
        let path = item_path(item);
        let Some(&top) = path.first() else {
            continue;
        };
        if top.starts_with('_') || media.contains(top) {
            continue;
        }
        match item.json().and_then(json::parse) {
            Some(Value::Object(dict)) if dict.contains_key("_type") => {}
            Some(v) => sink.fact(FactKind::Summary, &path.join("."), json::for_fact(v)),
            None => bad += 1,
        }
    }
    for item in &s.remove {
        let key = key(item);
        if !key.starts_with('_') {
            sink.fact(FactKind::Summary, &key, Value::Null);
        }
    }
    bad
}

/// The top-level keys whose nested items hold a media dict (one of them is `[key, "_type"]`).
fn media_keys(items: &[Item]) -> HashSet<&str> {
    items
        .iter()
        .filter_map(|item| match item_path(item).as_slice() {
            [top, "_type"] => Some(*top),
            _ => None,
        })
        .collect()
}

/// An item's key: its nested key joined with `.`.
fn key(item: &Item) -> String {
    item_path(item).join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::wandb::proto::Timestamp;

    #[derive(Default)]
    struct Facts(Vec<(FactKind, String, Value)>);

    impl LogSink for Facts {
        fn scalar(&mut self, _: &str, _: crate::metrics::wandb::Point) {}
        fn fact(&mut self, kind: FactKind, key: &str, value: Value) {
            self.0.push((kind, key.into(), value));
        }
    }

    fn item(key: &str, nested: &[&str], json: &str) -> Item {
        Item::new(key, nested, json)
    }

    #[test]
    fn run_and_exit() {
        let r = RunRecord {
            run_id: "abc".into(),
            display_name: "name".into(),
            tags: vec!["t".into()],
            start_time: Some(Timestamp {
                seconds: 10,
                nanos: 500_000_000,
            }),
            resumed: true,
            ..Default::default()
        };
        let mut f = Facts::default();
        assert_eq!(run(&r, &mut f), 0);
        exit(&RunExitRecord { exit_code: 2 }, &mut f);
        let keys: Vec<&str> = f.0.iter().map(|x| x.1.as_str()).collect();
        assert_eq!(
            keys,
            [
                "id",
                "name",
                "tags",
                "start_time",
                "resumed",
                "state",
                "state",
                "exit_code"
            ]
        );
        assert_eq!(f.0[3].2, 10.5);
        assert_eq!(f.0[6].2, "failed");
        assert!(f.0.iter().all(|x| x.0 == FactKind::Info));
    }

    #[test]
    fn config_and_summary_updates_and_removals() {
        let c = ConfigRecord {
            update: vec![
                item("lr", &[], "Infinity"),
                item("", &["unet", "depth"], "[NaN, 2]"),
                item("bad", &[], "nope"),
            ],
            remove: vec![item("old", &[], "")],
        };
        let mut f = Facts::default();
        assert_eq!(config(&c, &mut f), 1);
        let s = SummaryRecord {
            update: vec![
                item("", &["_wandb", "runtime"], "3"),
                item("_step", &[], "3"),
                item("", &["eval", "fid"], "1.5"),
                item("", &["img", "_type"], "\"image-file\""),
                item("", &["img", "path"], "\"media/images/x.png\""),
                item("old_img", &[], r#"{"_type": "image-file"}"#),
                item("note", &[], "\"n\""),
            ],
            remove: vec![item("", &["eval", "fid"], ""), item("_runtime", &[], "")],
        };
        assert_eq!(summary(&s, &mut f), 0);
        let want = [
            (FactKind::Config, "lr", Value::from("Infinity")),
            (
                FactKind::Config,
                "unet.depth",
                serde_json::json!(["NaN", 2]),
            ),
            (FactKind::Config, "old", Value::Null),
            (FactKind::Summary, "eval.fid", Value::from(1.5)),
            (FactKind::Summary, "note", Value::from("n")),
            (FactKind::Summary, "eval.fid", Value::Null),
        ];
        let got: Vec<(FactKind, &str, Value)> =
            f.0.iter()
                .map(|(k, n, v)| (*k, n.as_str(), v.clone()))
                .collect();
        assert_eq!(got, want);
    }
}
