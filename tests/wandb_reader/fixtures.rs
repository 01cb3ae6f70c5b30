//! The real offline runs written by wandb 0.31, read whole and checked against expected.json.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{Event, Read, data, json, read_whole, run_files};
use difflab::metrics::wandb::{load_image, run_key};
use difflab::metrics::{FactKind, ImageSource, LogImage, Skipped};
use serde_json::Value;

/// The wandb runs of expected.json: (run key, expected).
fn expected_runs() -> Vec<(String, Value)> {
    let expected = json("expected.json");
    expected["runs"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["kind"] == "wandb")
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect()
}

/// The parts of a run, each read whole.
fn read_run(run: &Value) -> Vec<(std::path::PathBuf, Read)> {
    run["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let path = data().join(p.as_str().unwrap());
            let read = read_whole(&std::fs::read(&path).unwrap());
            (path, read)
        })
        .collect()
}

fn number_or_name(v: f64) -> Value {
    if v.is_nan() {
        Value::from("NaN")
    } else if v.is_infinite() {
        Value::from(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        Value::from(v)
    }
}

/// expected.json's summary of a series: points, first/last [step, value], nan/inf counts.
fn series_summary(mut points: Vec<(i64, f64)>) -> Value {
    points.sort_by_key(|p| p.0);
    let pair = |p: &(i64, f64)| Value::from(vec![Value::from(p.0), number_or_name(p.1)]);
    let mut out = serde_json::json!({
        "points": points.len(),
        "first": pair(&points[0]),
        "last": pair(points.last().unwrap()),
    });
    let nan = points.iter().filter(|p| p.1.is_nan()).count();
    let inf = points.iter().filter(|p| p.1.is_infinite()).count();
    if nan > 0 {
        out["nan"] = nan.into();
    }
    if inf > 0 {
        out["inf"] = inf.into();
    }
    out
}

#[test]
fn runs_match_expected() {
    let runs = expected_runs();
    assert_eq!(runs.len(), 2);
    for (key, run) in runs {
        let parts = read_run(&run);
        // The parts are found by globbing as well, in the same (start) order.
        let id = run["run_id"].as_str().unwrap();
        let globbed = run_files(id);
        assert_eq!(
            globbed,
            parts.iter().map(|p| p.0.clone()).collect::<Vec<_>>()
        );
        let rel = parts[0].0.strip_prefix(data()).unwrap();
        assert_eq!(run_key(rel).as_deref(), Some(key.as_str()));

        let events: Vec<&Event> = parts.iter().flat_map(|p| &p.1.events).collect();
        for (_, read) in &parts {
            assert_eq!(read.skipped, Skipped::default(), "{key}");
        }
        let records: u64 = parts.iter().map(|p| p.1.records).sum();
        assert_eq!(records, run["records"].as_u64().unwrap(), "{key}");

        let mut scalars: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
        let mut images: BTreeMap<&str, Vec<(i64, u32, u32)>> = BTreeMap::new();
        let mut facts: BTreeMap<(FactKind, &str), &Value> = BTreeMap::new();
        for e in &events {
            match e {
                Event::Scalar(t, p) => scalars.entry(t).or_default().push((p.step, p.value)),
                Event::Image(t, i) => images
                    .entry(t)
                    .or_default()
                    .push((i.step, i.width, i.height)),
                Event::Fact(k, key, v) => {
                    facts.insert((*k, key), v);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let got: BTreeMap<&str, Value> = scalars
            .into_iter()
            .map(|(t, p)| (t, series_summary(p)))
            .collect();
        assert_eq!(serde_json::to_value(&got).unwrap(), run["scalars"], "{key}");

        let got: BTreeMap<&str, Value> = images
            .into_iter()
            .map(|(t, mut v)| {
                v.sort_by_key(|i| i.0);
                (t, serde_json::json!({"count": v.len(), "images": v}))
            })
            .collect();
        assert_eq!(serde_json::to_value(&got).unwrap(), run["images"], "{key}");

        let of_kind = |kind: FactKind| -> BTreeMap<&str, &Value> {
            facts
                .iter()
                .filter(|((k, _), v)| *k == kind && !v.is_null())
                .map(|((_, key), v)| (*key, *v))
                .collect()
        };
        let config_keys: BTreeSet<&str> = of_kind(FactKind::Config).into_keys().collect();
        let want: BTreeSet<&str> = run["config_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(config_keys, want, "{key}");
        assert_eq!(
            serde_json::to_value(of_kind(FactKind::Summary)).unwrap(),
            run["summary"],
            "{key}"
        );

        let info = of_kind(FactKind::Info);
        assert_eq!(info["id"], &run["run_id"]);
        assert_eq!(info["name"], &run["display_name"]);
        assert_eq!(info["project"], "difflab-fixtures");
        assert_eq!(info["state"], "finished");
        assert_eq!(info["exit_code"], 0);
    }
}

#[test]
fn run_a_facts_and_rows() {
    let runs = expected_runs();
    let run = &runs.iter().find(|r| r.1["run_id"] == "dlabwb01").unwrap().1;
    let parts = read_run(run);
    let read = &parts[0].1;
    let fact = |kind: FactKind, key: &str| {
        read.events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Fact(k, name, v) if *k == kind && name == key => Some(v.clone()),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(
        fact(FactKind::Info, "tags"),
        serde_json::json!(["fixture", "ddpm"])
    );
    assert_eq!(fact(FactKind::Info, "group"), "difflab");
    assert_eq!(fact(FactKind::Info, "job_type"), "train");
    assert_eq!(fact(FactKind::Config, "learning_rate"), 1e-4);
    assert_eq!(fact(FactKind::Config, "noise_scheduler"), "ddpm");
    assert_eq!(
        fact(FactKind::Config, "unet"),
        serde_json::json!({"block_out_channels": [32, 64], "layers_per_block": 2})
    );
    assert_eq!(
        fact(FactKind::Config, "validation_prompts")
            .as_array()
            .unwrap()
            .len(),
        1300
    );
    // The NaN at step 7 is a point, not a gap.
    let grad = read.scalars("train/grad_norm");
    assert!(grad.iter().any(|p| p.step == 7 && p.value.is_nan()));
    let lr = read.scalars("train/lr");
    assert_eq!((lr[0].step, lr[0].value), (0, 1e-5));
}

#[test]
fn times_match_manifest() {
    let manifest = json("manifest.json");
    for (_, run) in expected_runs() {
        let id = run["run_id"].as_str().unwrap();
        let m = &manifest["wandb_offline"][id];
        for (i, (_, read)) in read_run(&run).iter().enumerate() {
            let start = read
                .events
                .iter()
                .find_map(|e| match e {
                    Event::Fact(FactKind::Info, k, v) if k == "start_time" => v.as_f64(),
                    _ => None,
                })
                .unwrap();
            assert!((start - m["start_times"][i].as_f64().unwrap()).abs() < 1e-6);
            let walls: Vec<f64> = read
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Scalar(_, p) => Some(p.wall_time),
                    _ => None,
                })
                .collect();
            let span = &m["history_timestamps"][i];
            assert_eq!(walls[0], span[0].as_f64().unwrap());
            assert_eq!(*walls.last().unwrap(), span[1].as_f64().unwrap());
            assert!(walls.is_sorted(), "wall times go back");
        }
    }
}

/// Width and height from a PNG's IHDR.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn images_load_from_media_files() {
    let runs = expected_runs();
    let run = &runs.iter().find(|r| r.1["run_id"] == "dlabwb01").unwrap().1;
    let parts = read_run(run);
    let (path, read) = &parts[0];
    let images: Vec<(&String, &LogImage)> = read
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Image(t, i) => Some((t, i)),
            _ => None,
        })
        .collect();
    assert_eq!(images.len(), 10);
    for (tag, image) in &images {
        let ImageSource::File(rel) = &image.source else {
            panic!("not a file: {image:?}");
        };
        assert!(rel.starts_with("files/media/images"), "{rel:?}");
        let bytes = load_image(path, &image.source).unwrap();
        assert_eq!(png_size(&bytes), (image.width, image.height));
        assert!(image.wall_time.is_finite());
        // wandb's media counter runs one behind the step.
        let name = rel.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&format!("{tag}_{}_", image.step - 1)),
            "{name}"
        );
    }
    let captions: Vec<Option<&str>> = images
        .iter()
        .filter(|(t, _)| *t == "validation")
        .map(|(_, i)| i.caption.as_deref())
        .collect();
    let want: Vec<String> = (0..8)
        .map(|k| format!("{}: tile {}", k % 4, k % 4))
        .collect();
    assert_eq!(
        captions,
        want.iter().map(|c| Some(c.as_str())).collect::<Vec<_>>()
    );
    assert!(
        images
            .iter()
            .filter(|(t, _)| *t == "noise")
            .all(|(_, i)| i.caption.is_none())
    );
}
