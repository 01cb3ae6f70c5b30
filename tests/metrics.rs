//! Reading training logs: event files written by tensorboardX, JSON lines, CSV, corrupt and
//! truncated files (fixtures in tests/data/metrics, made by make_event_files.py).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::metrics::series::Series;
use difflab::metrics::{Format, Store, check_decoder, decode_bytes, decode_chunked, load};
use proptest::prelude::*;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/metrics")
        .join(rel)
}

fn store(rel: &str) -> Store {
    load(&[data(rel)]).expect("fixture loads")
}

fn series(store: &Store, run: &str, tag: &str) -> Series {
    store
        .run(run)
        .unwrap_or_else(|| panic!("no run {run}"))
        .series(tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {run}"))
        .into_owned()
}

const WALL0: f64 = 1_700_000_000.0;

fn expected_loss(step: i64) -> f64 {
    let s = step as f64;
    // The writer stores simple_value as f32.
    (2.0 * (-s / 15.0).exp() + 0.05 * s.sin()) as f32 as f64
}

#[test]
fn tensorboardx_simple_values() {
    let store = store("tb/simple");
    let run = store.run(".").expect("the root is the run");
    assert_eq!(
        run.tags().into_iter().collect::<Vec<_>>(),
        ["train/loss", "train/lr"]
    );
    assert!(run.skipped().is_empty());
    let loss = series(&store, ".", "train/loss");
    assert_eq!(loss.len(), 50);
    for (i, p) in loss.points.iter().enumerate() {
        assert_eq!(p.step, i as i64);
        assert_eq!(p.wall_time, WALL0 + i as f64);
        assert_eq!(p.value, expected_loss(i as i64));
    }
    let lr = series(&store, ".", "train/lr");
    assert_eq!(lr.len(), 50);
    assert!((lr.points[10].value - 1e-3 * 0.95f64.powi(10)).abs() < 1e-9);
}

#[test]
fn tensor_scalars_in_float_double_and_half() {
    let store = store("tb/tensors");
    let run = store.run(".").unwrap();
    assert!(run.skipped().is_empty());
    for (tag, tolerance) in [
        ("tensor/float", 1e-7),
        ("tensor/float_content", 1e-7),
        ("tensor/double", 0.0),
        ("tensor/double_content", 0.0),
        ("tensor/half", 1e-3),
        ("tensor/half_content", 1e-3),
    ] {
        let s = series(&store, ".", tag);
        assert_eq!(s.len(), 20, "{tag}");
        for p in &s.points {
            let want = 1.0 / (p.step as f64 + 1.0) + 0.25;
            assert!(
                (p.value - want).abs() <= tolerance,
                "{tag} at {}: {} vs {want}",
                p.step,
                p.value
            );
            assert_eq!(p.wall_time, WALL0 + p.step as f64);
        }
    }
    // Double precision survives exactly.
    let d = series(&store, ".", "tensor/double");
    assert_eq!(d.points[2].value, 1.0 / 3.0 + 0.25);
}

#[test]
fn corrupt_checksums_are_skipped_and_counted() {
    let store = store("tb/corrupt_crc");
    let run = store.run(".").unwrap();
    let skipped = run.skipped();
    // Record 10 (lr at step 4): bad data checksum. Record 20 (lr at step 9): bad length
    // checksum, passed over by resynchronising on the next header.
    assert_eq!(skipped.bad_records, 2, "{skipped:?}");
    assert!(skipped.skipped_bytes > 0);
    let loss = series(&store, ".", "train/loss");
    assert_eq!(loss.len(), 50);
    let lr = series(&store, ".", "train/lr");
    let steps: Vec<i64> = lr.points.iter().map(|p| p.step).collect();
    assert_eq!(steps.len(), 48);
    assert!(!steps.contains(&4) && !steps.contains(&9));
}

#[test]
fn truncated_event_file_keeps_complete_records() {
    let store = store("tb/truncated");
    let run = store.run(".").unwrap();
    let skipped = run.skipped();
    assert_eq!(skipped.bad_records, 0);
    assert!(skipped.partial_tail_bytes > 0);
    assert_eq!(series(&store, ".", "train/loss").len(), 50);
    assert_eq!(series(&store, ".", "train/lr").len(), 49);
}

#[test]
fn json_lines() {
    let store = store("jsonl");
    let run = store.run(".").unwrap();
    let tags: Vec<&str> = run.tags().into_iter().collect();
    assert_eq!(tags, ["fid", "grad/norm", "loss", "lr"]);
    let skipped = run.skipped();
    assert_eq!(skipped.bad_records, 1, "the line that is not JSON");
    assert!(skipped.partial_tail_bytes > 0, "the half-written last line");
    let loss = series(&store, ".", "loss");
    assert_eq!(loss.len(), 31);
    assert_eq!(loss.points[0].step, 0);
    assert_eq!(loss.points[0].wall_time, WALL0);
    assert!(
        loss.points
            .iter()
            .any(|p| p.value.is_nan() && p.step == 105)
    );
    assert!(run.resumed().is_empty(), "steps never go back here");
    let fid = series(&store, ".", "fid");
    assert_eq!(
        fid.points.iter().map(|p| p.step).collect::<Vec<_>>(),
        [90, 190, 290]
    );
    assert!(fid.points[0].wall_time.is_nan());
    assert_eq!(series(&store, ".", "grad/norm").points[3].value, 1.3);
}

#[test]
fn csv_with_header() {
    let store = store("csv");
    let run = store.run(".").unwrap();
    assert_eq!(run.tags().into_iter().collect::<Vec<_>>(), ["acc", "loss"]);
    assert_eq!(run.skipped().bad_records, 1, "the short row");
    let loss = series(&store, ".", "loss");
    assert_eq!(loss.len(), 7);
    assert_eq!(loss.points[0].step, 0);
    assert_eq!(loss.points[0].wall_time, WALL0);
    assert!(loss.points[4].value.is_nan());
    assert_eq!(loss.points[6].value, 0.7);
}

#[test]
fn run_tree_names_runs_by_relative_path() {
    let store = store("");
    let names: Vec<&str> = store.runs().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "csv",
            "jsonl",
            "tb/corrupt_crc",
            "tb/simple",
            "tb/tensors",
            "tb/truncated"
        ]
    );
}

