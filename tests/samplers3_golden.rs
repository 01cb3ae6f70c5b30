//! The web UIs' samplers, schedules and guidance methods against their references (k-diffusion, A1111 and
//! ComfyUI): the recorded cases of tests/data/goldens/samplers3 (README there), or of the folder
//! `DIFFLAB_GOLDENS3` names.
//!
//! Schedules: every `kind = "schedule"` case, by ComfyUI's scheduler name and parameters, on ComfyUI's SD 1.x
//! sigma table. Guidance: every `kind = "guidance"` case but CFG++ (a sampler run, checked with the samplers),
//! call by call with fresh state at the first. Each within its suggested tolerance (relative to
//! max(1, max |expected|)).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::guidance::{
    ApgComfy, ApgDiffusers, Call, Cfg, CfgNorm, CfgZeroStarComfy, CfgZeroStarDiffusers, Guide,
    Interval, PerpNeg, RescaleCfg, Window,
};
use difflab::sampler::ksampling;
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

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The method a guidance case names, with its parameters, and its scale.
fn guide_of(case: &Value) -> (Box<dyn Guide + Send>, f64) {
    let p = &case["params"];
    let n = |key: &str| number(p, key).unwrap_or_else(|| panic!("{}: no {key}", case["name"]));
    let scale = number(p, "cfg_scale")
        .or(number(p, "guidance_scale"))
        .unwrap();
    let cfg = || -> Box<dyn Guide + Send> {
        Box::new(Cfg {
            original_formulation: p["use_original_formulation"].as_bool().unwrap_or(false),
            rescale: number(p, "guidance_rescale").unwrap_or(0.0),
        })
    };
    let guide: Box<dyn Guide + Send> = match case["method"].as_str().unwrap() {
        "cfg_comfy" | "cfg_diffusers" => cfg(),
        "rescale_cfg_comfy" => Box::new(RescaleCfg {
            multiplier: n("multiplier"),
        }),
        "apg_comfy" => Box::new(ApgComfy::new(n("eta"), n("norm_threshold"), n("momentum"))),
        "apg_diffusers" => Box::new(ApgDiffusers::new(
            n("eta"),
            n("adaptive_projected_guidance_rescale"),
            n("adaptive_projected_guidance_momentum"),
        )),
        "cfg_zero_star_comfy" => Box::new(CfgZeroStarComfy),
        "cfg_zero_star_diffusers" => Box::new(CfgZeroStarDiffusers {
            zero_init_steps: n("zero_init_steps") as usize,
        }),
        "cfg_norm_comfy" => Box::new(CfgNorm {
            strength: n("strength"),
        }),
        "perp_neg_comfy" => Box::new(PerpNeg {
            neg_scale: n("neg_scale"),
            per_item: false,
        }),
        "guidance_interval_sigma" => Box::new(Interval {
            window: Window::Sigma {
                lo: n("sigma_lo"),
                hi: n("sigma_hi"),
            },
            inner: cfg(),
        }),
        "guidance_interval_steps_diffusers" => Box::new(Interval {
            window: Window::Steps {
                start: n("start"),
                stop: n("stop"),
            },
            inner: cfg(),
        }),
        other => panic!("{}: no guidance method {other:?}", case["name"]),
    };
    (guide, scale)
}

#[test]
fn every_guidance_case_equals_its_reference() {
    let all = cases("guidance");
    let cases: Vec<&Value> = all
        .iter()
        .filter(|c| !c["method"].as_str().unwrap().starts_with("cfg_pp"))
        .collect();
    for &case in &cases {
        let name = case["name"].as_str().unwrap();
        let shape = floats(&case["shape"]);
        let item_shape = [shape[1] as usize, shape[2] as usize, shape[3] as usize];
        let (mut guide, scale) = guide_of(case);
        let steps = case["steps"].as_array().unwrap();
        let tolerance = case["suggested_tolerance"]["rel"].as_f64().unwrap();
        for (k, step) in steps.iter().enumerate() {
            let (x, cond, uncond) = (
                floats(&step["x"]),
                floats(&step["cond"]),
                floats(&step["uncond"]),
            );
            let empty = step.get("empty").map(floats);
            let call = Call {
                cond: &cond,
                uncond: &uncond,
                empty: empty.as_deref(),
                x: &x,
                sigma: step["sigma"].as_f64().unwrap(),
                step: k,
                steps: steps.len(),
                item_shape,
            };
            let got = guide.guide(&call, scale);
            let want = floats(&step["output"]);
            let scale_of = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let diff = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0, f64::max);
            assert!(
                diff / scale_of <= tolerance,
                "{name} call {k}: relative difference {:.3e} > {tolerance:e}",
                diff / scale_of
            );
        }
    }
    println!(
        "checked {} of {} guidance cases (the rest, CFG++, are sampler runs: see the next test)",
        cases.len(),
        all.len()
    );
    assert!(!cases.is_empty());
}

