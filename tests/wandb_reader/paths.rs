//! Run discovery helpers and image loading.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::common::run_files;
use difflab::metrics::ImageSource;
use difflab::metrics::wandb::{is_run_file, load_image, run_id, run_key};

#[test]
fn run_file_names() {
    assert!(is_run_file("run-dlabwb01.wandb"));
    assert!(is_run_file("run-a.b.wandb"));
    assert!(!is_run_file("run-.wandb"));
    assert!(!is_run_file("run-x.wandb.tmp"));
    assert!(!is_run_file("offline-run-x.wandb"));
    assert!(!is_run_file("debug.log"));
    assert_eq!(
        run_id(Path::new("a/b/run-dlabwb01.wandb")).as_deref(),
        Some("dlabwb01")
    );
    assert_eq!(run_id(Path::new("a/b/run-.wandb")), None);
    assert_eq!(run_id(Path::new("a/b/")), None);
}

#[test]
fn run_keys() {
    let key = |p: &str| run_key(Path::new(p));
    let log = "offline-run-20261206_223805-dlabwb01/run-dlabwb01.wandb";
    assert_eq!(
        key(&format!("wandb_offline/wandb/{log}")).as_deref(),
        Some("wandb_offline/dlabwb01")
    );
    assert_eq!(
        key(&format!("a/b/wandb/{log}")).as_deref(),
        Some("a/b/dlabwb01")
    );
    // The root is the folder holding wandb/, or wandb/ itself, or the run folder.
    assert_eq!(key(&format!("wandb/{log}")).as_deref(), Some("dlabwb01"));
    assert_eq!(key(log).as_deref(), Some("dlabwb01"));
    assert_eq!(key("run-dlabwb01.wandb").as_deref(), Some("dlabwb01"));
    // A run folder that is not inside a wandb/ folder: the folder holding it.
    assert_eq!(
        key(&format!("experiments/{log}")).as_deref(),
        Some("experiments/dlabwb01")
    );
    assert_eq!(
        key("x/wandb/run-20261206_223805-abc/run-abc.wandb").as_deref(),
        Some("x/abc")
    );
    assert_eq!(key("x/wandb/run-20261206_223805-abc/notes.txt"), None);
    // Both parts of a run resumed offline share the key.
    let parts: Vec<Option<String>> = run_files("dlabwb02")
        .iter()
        .map(|p| run_key(p.strip_prefix(crate::common::data()).unwrap()))
        .collect();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].as_deref(), Some("wandb_offline/dlabwb02"));
    assert_eq!(parts[0], parts[1]);
}

#[test]
fn image_paths_stay_in_the_run() {
    let log = &run_files("dlabwb01")[0];
    for bad in ["../run-dlabwb02.wandb", "files/../../x.png", "/etc/passwd"] {
        let err = load_image(log, &ImageSource::File(PathBuf::from(bad))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{bad}");
    }
    let record = ImageSource::Record {
        offset: 0,
        len: 10,
        index: 0,
    };
    assert_eq!(
        load_image(log, &record).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let missing = ImageSource::File(PathBuf::from("files/media/images/none.png"));
    assert_eq!(
        load_image(log, &missing).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let media = log.parent().unwrap().join("files/media/images");
    let name = std::fs::read_dir(media)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let rel = Path::new("files/media/images").join(name);
    let bytes = load_image(log, &ImageSource::File(rel)).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
}
