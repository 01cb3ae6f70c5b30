//! `noise = "torch"`: difflab's initial noise for seed k equals `torch.randn(shape,
//! generator=torch.Generator("cpu").manual_seed(k))`, checked against values recorded from PyTorch
//! (tests/data/torch_noise/make.py).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use difflab::sampler::torch_noise::torch_randn;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn initial_noise_equals_torch_randn_for_every_recorded_seed_and_shape() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/torch_noise/randn.json"
    );
    let data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = data["cases"].as_array().unwrap();
    let mut worst = 0.0f64;
    for case in cases {
        let seed = case["seed"].as_u64().unwrap();
        let n = case["n"].as_u64().unwrap() as usize;
        let ours = torch_randn(seed, n).expect("at least 16 values");
        let (first, last) = (floats(&case["first"]), floats(&case["last"]));
        let pairs = ours
            .iter()
            .zip(&first)
            .chain(ours[n - last.len()..].iter().zip(&last));
        for (&a, &b) in pairs {
            // PyTorch's vectorised log/sin/cos differ from libm's in the last bits.
            let d = (f64::from(a) - b).abs();
            worst = worst.max(d);
            assert!(d <= 1e-5 * b.abs().max(1.0), "seed {seed}: {a} vs {b}");
        }
        let sum: f64 = ours.iter().map(|&v| f64::from(v)).sum();
        assert!(
            (sum - case["sum"].as_f64().unwrap()).abs() < 1e-3,
            "seed {seed} sum"
        );
    }
    println!(
        "{} torch.randn cases, max |difflab - torch| = {worst:.2e}",
        cases.len()
    );
}
