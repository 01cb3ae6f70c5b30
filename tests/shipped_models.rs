//! The shipped models through the engine: the U-Net and the feature network give what PyTorch gave
//! (checks saved by models/train.py), and DPM++ 2M at 20 steps scores a far better FID than noise and
//! than 2 steps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::engine::{Denoiser, OnnxDenoiser, OnnxFeatures, OnnxOptions, ProviderOptions};
use difflab::lab::denoise;
use difflab::quality::{FeatureStats, ReferenceStats, frechet_distance};
use difflab::sampler::{SamplerConfig, SeededNoise, config::read_json_object};
use serde_json::{Map, Value};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn cpu() -> OnnxOptions {
    OnnxOptions {
        providers: ProviderOptions::cpu(),
        ..OnnxOptions::default()
    }
}

fn check(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(models().join("checks").join(name)).unwrap())
        .unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_unet_gives_what_pytorch_gave() {
    let c = check("unet_check.json");
    let mut unet = OnnxDenoiser::load(models().join("mnist16-unet.onnx"), &cpu()).unwrap();
    let sample = floats(&c["sample"]);
    let t: Vec<f64> = floats(&c["timestep"]).iter().map(|&t| t as f64).collect();
    let mut out = vec![0.0; sample.len()];
    unet.predict(&sample, &t, &mut out).unwrap();
    let d = max_abs_diff(&out, &floats(&c["out_sample"]));
    println!("U-Net: max |ONNX Runtime - PyTorch| = {d:.2e}");
    assert!(d <= 1e-4, "{d}");
}

#[test]
fn the_feature_network_gives_what_pytorch_gave() {
    let c = check("features_check.json");
    let mut net = OnnxFeatures::load(models().join("mnist16-features.onnx"), &cpu(), None).unwrap();
    let images = floats(&c["image"]);
    let batch = c["shape"][0].as_u64().unwrap() as usize;
    let (features, dim) = net.features(&images, batch, [1, 16, 16]).unwrap();
    assert_eq!(features.len(), batch * dim);
    assert_eq!(dim, c["features_shape"][1].as_u64().unwrap() as usize);
    let d = max_abs_diff(&features, &floats(&c["features"]));
    println!("features: max |ONNX Runtime - PyTorch| = {d:.2e}");
    assert!(d <= 1e-4, "{d}");
}

#[test]
fn the_32px_feature_network_sees_what_the_16px_one_sees() {
    // One held-out digit of each class padded to 32×32, grey in three channels: features and logits as the
    // export script computed them, and each digit classified as its label.
    let c = check("features32_check.json");
    let mut net = OnnxFeatures::load(models().join("mnist32-features.onnx"), &cpu(), None).unwrap();
    assert_eq!(net.input_shape(), Some([3, 32, 32]));
    let grey = floats(&c["image_grey"]);
    let images: Vec<f32> = grey
        .chunks(32 * 32)
        .flat_map(|g| g.iter().chain(g).chain(g).copied().collect::<Vec<_>>())
        .collect();
    let rows = net.run(&images, 10, [3, 32, 32]).unwrap();
    let d = max_abs_diff(&rows.features, &floats(&c["features"]));
    let (logits, classes) = rows.logits.unwrap();
    let dl = max_abs_diff(&logits, &floats(&c["logits"]));
    println!("32px features: max |diff| {d:.2e}, logits {dl:.2e}");
    assert!(d <= 1e-4 && dl <= 1e-4, "{d} {dl}");
    let labels: Vec<usize> = c["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(
        difflab::quality::predicted_classes(&logits, classes),
        labels
    );
    // Its reference is the 16px network's: the same features on the same held-out digits.
    let reference = ReferenceStats::load(&models().join("mnist16-reference.npz")).unwrap();
    assert_eq!(rows.dim, reference.dim);
    assert!(c["max_abs_diff_vs_16"].as_f64().unwrap() < 1e-4);
}

/// FID of 256 samples of `sampler` at `steps` (None: the initial noise itself).
fn fid(sampler: Option<(&str, usize)>) -> f64 {
    let n = 256;
    let base = read_json_object(&models().join("scheduler_config.json")).unwrap();
    let seeds = SeededNoise::new((0..n as u64).collect());
    let mut x = seeds.initial(256);
    if let Some((name, steps)) = sampler {
        let mut unet = OnnxDenoiser::load(models().join("mnist16-unet.onnx"), &cpu()).unwrap();
        let resolved = SamplerConfig::resolve(name, Some(&base), &Map::new()).unwrap();
        let mut s = resolved.config.build();
        s.set_steps(steps).unwrap();
        let mut noise = seeds.clone();
        denoise(&mut *s, &mut unet, &mut x, n, &mut noise, |_, _| true).unwrap();
    }
    let mut net = OnnxFeatures::load(models().join("mnist16-features.onnx"), &cpu(), None).unwrap();
    let (features, dim) = net.features(&x, n, [1, 16, 16]).unwrap();
    let reference = ReferenceStats::load(&models().join("mnist16-reference.npz")).unwrap();
    assert_eq!(dim, reference.dim);
    frechet_distance(
        &FeatureStats::from_features(&features, dim),
        &reference.stats,
    )
}

#[test]
fn dpm_solver_2m_at_20_steps_is_far_better_than_noise_and_2_steps() {
    let good = fid(Some(("dpm++2m", 20)));
    let rough = fid(Some(("dpm++2m", 2)));
    let noise = fid(None);
    println!(
        "FID of 256 samples: DPM++ 2M 20 steps {good:.1}, 2 steps {rough:.1}, noise {noise:.1}"
    );
    assert!(good * 2.0 < rough, "20 steps {good} vs 2 steps {rough}");
    assert!(good * 10.0 < noise, "20 steps {good} vs noise {noise}");
}
