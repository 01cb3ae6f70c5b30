//! Every golden case recorded from diffusers (tests/data/schedulers, or the folder named by
//! DIFFLAB_GOLDENS) must give the same timesteps, sigmas, solver orders, noise draws and final sample.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::sampler::{InjectedNoise, SamplerConfig};
use serde_json::Value;

/// The model the goldens were recorded with, evaluated in f64 as diffusers did.
fn golden_model(x: &[f32], t: f64, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        let x = x as f64;
        *o = ((0.5 * x) * (t / 1000.0).cos() + 0.1 * (x + t / 500.0).sin()) as f32;
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn max_rel_diff(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Runs one case; returns a description of each mismatch.
fn check_case(dir: &Path, file: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("cannot read: {e}"))?;
    let case: Value = serde_json::from_str(&text).map_err(|e| format!("bad JSON: {e}"))?;
    let class = case["class"].as_str().ok_or("no class")?;
    let mut config = case["config"].as_object().ok_or("no config")?.clone();
    config.insert("_class_name".into(), Value::String(class.into()));
    if let Some(kwargs) = case["step_kwargs"].as_object() {
        config.extend(kwargs.clone());
    }
    let resolved = SamplerConfig::from_json_str(&Value::Object(config).to_string(), file)
        .map_err(|e| format!("config rejected: {e}"))?;
    let steps = case["num_inference_steps"].as_u64().ok_or("no steps")? as usize;
    let mut scheduler = resolved.config.build();
    scheduler
        .set_steps(steps)
        .map_err(|e| format!("set_steps: {e}"))?;

    let want_t: Vec<f64> = floats(&case["timesteps"]);
    if scheduler.timesteps() != want_t.as_slice() {
        return Err(format!(
            "timesteps differ:\n  got  {:?}\n  want {:?}",
            scheduler.timesteps(),
            want_t
        ));
    }
    if let Some(want_sigmas) = case.get("sigmas").filter(|v| !v.is_null()) {
        let want = floats(want_sigmas);
        // Sigmas are float32 in diffusers; zero-SNR tables differ from torch's by a few ulps.
        let got = scheduler.sigmas().ok_or("no sigmas")?;
        let bad = got.len() != want.len()
            || got
                .iter()
                .zip(&want)
                .any(|(&g, &w)| (g as f64 - w).abs() > 1e-5 * w.abs().max(1e-6));
        if bad {
            return Err(format!("sigmas differ:\n  got  {got:?}\n  want {want:?}"));
        }
    }
    if let Some(orders) = case
        .get("solver_order_used_per_step")
        .filter(|v| !v.is_null())
    {
        let want: Vec<usize> = floats(orders).iter().map(|&o| o as usize).collect();
        let got: Vec<usize> = (0..steps).map(|i| scheduler.order_at(i)).collect();
        if got != want {
            return Err(format!(
                "solver orders differ:\n  got  {got:?}\n  want {want:?}"
            ));
        }
    }

    let shape: Vec<usize> = floats(&case["shape"]).iter().map(|&d| d as usize).collect();
    let batch = shape[0];
    let mut x: Vec<f32> = floats(&case["initial_sample"])
        .iter()
        .map(|&v| v as f32)
        .collect();
    let per_step: Vec<Option<Vec<f32>>> = match case.get("noise") {
        Some(Value::Array(steps)) => steps
            .iter()
            .map(|s| (!s.is_null()).then(|| floats(s).iter().map(|&v| v as f32).collect()))
            .collect(),
        _ => Vec::new(),
    };
    let expected_draws: Vec<usize> = (0..per_step.len())
        .filter(|&i| per_step[i].is_some())
        .collect();
    let mut noise = InjectedNoise::new(per_step);
    let mut out = vec![0.0f32; x.len()];
    let mut x0 = vec![0.0f32; x.len()];
    let records = case.get("steps").and_then(Value::as_array);
    for i in 0..steps {
        let t = scheduler.timesteps()[i];
        golden_model(&x, t, &mut out);
        scheduler
            .step(&out, &mut x, &mut x0, batch, &mut noise)
            .map_err(|e| format!("step {i}: {e}"))?;
        if let Some(record) = records.and_then(|r| r.get(i)) {
            let d = max_rel_diff(&x, &floats(&record["prev_sample"]));
            if d > 1e-3 {
                return Err(format!("step {i} (t={t}) already differs by {d:.2e}"));
            }
        }
    }
    if noise.drawn != expected_draws {
        return Err(format!(
            "noise drawn at steps {:?}, diffusers drew at {:?}",
            noise.drawn, expected_draws
        ));
    }
    let tol = {
        let cosine = case["config"]["beta_schedule"] == "squaredcos_cap_v2";
        let ddpm_1000 = class == "DDPMScheduler" && steps == 1000;
        if cosine || ddpm_1000 { 1e-3 } else { 1e-4 }
    };
    let d = max_rel_diff(&x, &floats(&case["final_sample"]));
    if d.is_nan() || d > tol {
        return Err(format!(
            "final sample differs by {d:.3e} relative (tolerance {tol:.0e})"
        ));
    }
    Ok(format!("{d:.1e}"))
}

#[test]
fn every_golden_case_matches_diffusers() {
    let dir = std::env::var_os("DIFFLAB_GOLDENS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/schedulers"));
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("index.json"))
            .unwrap_or_else(|e| panic!("cannot read {}/index.json: {e}", dir.display())),
    )
    .expect("index.json is JSON");
    let cases = index["cases"].as_array().expect("index.json lists cases");
    assert!(!cases.is_empty(), "index.json lists no cases");
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let file = case["file"].as_str().unwrap_or(name);
        match check_case(&dir, file) {
            Ok(diff) => {
                checked += 1;
                println!("ok   {name}  (max rel diff {diff})");
            }
            Err(why) => failures.push(format!("FAIL {name}: {why}")),
        }
    }
    println!(
        "checked {checked} of {} golden cases in {}",
        cases.len(),
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(checked, cases.len(), "every listed case must be checked");
}