#[test]
fn several_roots_are_prefixed() {
    let store = load(&[data("csv"), data("jsonl")]).unwrap();
    let names: Vec<String> = store.runs().map(|r| r.name.clone()).collect();
    assert_eq!(names.len(), 2);
    assert_eq!(
        names,
        ["csv", "jsonl"],
        "named below the folder the roots share"
    );
    let store = load(&[
        data("tb/simple"),
        data("tb/simple/events.out.tfevents.1700000000.difflab"),
        data("csv"),
    ])
    .unwrap();
    let names: Vec<String> = store.runs().map(|r| r.name.clone()).collect();
    assert_eq!(
        names,
        ["csv", "tb/simple"],
        "an event file joins its folder's run"
    );
}

#[test]
fn a_single_file_is_a_run() {
    let store = load(&[data("csv/progress.csv")]).unwrap();
    assert!(store.run("progress.csv").is_some());
}

#[test]
fn missing_root_is_an_error() {
    assert!(load(&[data("no-such-dir")]).is_err());
}

#[test]
fn every_cut_of_an_event_file_loads_what_is_complete() {
    let bytes = std::fs::read(data("tb/simple/events.out.tfevents.1700000000.difflab")).unwrap();
    let (all, _) = decode_bytes(Format::TfEvents, &bytes);
    let mut last = 0;
    for cut in 0..=bytes.len() {
        let (got, skipped) = decode_bytes(Format::TfEvents, &bytes[..cut]);
        assert_eq!(got[..], all[..got.len()], "cut at {cut}");
        assert!(got.len() >= last);
        assert_eq!(skipped.bad_records, 0);
        last = got.len();
    }
    assert_eq!(last, all.len());
}

#[test]
fn every_single_byte_corruption_is_survived() {
    let bytes = std::fs::read(data("tb/simple/events.out.tfevents.1700000000.difflab")).unwrap();
    let (all, _) = decode_bytes(Format::TfEvents, &bytes);
    for i in (0..bytes.len()).step_by(3) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x5a;
        let (got, skipped) = decode_bytes(Format::TfEvents, &bad);
        // One record is lost at most (the one hit), and it is counted.
        assert!(
            got.len() + 2 >= all.len(),
            "byte {i}: {} of {}",
            got.len(),
            all.len()
        );
        assert!(!skipped.is_empty(), "byte {i}: corruption went unnoticed");
    }
}

#[test]
fn reading_in_pieces_equals_reading_whole() {
    for (format, rel) in [
        (
            Format::TfEvents,
            "tb/tensors/events.out.tfevents.1700000000.difflab",
        ),
        (
            Format::TfEvents,
            "tb/corrupt_crc/events.out.tfevents.1700000000.difflab",
        ),
        (Format::JsonLines, "jsonl/metrics.jsonl"),
        (Format::Csv, "csv/progress.csv"),
    ] {
        let bytes = std::fs::read(data(rel)).unwrap();
        let (whole, skipped) = decode_bytes(format, &bytes);
        for sizes in [&[1usize][..], &[3, 17], &[4096]] {
            let (pieces, pieces_skipped) = decode_chunked(format, &bytes, sizes);
            assert_eq!(pieces.len(), whole.len(), "{rel} {sizes:?}");
            for (a, b) in pieces.iter().zip(&whole) {
                assert_eq!(a.tag, b.tag);
                assert_eq!(a.point.step, b.point.step);
                assert_eq!(a.point.value.to_bits(), b.point.value.to_bits());
            }
            assert_eq!(pieces_skipped, skipped, "{rel} {sizes:?}");
        }
    }
}