/// `sigma_schedule` (what an experiment's `schedule = "kl_optimal"` sets) makes a k-diffusion style sampler, a
/// multistep or singlestep solver, or a web UI's own loop step through the web UI's schedule on the model's own sigma table: on SD 1.x's scaled-linear schedule, the sigmas
/// ComfyUI gives (within float32 rounding of the two tables), then the final 0.
#[test]
fn a_web_ui_schedule_drives_the_k_diffusion_samplers() {
    use difflab::sampler::SamplerConfig;
    use difflab::sampler::step_table::step_rows;
    use serde_json::{Map, json};

    let base: Map<String, Value> = json!({
        "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "prediction_type": "epsilon"
    })
    .as_object()
    .unwrap()
    .clone();
    let model = ModelSigmas::sd1();
    for (sampler, schedule) in [
        ("euler", "kl_optimal"),
        ("Euler a", "ays"),
        ("heun", "simple"),
        ("lms", "vp"),
        ("dpm++2m", "kl_optimal"),
        ("unipc", "ays"),
        ("deis", "simple"),
        ("dpm++2s", "normal"),
        ("dpm++2s-a", "beta"),
    ] {
        let settings: Map<String, Value> = json!({"sigma_schedule": schedule})
            .as_object()
            .unwrap()
            .clone();
        let resolved = SamplerConfig::resolve(sampler, Some(&base), &settings).unwrap();
        let steps = 10;
        let rows = step_rows(&resolved.config, steps).unwrap();
        let want = SigmaSchedule::from_name(schedule)
            .unwrap()
            .sigmas(steps, &model, &ScheduleParams::default())
            .unwrap();
        let mut got: Vec<f64> = rows.iter().map(|r| r.sigma).collect();
        got.dedup_by(|a, b| (*a - *b).abs() < 1e-9); // Heun visits each sigma twice
        got.push(0.0);
        assert_eq!(got.len(), want.len(), "{sampler} {schedule}: {got:?}");
        for (g, &w) in got.iter().zip(&want) {
            assert!(
                (g - f64::from(w)).abs() <= 1e-5 * f64::from(w).max(1.0),
                "{sampler} {schedule}: {got:?} vs {want:?}"
            );
        }
    }
    // Classes without it say so; a count the schedule cannot give is refused, not run with other steps.
    let settings: Map<String, Value> = json!({"sigma_schedule": "ddim_uniform"})
        .as_object()
        .unwrap()
        .clone();
    let resolved = SamplerConfig::resolve("euler", Some(&base), &settings).unwrap();
    let err = step_rows(&resolved.config, 7).unwrap_err().to_string();
    assert!(err.contains("8 noise levels for 7 steps"), "{err}");
    let settings: Map<String, Value> =
        json!({"sigma_schedule": "simple", "use_karras_sigmas": true})
            .as_object()
            .unwrap()
            .clone();
    assert!(SamplerConfig::resolve("euler", Some(&base), &settings).is_err());
}

// Samplers: each case's loop driven call by call with the toy model of the README (section 2) and the recorded
// noise fed to its draws in order.

/// The toy model's denoised prediction `x − s·eps(x/sqrt(s² + 1), s)`, conditional or unconditional.
fn toy_denoised(x: &[f64], s: f64, cond: bool) -> Vec<f64> {
    let l = s.ln();
    x.iter()
        .map(|&x| {
            let u = x / (s * s + 1.0).sqrt();
            let eps = match cond {
                true => 0.5 * u * l.cos() + 0.1 * (u + 0.5 * l).sin(),
                false => 0.4 * u * (0.8 * l).cos() + 0.1 * (u - 0.3 * l).sin() - 0.05,
            };
            x - s * eps
        })
        .collect()
}

