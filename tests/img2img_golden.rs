//! Every recorded img2img start (tests/data/goldens/img2img, made by its gen.py from diffusers): the call the
//! run begins at for the strength, the timesteps left, the noised sample (`add_noise` / `scale_noise`) and the
//! final sample of the loop from there, and of the same loop inpainting half the sample as diffusers does with a
//! plain U-Net.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::path::Path;

use difflab::sampler::{InjectedNoise, SamplerConfig, begin_call};
use serde_json::Value;

/// The model the goldens were recorded with, in f64 as diffusers ran it.
fn golden_model(x: &[f32], t: f64, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        let x = x as f64;
        *o = ((0.5 * x) * (t / 1000.0).cos() + 0.1 * (x + t / 500.0).sin()) as f32;
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn max_rel_diff(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(1.0f64, |m, &v| m.max(v.abs() as f64));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).abs())
        .fold(0.0, f64::max)
        / scale
}

fn check_case(case: &Value) -> Result<String, String> {
    let class = case["class"].as_str().ok_or("no class")?;
    let mut config = case["config"].as_object().ok_or("no config")?.clone();
    config.insert("_class_name".into(), Value::String(class.into()));
    config.extend(case["step_kwargs"].as_object().cloned().unwrap_or_default());
    let resolved = SamplerConfig::from_json_str(&Value::Object(config).to_string(), "golden")
        .map_err(|e| format!("config rejected: {e}"))?;
    let steps = case["num_inference_steps"].as_u64().ok_or("no steps")? as usize;
    let mut scheduler = resolved.config.build();
    scheduler
        .set_steps(steps)
        .map_err(|e| format!("set_steps: {e}"))?;
    let all: Vec<f32> = scheduler.timesteps().iter().map(|&t| t as f32).collect();
    let want_all = floats(&case["all_timesteps"]);
    if max_rel_diff(&all, &want_all) > 1e-6 || all.len() != want_all.len() {
        return Err(format!("timesteps differ: {all:?} vs {want_all:?}"));
    }
    let strength = case["strength"].as_f64().ok_or("no strength")?;
    let begin = begin_call(steps, strength, scheduler.calls_per_step()).ok_or("no step runs")?;
    if begin as u64 != case["begin"].as_u64().ok_or("no begin")? {
        return Err(format!(
            "begins at call {begin}, diffusers at {}",
            case["begin"]
        ));
    }
    let noising = scheduler
        .start_at(begin)
        .ok_or("the sampler cannot start part-way")?;
    let (clean, noise) = (floats(&case["clean"]), floats(&case["noise"]));
    let mut x = vec![0.0; clean.len()];
    noising.apply(&clean, &noise, &mut x);
    let d = max_rel_diff(&x, &floats(&case["noised"]));
    if d > 1e-6 {
        return Err(format!("the noised sample differs by {d:.2e}"));
    }
    let per_call: Vec<Option<Vec<f32>>> = case["step_noise"]
        .as_array()
        .ok_or("no step noise")?
        .iter()
        .map(|n| (!n.is_null()).then(|| floats(n)))
        .collect();
    let mut injected = InjectedNoise::new(per_call);
    let batch = case["shape"][0].as_u64().ok_or("no shape")? as usize;
    let (mut out, mut x0, mut input) = (vec![0.0; x.len()], vec![0.0; x.len()], Vec::new());
    for call in begin..scheduler.timesteps().len() {
        let t = scheduler.timesteps()[call];
        input.clear();
        let divisor = scheduler.model_input_divisor();
        input.extend(x.iter().map(|&v| v / divisor));
        golden_model(&input, t, &mut out);
        scheduler
            .step(&out, &mut x, &mut x0, batch, &mut injected)
            .map_err(|e| format!("call {call}: {e}"))?;
    }
    let d = max_rel_diff(&x, &floats(&case["final_sample"]));
    if d.is_nan() || d > 1e-4 {
        return Err(format!("final sample differs by {d:.2e} relative"));
    }
    let inpainted = inpaint(case, &resolved.config, steps, begin, &clean, &noise)?;
    Ok(format!("{d:.1e}, inpainted {inpainted:.1e}"))
}

/// The same start run as inpainting with a plain U-Net: after every call the known region is the clean sample
/// noised to the next call's level (`noising_at`), the clean sample after the last.
fn inpaint(
    case: &Value,
    config: &SamplerConfig,
    steps: usize,
    begin: usize,
    clean: &[f32],
    noise: &[f32],
) -> Result<f64, String> {
    let mask = floats(&case["inpaint_mask"]);
    let mut scheduler = config.build();
    scheduler.set_steps(steps).map_err(|e| e.to_string())?;
    let noising = scheduler.start_at(begin).ok_or("no start")?;
    let mut x = vec![0.0; clean.len()];
    noising.apply(clean, noise, &mut x);
    let per_call: Vec<Option<Vec<f32>>> = case["step_noise"]
        .as_array()
        .ok_or("no step noise")?
        .iter()
        .map(|n| (!n.is_null()).then(|| floats(n)))
        .collect();
    let mut injected = InjectedNoise::new(per_call);
    let batch = case["shape"][0].as_u64().ok_or("no shape")? as usize;
    let (mut out, mut x0, mut known) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; x.len()]);
    let calls = scheduler.timesteps().len();
    for call in begin..calls {
        let t = scheduler.timesteps()[call];
        let divisor = scheduler.model_input_divisor();
        let input: Vec<f32> = x.iter().map(|&v| v / divisor).collect();
        golden_model(&input, t, &mut out);
        scheduler
            .step(&out, &mut x, &mut x0, batch, &mut injected)
            .map_err(|e| format!("call {call}: {e}"))?;
        match call + 1 < calls {
            true => scheduler
                .noising_at(call + 1)
                .ok_or("no noising")?
                .apply(clean, noise, &mut known),
            false => known.copy_from_slice(clean),
        }
        for ((v, &k), &m) in x.iter_mut().zip(&known).zip(&mask) {
            *v = (1.0 - m) * k + m * *v;
        }
    }
    let d = max_rel_diff(&x, &floats(&case["inpaint_final_sample"]));
    if d.is_nan() || d > 1e-4 {
        return Err(format!(
            "inpainted final sample differs by {d:.2e} relative"
        ));
    }
    Ok(d)
}

#[test]
fn every_img2img_start_matches_diffusers() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/goldens/img2img/img2img.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let goldens: Value = serde_json::from_str(&text).unwrap();
    let cases = goldens["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        match check_case(case) {
            Ok(d) => println!("ok   {name} (max rel diff {d})"),
            Err(why) => failures.push(format!("FAIL {name}: {why}")),
        }
    }
    println!(
        "checked {} of {} img2img cases",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