#[test]
fn python_non_finite_tokens() {
    let text = b"{\"step\": 1, \"loss\": NaN, \"a\": Infinity, \"b\": -Infinity, \"s\": \"NaN in a string\"}\n";
    let (s, skipped) = decode_bytes(Format::JsonLines, text);
    assert!(skipped.is_empty());
    assert_eq!(s.len(), 3);
    assert!(s[0].point.value.is_nan());
    assert_eq!(s[1].point.value, f64::INFINITY);
    assert_eq!(s[2].point.value, f64::NEG_INFINITY);
}

#[test]
fn json_lines_step_keys_and_line_numbers() {
    let text = b"{\"loss\": 1}\n\n{\"global_step\": 7, \"loss\": 2}\n{\"iter\": 9.0, \"wall_time\": 5, \"loss\": 3}\n{\"loss\": 4}";
    let (s, skipped) = decode_bytes(Format::JsonLines, text);
    assert!(skipped.is_empty());
    let steps: Vec<i64> = s.iter().map(|s| s.point.step).collect();
    assert_eq!(steps, [0, 7, 9, 4]);
    assert_eq!(s[2].point.wall_time, 5.0);
}

#[test]
fn csv_quoted_fields_and_crlf() {
    let text = b"step,\"lo,ss\",note\r\n1,0.5,\"multi\r\nline\"\r\n2,0.25,x\r\n";
    let (s, skipped) = decode_bytes(Format::Csv, text);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].tag, "lo,ss");
    assert_eq!((s[1].point.step, s[1].point.value), (2, 0.25));
    let (pieces, _) = decode_chunked(Format::Csv, text, &[1]);
    let key = |v: &[difflab::metrics::Scalar]| -> Vec<(String, i64, u64)> {
        v.iter()
            .map(|s| (s.tag.clone(), s.point.step, s.point.value.to_bits()))
            .collect()
    };
    assert_eq!(key(&pieces), key(&s));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn decoders_never_panic_and_agree_in_pieces(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        for format in [Format::JsonLines, Format::Csv, Format::TfEvents, Format::Wandb] {
            check_decoder(format, &data);
        }
        difflab::metrics::mlflow::check_metric_file(&data);
    }

    #[test]
    fn jsonl_of_numbers_round_trips(rows in proptest::collection::vec((0i64..1_000_000, -1e6f64..1e6), 1..50), cut in 1usize..40) {
        let mut text = String::new();
        for (step, v) in &rows {
            text.push_str(&format!("{{\"step\": {step}, \"v\": {v:?}}}\n"));
        }
        let (s, skipped) = decode_chunked(Format::JsonLines, text.as_bytes(), &[cut]);
        prop_assert!(skipped.is_empty());
        prop_assert_eq!(s.len(), rows.len());
        for (got, (step, v)) in s.iter().zip(&rows) {
            prop_assert_eq!(got.point.step, *step);
            prop_assert_eq!(got.point.value, *v);
        }
    }
}

/// Inputs the fuzz targets found failing, kept as regression tests.
#[test]
fn fuzz_regressions() {
    // A row starting with a byte-order mark, read in pieces: resetting the CSV parser between
    // pieces made it strip the mark there, so the pieces gave a point the whole read did not.
    let crash = std::fs::read(data("fuzz/csv-bom-after-reset")).unwrap();
    check_decoder(Format::Csv, &crash);
}

#[test]
fn csv_byte_order_mark_only_at_the_start() {
    let text = b"\xef\xbb\xbfstep,loss\n1,0.5\n\xef\xbb\xbf2,0.25\n";
    let (whole, skipped) = decode_bytes(Format::Csv, text);
    // The second row's step cell is not a number, so its step is its row index.
    let steps: Vec<i64> = whole.iter().map(|s| s.point.step).collect();
    assert_eq!(steps, [1, 1], "{whole:?}");
    assert!(skipped.is_empty());
    for size in 1..8 {
        let (pieces, _) = decode_chunked(Format::Csv, text, &[size]);
        let key = |v: &[difflab::metrics::Scalar]| -> Vec<(String, i64, u64)> {
            v.iter()
                .map(|s| (s.tag.clone(), s.point.step, s.point.value.to_bits()))
                .collect()
        };
        assert_eq!(key(&pieces), key(&whole), "pieces of {size}");
    }
}

