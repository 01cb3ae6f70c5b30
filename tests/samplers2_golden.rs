//! The k-diffusion style, flow-matching and other samplers against diffusers 0.42.1
//! (tests/data/goldens/samplers2 and flow, or the folders named by DIFFLAB_GOLDENS2 and DIFFLAB_GOLDENS_FLOW): timesteps, sigmas, init_noise_sigma, model input scales,
//! per-call samples and the final sample, each case replayed with its analytic model and recorded noise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use difflab::sampler::{InjectedNoise, SamplerConfig, Scheduler, registry};
use serde_json::Value;

const TOLERANCE: f64 = 1e-5;

/// The goldens' model, in f64 as recorded: `0.5·x·cos(t/1000) + 0.1·sin(x + t/500)`.
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
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect()
}

/// Whether `got` matches `want` to TOLERANCE relative to max(1, max |want|), as the goldens' README
/// measures, plus what f32 storage of the sample allows: difflab's samples are f32, as in a real
/// pipeline, while these goldens keep f64 samples, so each of `calls` stores may round by half an ulp
/// of the largest |x| of the run (`peak`; 2e4 for the cosine schedule's sigma_max).
fn matches(got: &[f32], want: &[f64], calls: usize, peak: f64) -> Result<(), String> {
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max);
    let allowed = TOLERANCE * scale + calls as f64 * peak * f64::from(f32::EPSILON) / 2.0;
    if diff <= allowed {
        Ok(())
    } else {
        Err(format!(
            "differs by {:.3e} relative (allowed {:.3e})",
            diff / scale,
            allowed / scale
        ))
    }
}

/// Values compared one by one, relative to each but never below `floor` (NaN, stored as null,
/// matches anything).
fn close_each(got: &[f64], want: &[f64], floor: f64) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(&g, &w)| w.is_nan() || (g - w).abs() <= TOLERANCE * w.abs().max(floor))
}

fn scheduler_for(case: &Value, file: &str) -> Result<Box<dyn Scheduler>, String> {
    let class = case["class"].as_str().ok_or("no class")?;
    let mut config = case["config"].as_object().ok_or("no config")?.clone();
    config.insert("_class_name".into(), Value::String(class.into()));
    // step() and set_timesteps() arguments (s_churn, mu, sigmas) are settings in difflab.
    for kwargs in ["step_kwargs", "set_timesteps_kwargs"] {
        if let Some(kwargs) = case[kwargs].as_object() {
            config.extend(kwargs.clone());
        }
    }
    let resolved = SamplerConfig::from_json_str(&Value::Object(config).to_string(), file)
        .map_err(|e| format!("config rejected: {e}"))?;
    let mut scheduler = resolved.config.build();
    let steps = case["num_inference_steps"].as_u64().ok_or("no steps")? as usize;
    scheduler
        .set_steps(steps)
        .map_err(|e| format!("set_steps: {e}"))?;
    Ok(scheduler)
}

/// The schedule: timesteps, sigmas, init_noise_sigma.
fn check_schedule(s: &dyn Scheduler, case: &Value) -> Result<(), String> {
    let want_t = floats(&case["timesteps"]);
    // Timesteps live on the 0..N training scale: the last midpoints of DPM2 a are ~1e-6 there.
    if !close_each(s.timesteps(), &want_t, 1.0) {
        return Err(format!(
            "timesteps differ:\n  got  {:?}\n  want {want_t:?}",
            s.timesteps()
        ));
    }
    if let Some(want) = case.get("sigmas").filter(|v| !v.is_null()) {
        let want = floats(want);
        let got: Vec<f64> = s
            .sigmas()
            .ok_or("no sigmas")?
            .iter()
            .map(|&v| v as f64)
            .collect();
        if !close_each(&got, &want, 1e-6) {
            return Err(format!("sigmas differ:\n  got  {got:?}\n  want {want:?}"));
        }
    }
    let want = case["init_noise_sigma"]
        .as_f64()
        .ok_or("no init_noise_sigma")?;
    if !close_each(&[s.init_noise_sigma() as f64], &[want], 1e-6) {
        return Err(format!(
            "init_noise_sigma {} differs from {want}",
            s.init_noise_sigma()
        ));
    }
    Ok(())
}

