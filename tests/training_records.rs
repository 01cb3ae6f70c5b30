//! The training records diffusion runs leave on disk — TensorBoard with images, W&B offline runs (one resumed
//! into a second folder), MLflow's SQLite and file stores — read as the libraries that wrote them read them:
//! every run, tag, point count, first and last point, non-finite count and image of
//! `tests/data/runs/expected.json` (written with the fixtures by `tests/data/runs/make.py`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::path::Path;

use difflab::metrics::report::runs_json;
use serde_json::{Value, json};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/runs"))
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// What expected.json says of a run's scalars, in `metrics --json`'s form.
fn expected_scalars(run: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (tag, s) in run["scalars"].as_object().unwrap() {
        let mut entry = json!({"points": s["points"], "first": s["first"], "last": s["last"]});
        for key in ["nan", "inf"] {
            if let Some(n) = s.get(key) {
                entry[key] = n.clone();
            }
        }
        out.insert(tag.clone(), entry);
    }
    Value::Object(out)
}

fn expected_images(run: &Value) -> Value {
    run.get("images").cloned().unwrap_or_else(|| json!({}))
}

#[test]
fn every_fixture_run_reads_as_its_writer_wrote_it() {
    let store = difflab::metrics::load(&[fixtures()]).unwrap();
    let got = runs_json(&store, &[]);
    let expected = expected();
    let runs = expected["runs"].as_object().unwrap();
    let mut checked = 0;
    for (name, want) in runs {
        let have = got["runs"].get(name).unwrap_or_else(|| {
            let names: Vec<&String> = got["runs"].as_object().unwrap().keys().collect();
            panic!("run {name} not read; runs read: {names:?}")
        });
        assert_eq!(have["scalars"], expected_scalars(want), "scalars of {name}");
        assert_eq!(have["images"], expected_images(want), "images of {name}");
        checked += 1;
    }
    let extra: Vec<&String> = got["runs"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !runs.contains_key(*k))
        .collect();
    assert!(
        extra.is_empty(),
        "runs that are not in the fixtures: {extra:?}"
    );
    println!("checked {checked} of {} fixture runs", runs.len());
}

#[test]
fn tensorboard_images_load_from_their_records() {
    let store = difflab::metrics::load(&[fixtures().join("tb_images")]).unwrap();
    let run = store.runs().next().unwrap();
    for tag in run.image_tags() {
        for (path, format, image) in run.images(tag) {
            let png = format.load_image(path, &image.source).unwrap();
            let decoded = image::load_from_memory(&png).unwrap();
            assert_eq!(
                (decoded.width(), decoded.height()),
                (image.width, image.height),
                "{tag}"
            );
        }
    }
    // The TF2 images plugin: image k of step 20 is tile k at v = 170 (README): red, green, blue, gradient.
    let images = run.images("validation_tf");
    let at_20: Vec<_> = images.iter().filter(|(_, _, i)| i.step == 20).collect();
    assert_eq!(at_20.len(), 4);
    let (path, format, image) = at_20[1];
    let png = format.load_image(path, &image.source).unwrap();
    let rgb = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(rgb.get_pixel(3, 5).0, [0, 170, 0]);
}