#[test]
fn a_resumed_run_keeps_what_tensorboard_keeps_in_one_file_and_across_files() {
    let dir = std::env::temp_dir().join(format!("difflab-resumed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lines = |steps: std::ops::Range<i64>, value: f64| -> String {
        steps
            .map(|s| format!("{{\"step\": {s}, \"loss\": {value}}}\n"))
            .collect()
    };
    // One file: trained to step 99, resumed from the checkpoint at step 50.
    std::fs::write(
        dir.join("a.jsonl"),
        lines(0..100, 1.0) + &lines(50..80, 2.0),
    )
    .unwrap();
    let store = load(&[&dir]).unwrap();
    let run = store.run(".").unwrap();
    let loss = run.series("loss").unwrap();
    assert_eq!(loss.len(), 80);
    assert!(loss.points[..50].iter().all(|p| p.value == 1.0));
    assert!(loss.points[50..].iter().all(|p| p.value == 2.0));
    let resumed = run.resumed();
    assert_eq!(
        (resumed.times, resumed.dropped, resumed.to_step),
        (1, 50, Some(50))
    );
    // The resumed run writes a second file instead: read in file order, the same points remain.
    std::fs::write(dir.join("a.jsonl"), lines(0..100, 1.0)).unwrap();
    std::fs::write(dir.join("b.jsonl"), lines(50..80, 2.0)).unwrap();
    let store = load(&[&dir]).unwrap();
    let run = store.run(".").unwrap();
    let pairs =
        |s: &Series| -> Vec<(i64, f64)> { s.points.iter().map(|p| (p.step, p.value)).collect() };
    assert_eq!(pairs(&run.series("loss").unwrap()), pairs(&loss));
    assert_eq!(run.resumed().dropped, 50);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_difflab"))
        .arg("metrics")
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(".: the step went back 1 time(s) (last to step 50)")
            && text.contains("50 earlier point(s)"),
        "{text}"
    );
}

/// An event file holding `scalar` at step 0, or a run's hyperparameters as torch's `add_hparams` writes them.
fn event_file(scalar: Option<(&str, f32)>, hparams: &[(&str, f64)]) -> Vec<u8> {
    use difflab::metrics::tfevents::proto;
    use difflab::metrics::tfevents::record::encode_record;
    use prost::Message;
    let mut value = proto::SummaryValue::default();
    if let Some((tag, v)) = scalar {
        value.tag = tag.into();
        value.simple_value = Some(v);
    } else {
        let info = proto::SessionStartInfo {
            hparams: hparams
                .iter()
                .map(|(k, v)| {
                    let v = proto::ProtoValue {
                        number_value: Some(*v),
                        ..Default::default()
                    };
                    (k.to_string(), v)
                })
                .collect(),
        };
        let data = proto::HParamsPluginData {
            session_start_info: Some(info),
        };
        value.tag = "_hparams_/session_start_info".into();
        value.metadata = Some(proto::SummaryMetadata {
            plugin_data: Some(proto::PluginData {
                plugin_name: "hparams".into(),
                content: data.encode_to_vec(),
            }),
        });
    }
    let event = proto::Event {
        wall_time: 1.0,
        summary: Some(proto::Summary { value: vec![value] }),
        ..Default::default()
    };
    let mut buf = Vec::new();
    encode_record(&event.encode_to_vec(), &mut buf);
    buf
}

/// accelerate's TensorBoard tracker logs a run's config through torch's `add_hparams`, which writes it into
/// a sub-folder named by the time: it is the run's config, not a run of its own, and runs differ by it.
#[test]
fn hparams_in_a_timestamp_folder_are_the_runs_config() {
    let dir = tempfile::tempdir().unwrap();
    for (run, lr) in [("a", 1e-4), ("b", 5e-5)] {
        let folder = dir.path().join(run);
        std::fs::create_dir_all(folder.join("1700000000.123456")).unwrap();
        std::fs::write(
            folder.join("events.out.tfevents.1.host"),
            event_file(Some(("loss", 0.5)), &[]),
        )
        .unwrap();
        let hparams = event_file(None, &[("learning_rate", lr), ("train_batch_size", 16.0)]);
        std::fs::write(
            folder.join("1700000000.123456/events.out.tfevents.2.host"),
            hparams,
        )
        .unwrap();
    }
    let store = difflab::metrics::load(&[dir.path()]).unwrap();
    let (runs, differing) = difflab::metrics::diff::differing_config(&store);
    assert_eq!(runs, ["a", "b"]);
    let keys: Vec<&str> = differing.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["learning_rate"]);
    assert_eq!(
        differing[0].values,
        [Some(serde_json::json!(1e-4)), Some(serde_json::json!(5e-5))]
    );
}