/// The sampler a case's function names and the case's settings; ComfyUI's `_gpu` forms are the same loops
/// with another Brownian generator.
fn sampler_of(case: &Value) -> Option<(&'static ksampling::KSampler, ksampling::Settings)> {
    let function = case["function"].as_str().unwrap();
    let mut kwargs = case["kwargs"].as_object().unwrap().clone();
    let name = function
        .trim_start_matches("sample_")
        .trim_end_matches("_gpu");
    let name = match name {
        "dpmpp_2m_sde_heun" => {
            kwargs.insert("solver_type".into(), "heun".into());
            "dpmpp_2m_sde"
        }
        "restart_sampler" => "restart",
        other => other,
    };
    if let Some(restart_list) = kwargs.get("restart_list").cloned() {
        kwargs.insert("restart_list".into(), restart_list.to_string().into());
    }
    // SA-Solver's noise interval and ER-SDE's noise scaler as ComfyUI's SamplerSASolver / SamplerER_SDE nodes
    // take them.
    if let Some(tau) = case.get("tau_interval").filter(|t| t["default"].is_null()) {
        for key in ["eta", "sde_start_percent", "sde_end_percent"] {
            kwargs.insert(key.into(), tau[key].clone());
        }
    }
    if let Some(scaler) = case.get("noise_scaler").filter(|s| !s.is_null()) {
        kwargs.insert("noise_scaler".into(), scaler["type"].clone());
        kwargs.insert("eta".into(), scaler["eta"].clone());
    }
    let sampler = ksampling::sampler(name)?;
    let settings =
        ksampling::settings(sampler, &kwargs).unwrap_or_else(|e| panic!("{}: {e:?}", case["name"]));
    Some((sampler, settings))
}

/// The sigmas a case's sampler steps through; DPM fast and adaptive take ComfyUI's form of their bounds
/// (`sigmas[0]`, the last non-zero sigma, `len − 1` intervals).
fn sigmas_of(case: &Value) -> Vec<f64> {
    if let Some(dpm) = case.get("dpm").filter(|d| !d.is_null()) {
        let n = dpm["n"].as_u64().unwrap_or(1) as usize;
        let (lo, hi) = (
            dpm["sigma_min"].as_f64().unwrap(),
            dpm["sigma_max"].as_f64().unwrap(),
        );
        let mut sigmas = vec![hi];
        sigmas.extend(std::iter::repeat_n(lo, n - 1));
        sigmas.push(0.0);
        if n == 1 {
            sigmas.insert(1, lo);
        }
        return sigmas;
    }
    floats(&case["sigmas"])
}

fn relative(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    diff / scale
}

/// Runs one sampler case; the first difference from the reference, if any.
fn run_sampler_case(
    case: &Value,
    sampler: &ksampling::KSampler,
    settings: &ksampling::Settings,
) -> Result<(), String> {
    use ksampling::{Denoised, Run, State};
    let tolerance = case["suggested_tolerance"]["rel"].as_f64().unwrap();
    let call_sigmas = floats(&case["call_sigmas"]);
    let noise = case["noise"].as_array().cloned().unwrap_or_default();
    let recorded_calls = case.get("calls").and_then(Value::as_array);
    let cfg_scale = case["model"]["cfg_scale"].as_f64();
    let model = ModelSigmas::sd1();
    let start = ksampling::Start {
        x: floats(&case["x_init"]),
        sigmas: sigmas_of(case),
        settings: settings.clone(),
        percent_to_sigma: std::sync::Arc::new(move |p| model.percent_to_sigma(p)),
    };
    let mut run = Run::new(sampler, start);
    let (mut calls, mut draws) = (0usize, 0usize);
    let mut problem: Option<String> = None;
    let final_sample = loop {
        let mut feed = |draw: ksampling::Draw| {
            let Some(record) = noise.get(draws) else {
                problem.get_or_insert(format!("draw {draws} was not recorded"));
                return vec![0.0; floats(&case["x_init"]).len()];
            };
            let after = record["after_calls"].as_u64().unwrap() as usize;
            if after != calls {
                problem.get_or_insert(format!(
                    "draw {draws} after {calls} calls, recorded after {after}"
                ));
            }
            if record["source"] == "noise_sampler" {
                let want = [
                    record["sigma"].as_f64().unwrap(),
                    record["sigma_next"].as_f64().unwrap(),
                ];
                if relative(&[draw.sigma, draw.sigma_next], &want) > 1e-6 {
                    problem.get_or_insert(format!(
                        "draw {draws} between {} and {}, recorded {want:?}",
                        draw.sigma, draw.sigma_next
                    ));
                }
            }
            draws += 1;
            floats(&record["values"])
        };
        match run.resume(&mut feed) {
            State::Done(x) => break x,
            State::Call { x, sigma } => {
                let Some(&want) = call_sigmas.get(calls) else {
                    return Err(format!(
                        "call {calls} at sigma {sigma}: the reference made {}",
                        call_sigmas.len()
                    ));
                };
                if relative(&[sigma], &[want]) > 1e-6 {
                    return Err(format!("call {calls} at sigma {sigma}, recorded {want}"));
                }
                if let Some(record) = recorded_calls.and_then(|c| c.get(calls)) {
                    let diff = relative(&x, &floats(&record["x"]));
                    if diff > tolerance {
                        return Err(format!("call {calls}: x differs by {diff:.3e}"));
                    }
                }
                let cond = toy_denoised(&x, sigma, true);
                let answer = match cfg_scale {
                    Some(scale) => {
                        let uncond = toy_denoised(&x, sigma, false);
                        let guided = uncond
                            .iter()
                            .zip(&cond)
                            .map(|(u, c)| u + (c - u) * scale)
                            .collect();
                        Denoised {
                            guided,
                            uncond: Some(uncond),
                        }
                    }
                    None => Denoised {
                        guided: cond,
                        uncond: None,
                    },
                };
                run.answer(answer);
                calls += 1;
            }
        }
    };
    if let Some(problem) = problem {
        return Err(problem);
    }
    if calls != call_sigmas.len() || draws != noise.len() {
        return Err(format!(
            "{calls} calls and {draws} draws, the reference {} and {}",
            call_sigmas.len(),
            noise.len()
        ));
    }
    let diff = relative(&final_sample, &floats(&case["final_sample"]));
    match diff <= tolerance {
        true => Ok(()),
        false => Err(format!(
            "final sample differs by {diff:.3e} > {tolerance:e}"
        )),
    }
}