/// Replays one case; the final sample's relative difference, or what differs.
fn check_case(dir: &Path, file: &str) -> Result<f64, String> {
    let text = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("cannot read: {e}"))?;
    let case: Value = serde_json::from_str(&text).map_err(|e| format!("bad JSON: {e}"))?;
    let mut s = scheduler_for(&case, file)?;
    check_schedule(s.as_ref(), &case)?;
    let batch = floats(&case["shape"])[0] as usize;
    let sigma = s.init_noise_sigma();
    let mut x: Vec<f32> = floats(&case["initial_sample"])
        .iter()
        .map(|&v| (v * sigma as f64) as f32)
        .collect();
    let mut peak = x.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let per_call: Vec<Option<Vec<f32>>> = match case.get("noise") {
        Some(Value::Array(calls)) => calls
            .iter()
            .map(|c| (!c.is_null()).then(|| floats(c).iter().map(|&v| v as f32).collect()))
            .collect(),
        _ => Vec::new(),
    };
    let mut noise = InjectedNoise::new(per_call);
    let scales = floats(&case["model_input_scales"]);
    let records = case.get("steps").and_then(Value::as_array);
    let (mut out, mut x0, mut input) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; x.len()]);
    let calls = s.timesteps().len();
    if calls != scales.len() {
        return Err(format!(
            "{calls} model calls, diffusers made {}",
            scales.len()
        ));
    }
    for (i, &scale) in scales.iter().enumerate() {
        let t = s.timesteps()[i];
        let divisor = s.model_input_divisor();
        if !close_each(&[1.0 / divisor as f64], &[scale], 1e-6) {
            return Err(format!(
                "call {i}: input scale {} differs from {scale}",
                1.0 / divisor
            ));
        }
        input
            .iter_mut()
            .zip(&x)
            .for_each(|(v, &x)| *v = x / divisor);
        golden_model(&input, t, &mut out);
        s.step(&out, &mut x, &mut x0, batch, &mut noise)
            .map_err(|e| format!("call {i}: {e}"))?;
        peak = x.iter().fold(peak, |m, &v| m.max(v.abs() as f64));
        if let Some(record) = records.and_then(|r| r.get(i)) {
            matches(&x, &floats(&record["prev_sample"]), i + 1, peak)
                .map_err(|e| format!("call {i} (t={t}): {e}"))?;
        }
    }
    if !noise.missing.is_empty() {
        return Err(format!(
            "noise asked for at calls {:?} where diffusers drew none",
            noise.missing
        ));
    }
    let want = floats(&case["final_sample"]);
    matches(&x, &want, calls, peak).map_err(|e| format!("final sample {e}"))?;
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let d = x
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max);
    Ok(d / scale)
}

#[test]
fn implemented_classes_match_diffusers() {
    let dir = std::env::var_os("DIFFLAB_GOLDENS2")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/goldens/samplers2")
        });
    check_folder(&dir, false);
}

/// The flow-matching samplers against diffusers 0.42.1 (tests/data/goldens/flow, or the folder named by
/// DIFFLAB_GOLDENS_FLOW): FlowMatchEuler and FlowMatchHeun, DPM-Solver++ and UniPC with flow sigmas.
#[test]
fn flow_samplers_match_diffusers() {
    let dir = std::env::var_os("DIFFLAB_GOLDENS_FLOW")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/goldens/flow"));
    check_folder(&dir, true);
}

/// DEIS with flow sigmas, which the public flow set leaves out (tests/data/goldens/flow_deis, written by its
/// gen_deis.py through the flow set's generator).
#[test]
fn deis_with_flow_sigmas_matches_diffusers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/goldens/flow_deis");
    check_folder(&dir, true);
}

/// Karras, exponential and beta sigmas at 50 to 500 steps, where the rounded timesteps repeat but the sigmas
/// do not (tests/data/goldens/long, written by samplers2/gen2.py from its spec.json).
#[test]
fn long_sigma_schedules_match_diffusers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/goldens/long");
    check_folder(&dir, true);
}

/// Replays every case of the folder's index.json; `all` also fails on a class difflab does not implement.
fn check_folder(dir: &Path, all: bool) {
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("index.json"))
            .unwrap_or_else(|e| panic!("cannot read {}/index.json: {e}", dir.display())),
    )
    .expect("index.json is JSON");
    let cases = index["cases"].as_array().expect("index.json lists cases");
    assert!(!cases.is_empty(), "index.json lists no cases");
    let (mut checked, mut failures) = (0, Vec::new());
    let mut per_class: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut missing: BTreeMap<&str, usize> = BTreeMap::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let file = case["file"].as_str().unwrap_or(name);
        let class = case["class"].as_str().unwrap_or("?");
        if registry::family(class).is_none() {
            *missing.entry(class).or_default() += 1;
            continue;
        }
        let entry = per_class.entry(class).or_default();
        entry.1 += 1;
        match check_case(dir, file) {
            Ok(d) => {
                checked += 1;
                entry.0 += 1;
                println!("ok   {name}  (final {d:.1e})");
            }
            Err(why) => failures.push(format!("FAIL {name}: {why}")),
        }
    }
    for (class, (ok, all)) in &per_class {
        println!("{class}: {ok} of {all}");
    }
    for (class, n) in &missing {
        println!("{class}: not implemented ({n} cases)");
    }
    println!(
        "checked {checked} of {} cases in {}",
        cases.len(),
        dir.display()
    );
    assert!(
        !all || missing.is_empty(),
        "classes without an implementation: {missing:?}"
    );
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
