//! The web UIs' samplers, schedules and guidance methods against their references (k-diffusion, A1111 and
//! ComfyUI): the recorded cases of tests/data/goldens/samplers3 (README there), or of the folder
//! `DIFFLAB_GOLDENS3` names.
//!
//! Schedules: every `kind = "schedule"` case, by ComfyUI's scheduler name and parameters, on ComfyUI's SD 1.x
//! sigma table, within each case's suggested tolerance (relative to max(1, max |expected|)).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::sampler::sigma_schedule::{ModelSigmas, ScheduleParams, SigmaSchedule};
use serde_json::Value;

fn folder() -> PathBuf {
    match std::env::var_os("DIFFLAB_GOLDENS3") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/goldens/samplers3"),
    }
}

/// Every case of `kind` in the folder, by file name.
fn cases(kind: &str) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(&std::fs::read_to_string(p).unwrap()).ok())
        .filter(|c| c["kind"] == kind)
        .collect()
}

/// ComfyUI's SD 1.x sigma table from tables.json.
fn sd1_table() -> Vec<f32> {
    let text = std::fs::read_to_string(folder().join("tables.json")).unwrap();
    let tables: Value = serde_json::from_str(&text).unwrap();
    tables["model_sampling_sd1"]["sigmas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn number(params: &Value, key: &str) -> Option<f64> {
    params.get(key).and_then(Value::as_f64)
}

/// The schedule and parameters a case names; the `_node` cases are ComfyUI's nodes with explicit bounds.
fn schedule_of(case: &Value) -> (SigmaSchedule, ScheduleParams) {
    let name = case["scheduler"].as_str().unwrap();
    let schedule = SigmaSchedule::from_name(name.trim_end_matches("_node"))
        .unwrap_or_else(|| panic!("{}: no schedule {name:?}", case["name"]));
    let p = &case["params"];
    let params = ScheduleParams {
        sigma_min: number(p, "sigma_min"),
        sigma_max: number(p, "sigma_max"),
        rho: number(p, "rho"),
        alpha: number(p, "alpha"),
        beta: number(p, "beta"),
        mu: number(p, "mu"),
        beta_d: number(p, "beta_d"),
        beta_min: number(p, "beta_min"),
        eps_s: number(p, "eps_s"),
        model_type: p
            .get("model_type")
            .and_then(Value::as_str)
            .map(str::to_string),
        coeff: number(p, "coeff"),
        denoise: case["denoise"].as_f64(),
    };
    (schedule, params)
}

#[test]
fn comfyuis_sd1_sigma_table_is_rebuilt_exactly() {
    let model = ModelSigmas::sd1();
    let table = sd1_table();
    assert_eq!(table.len(), 1000);
    assert_eq!(model.table(), &table[..]);
    assert_eq!(model.sigma_min(), table[0]);
    assert_eq!(model.sigma_max(), table[999]);
    // percent_to_sigma(0.2) and (0.8), as the README prints them: σ at a fractional timestep.
    let percent_to_sigma = |p: f64| model.sigma(((1.0 - p) * 999.0) as f32);
    assert!((f64::from(percent_to_sigma(0.2)) - 5.092_408_2).abs() < 1e-6);
    assert!((f64::from(percent_to_sigma(0.8)) - 0.571_188_9).abs() < 1e-6);
}

#[test]
fn every_schedule_case_equals_comfyui() {
    let model = ModelSigmas::sd1();
    let cases = cases("schedule");
    let mut checked = 0;
    for case in &cases {
        let (schedule, params) = schedule_of(case);
        let steps = case["steps"].as_u64().unwrap() as usize;
        let got = schedule.sigmas(steps, &model, &params).unwrap();
        let want: Vec<f64> = case["sigmas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let name = case["name"].as_str().unwrap();
        assert_eq!(got.len(), want.len(), "{name}: {got:?}");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (f64::from(g) - w).abs())
            .fold(0.0, f64::max);
        let tolerance = case["suggested_tolerance"]["rel"].as_f64().unwrap();
        assert!(
            diff / scale <= tolerance,
            "{name}: max |diff| {diff:.3e} (relative {:.3e} > {tolerance:e})\n got  {got:?}\n want {want:?}",
            diff / scale
        );
        checked += 1;
    }
    println!("checked {checked} of {} schedule cases", cases.len());
    assert!(checked > 0, "no schedule cases in {}", folder().display());
}