#[test]
fn every_sampler_case_equals_its_reference() {
    let cases = cases("sampler");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        match sampler_of(case) {
            None => failures.push(format!("{name}: no sampler for {}", case["function"])),
            Some((sampler, settings)) => {
                if let Err(e) = run_sampler_case(case, sampler, &settings) {
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
    }
    let checked = cases.len() - failures.len();
    println!("checked {checked} of {} sampler cases", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        !cases.is_empty(),
        "no sampler cases in {}",
        folder().display()
    );
}

/// The CFG++ guidance case: a whole `euler_cfg_pp` run whose model returns the recorded conditional and
/// unconditional predictions, call by call.
#[test]
fn cfg_pp_guidance_cases_are_euler_cfg_pp_runs() {
    use ksampling::{Denoised, Run, State};
    let all = cases("guidance");
    let runs: Vec<&Value> = all
        .iter()
        .filter(|c| c["method"].as_str().unwrap().starts_with("cfg_pp"))
        .collect();
    for case in &runs {
        let name = case["name"].as_str().unwrap();
        let steps = case["steps"].as_array().unwrap();
        let scale = case["params"]["cfg_scale"].as_f64().unwrap();
        let sampler = ksampling::sampler("euler_cfg_pp").unwrap();
        let start = ksampling::Start {
            x: floats(&steps[0]["x"]),
            sigmas: floats(&case["params"]["sigma_schedule"]),
            settings: ksampling::settings(sampler, &serde_json::Map::new()).unwrap(),
            percent_to_sigma: std::sync::Arc::new(|p| p),
        };
        let mut run = Run::new(sampler, start);
        let mut call = 0;
        let got = loop {
            match run.resume(&mut |_| panic!("{name}: euler_cfg_pp draws no noise")) {
                State::Done(x) => break x,
                State::Call { x, sigma } => {
                    let step = &steps[call];
                    if let Some(want) = step.get("x") {
                        assert!(relative(&x, &floats(want)) < 1e-10, "{name}: call {call} x");
                    }
                    assert!((sigma - step["sigma"].as_f64().unwrap()).abs() < 1e-6);
                    let (cond, uncond) = (floats(&step["cond"]), floats(&step["uncond"]));
                    let guided = uncond
                        .iter()
                        .zip(&cond)
                        .map(|(u, c)| u + (c - u) * scale)
                        .collect();
                    run.answer(Denoised {
                        guided,
                        uncond: Some(uncond),
                    });
                    call += 1;
                }
            }
        };
        let tolerance = case["suggested_tolerance"]["rel"].as_f64().unwrap();
        let diff = relative(&got, &floats(&case["final_sample"]));
        assert!(
            diff <= tolerance,
            "{name}: final sample differs by {diff:.3e}"
        );
        assert_eq!(call, steps.len(), "{name}: calls");
    }
    println!(
        "checked {} of {} CFG++ guidance runs",
        runs.len(),
        runs.len()
    );
    assert!(!runs.is_empty());
}
