//! FID against scipy's sqrtm-based value on a stored case, KID against a numpy MMD², and the
//! reference-statistics loader on good and bad files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use difflab::quality::{FeatureStats, ReferenceStats, frechet_distance, kernel_inception_distance};
use serde_json::Value;

fn case() -> (Vec<f32>, Vec<f32>, usize, Value) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/quality/fid_case.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let floats = |k: &str| -> Vec<f32> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    (
        floats("a"),
        floats("b"),
        v["dim"].as_u64().unwrap() as usize,
        v,
    )
}

#[test]
fn fid_matches_scipy() {
    let (a, b, dim, v) = case();
    let fid = frechet_distance(
        &FeatureStats::from_features(&a, dim),
        &FeatureStats::from_features(&b, dim),
    );
    let want = v["fid_scipy"].as_f64().unwrap();
    println!("FID {fid:.9} scipy {want:.9}");
    assert!(
        (fid - want).abs() < 1e-6 * want.abs().max(1.0),
        "{fid} vs {want}"
    );
}

#[test]
fn kid_on_whole_sets_matches_numpy() {
    let (a, b, dim, v) = case();
    // One subset holding every vector is the plain unbiased MMD² (it is permutation invariant).
    let kid = kernel_inception_distance(&a[..150 * dim], &b, dim, 1, 150, 0);
    let want = v["mmd2_first_150"].as_f64().unwrap();
    assert!(
        (kid.mean - want).abs() < 1e-6 * want.abs().max(1.0),
        "{} vs {want}",
        kid.mean
    );
    assert_eq!(kid.std, 0.0);
    // Subsets: same set against itself is near zero, a different set is clearly not.
    let same = kernel_inception_distance(&a, &a, dim, 20, 50, 1);
    let other = kernel_inception_distance(&a, &b, dim, 20, 50, 1);
    assert!(same.mean.abs() < 3.0 * same.std.max(1e-3), "{same:?}");
    assert!(
        other.mean > 10.0 * same.mean.abs().max(other.std / 10.0),
        "{other:?} vs {same:?}"
    );
}

#[test]
fn reference_loader_names_the_problem() {
    let err = ReferenceStats::load(std::path::Path::new("no/such.npz")).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot open reference statistics no/such.npz"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("difflab-ref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.npz");
    std::fs::write(&bad, b"not a zip").unwrap();
    let err = ReferenceStats::load(&bad).unwrap_err();
    assert!(err.to_string().contains("bad.npz"), "{err}");
}
