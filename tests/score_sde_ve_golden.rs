//! diffusers' ScoreSdeVeScheduler (the predictor-corrector sampler of ScoreSdeVePipeline) against its own run
//! (tests/data/goldens/score_sde_ve, made by its gen.py): times, σ grids, every model call's input and σ, and the
//! final sample mean, each run replayed with the goldens' analytic score and the pipeline's recorded draws; and
//! those draws are what a `torch.Generator` seeded alike gives, in order, so `noise = "torch"` can replay a seed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::path::Path;

use difflab::sampler::score_sde_ve::{ScoreSdeVe, ScoreSdeVeConfig};
use difflab::sampler::torch_noise::TorchGenerator;
use difflab::sampler::{InjectedNoise, SamplerConfig, Scheduler};
use serde_json::Value;

const MEAN: f32 = 0.5;
const STD: f32 = 0.2;

fn goldens() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/goldens/score_sde_ve/score_sde_ve.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    (v.as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The goldens' model: the exact score of N(MEAN, STD²) under variance-exploding noise of std σ.
fn score(x: &[f32], sigma: f32, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = -(x - MEAN) / (STD * STD + sigma * sigma);
    }
}

/// Largest difference relative to max(1, the largest |want|).
fn relative(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = (got.iter().zip(want)).fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
    diff / scale
}

/// The case's settings read as a scheduler_config.json of the class is.
fn config_of(case: &Value) -> ScoreSdeVeConfig {
    let mut json = case["config"].clone();
    json["_class_name"] = "ScoreSdeVeScheduler".into();
    let resolved = SamplerConfig::from_json_str(&json.to_string(), "case").unwrap();
    assert!(resolved.warnings.is_empty(), "{:?}", resolved.warnings);
    resolved
        .config
        .family::<ScoreSdeVeConfig>()
        .unwrap()
        .clone()
}

#[test]
fn the_predictor_corrector_sampler_equals_diffusers() {
    let goldens = goldens();
    for case in goldens["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let mut sampler = ScoreSdeVe::new(config_of(case));
        sampler.set_steps(steps).unwrap();
        assert!(
            relative(sampler.times(), &floats(&case["timesteps"])) < 1e-6,
            "{name}: times"
        );
        assert!(
            relative(sampler.step_sigmas(), &floats(&case["sigmas"])) < 1e-5,
            "{name}: sigmas"
        );
        let discrete = floats(&case["discrete_sigmas"]);
        assert!(
            relative(sampler.discrete_sigmas(), &discrete) < 1e-5,
            "{name}: discrete sigmas"
        );
        assert_eq!(
            sampler.init_noise_sigma(),
            case["init_noise_sigma"].as_f64().unwrap() as f32
        );
        for run in case["runs"].as_array().unwrap() {
            let draws: Vec<Vec<f32>> = run["draws"]
                .as_array()
                .unwrap()
                .iter()
                .map(floats)
                .collect();
            let calls = run["calls"].as_array().unwrap();
            let mut sampler = ScoreSdeVe::new(config_of(case));
            sampler.set_steps(steps).unwrap();
            assert_eq!(sampler.timesteps().len(), calls.len(), "{name}: NFE");
            let mut x: Vec<f32> = (draws[0].iter())
                .map(|z| z * sampler.init_noise_sigma())
                .collect();
            let mut noise = InjectedNoise::new(draws[1..].iter().cloned().map(Some).collect());
            let (mut out, mut x0) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            let mut worst = 0.0f32;
            for (k, call) in calls.iter().enumerate() {
                let sigma = sampler.timesteps()[k] as f32;
                let want_sigma = call["sigma"].as_f64().unwrap() as f32;
                assert!(
                    (sigma - want_sigma).abs() <= 1e-5 * want_sigma,
                    "{name}: σ of call {k}"
                );
                worst = worst.max(relative(&x, &floats(&call["sample"])));
                score(&x, sigma, &mut out);
                sampler.step(&out, &mut x, &mut x0, 1, &mut noise).unwrap();
            }
            assert!(
                noise.missing.is_empty(),
                "{name}: draws missing at {:?}",
                noise.missing
            );
            let last = relative(&x, &floats(&run["prev_sample_mean"]));
            println!(
                "{name} seed {}: calls {worst:.1e}, final mean {last:.1e}",
                run["seed"]
            );
            assert!(
                worst < 1e-5,
                "{name}: a model call's input differs by {worst:.1e}"
            );
            assert!(
                last < 1e-5,
                "{name}: the final sample mean differs by {last:.1e}"
            );
        }
    }
}

/// A seed's draws are a `torch.Generator`'s in the pipeline's order: the initial noise, then one draw per call.
#[test]
fn the_pipelines_draws_are_one_torch_generator_in_call_order() {
    let goldens = goldens();
    let case = &goldens["cases"][0];
    for run in case["runs"].as_array().unwrap() {
        let mut generator = TorchGenerator::new(run["seed"].as_u64().unwrap());
        for (k, draw) in run["draws"].as_array().unwrap().iter().enumerate() {
            let want = floats(draw);
            let got = generator.randn(want.len()).unwrap();
            assert!(relative(&got, &want) < 1e-6, "draw {k}");
        }
    }
}
