//! Property tests: every valid config gives finite samples from finite inputs, and every invalid
//! config, step count or file gives an error, never a panic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use difflab::sampler::{InjectedNoise, SamplerConfig, registry};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Settings keys of diffusers' scheduler classes.
const KEYS: [&str; 20] = [
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "timestep_spacing",
    "steps_offset",
    "clip_sample",
    "clip_sample_range",
    "thresholding",
    "solver_order",
    "algorithm_type",
    "solver_type",
    "final_sigmas_type",
    "variance_type",
    "set_alpha_to_one",
    "eta",
    "lambda_min_clipped",
    "use_karras_sigmas",
];

const NAMES: [&str; 9] = [
    "ddpm",
    "ddim",
    "dpm++2m",
    "dpm++2m-karras",
    "dpm++3m",
    "dpm++2m-sde",
    "dpm++2m-sde-karras",
    "dpm++2s",
    "dpm++3s-karras",
];

fn valid_settings() -> impl Strategy<Value = (String, Map<String, Value>, usize)> {
    (
        0..NAMES.len(),
        prop_oneof![
            Just("linear"),
            Just("scaled_linear"),
            Just("squaredcos_cap_v2")
        ],
        prop_oneof![Just("epsilon"), Just("v_prediction"), Just("sample")],
        prop_oneof![Just("leading"), Just("trailing"), Just("linspace")],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just("zero"), Just("sigma_min")],
        prop_oneof![Just("midpoint"), Just("heun")],
        1usize..=60,
    )
        .prop_map(
            |(name, beta, pred, spacing, clip, threshold, final_sigma, solver, steps)| {
                let mut m = json!({
                    "beta_schedule": beta,
                    "prediction_type": pred,
                    "timestep_spacing": spacing,
                    "clip_sample": clip,
                    "thresholding": threshold,
                    "final_sigmas_type": final_sigma,
                    "solver_type": solver,
                    "eta": if clip { 0.5 } else { 0.0 },
                })
                .as_object()
                .unwrap()
                .clone();
                if beta == "scaled_linear" {
                    m.insert("beta_start".into(), json!(0.00085));
                    m.insert("beta_end".into(), json!(0.012));
                }
                (NAMES[name].to_string(), m, steps)
            },
        )
}

/// Every registry name outside the DDPM/DDIM/DPM-Solver names above, with settings they all accept (the
/// predictor-corrector sampler, which needs a VE model, has its own tests).
fn sigma_space_settings() -> impl Strategy<Value = (String, Map<String, Value>, usize)> {
    let names: Vec<String> = registry::names()
        .map(|(n, _)| n.name.to_string())
        .filter(|n| {
            !NAMES.contains(&n.as_str())
                && (!n.starts_with("dpm++") || n.starts_with("dpm++sde"))
                && n != "ddim"
                && n != "score_sde_ve"
        })
        .collect();
    (
        prop::sample::select(names),
        prop_oneof![Just("linear"), Just("scaled_linear"), Just("squaredcos_cap_v2")],
        prop_oneof![Just("epsilon"), Just("v_prediction")],
        prop_oneof![Just("leading"), Just("trailing"), Just("linspace")],
        prop_oneof![Just(json!({})), Just(json!({"use_exponential_sigmas": true}))],
        1usize..=40,
    )
        .prop_map(|(name, beta, pred, spacing, ramp, steps)| {
            let mut m = json!({"beta_schedule": beta, "prediction_type": pred, "timestep_spacing": spacing})
                .as_object()
                .unwrap()
                .clone();
            // Karras names already choose a ramp.
            if !name.contains("karras") && !name.contains("euler-a") && !name.contains("ancestral") {
                m.extend(ramp.as_object().unwrap().clone());
            }
            (name, m, steps)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn sigma_space_samplers_give_finite_samples(
        (name, settings, steps) in sigma_space_settings(),
        values in prop::collection::vec(-3.0f32..3.0, 16),
        outputs in prop::collection::vec(-3.0f32..3.0, 16),
    ) {
        let resolved = SamplerConfig::resolve(&name, None, &settings).unwrap();
        let mut s = resolved.config.build();
        if name == "pndm" && steps < 4 {
            // The Runge-Kutta warm-up needs the top four timesteps.
            prop_assert!(s.set_steps(steps).is_err());
            return Ok(());
        }
        if name.starts_with("dpm-") && steps < 2 {
            // DPM fast and adaptive step between the first and the last noise level above 0.
            prop_assert!(s.set_steps(steps).is_err());
            return Ok(());
        }
        s.set_steps(steps).unwrap();
        let calls = s.timesteps().len();
        // One call per step; two per interval but the last for the two-stage samplers; PLMS redoes
        // its first step, PNDM's warm-up takes 12 calls for 3 steps.
        let expected = match name.as_str() {
            "plms" if steps > 1 => vec![steps + 1],
            "pndm" => vec![steps + 9],
            _ => vec![steps, 2 * steps - 1],
        };
        // The web UIs' loops count their own calls (Restart, SEEDS, SA-Solver PECE, DPM fast and adaptive).
        let own_count = resolved.config.build().calls_depend_on_sample() || registry::lookup(&name)
            .is_some_and(|(f, _)| f.class == "KDiffusionSampler");
        prop_assert!(own_count || expected.contains(&calls), "{} calls for {} steps of {}", calls, steps, name);
        prop_assert!(s.init_noise_sigma().is_finite() && s.init_noise_sigma() > 0.0);
        let mut x: Vec<f32> = values.iter().map(|v| v * s.init_noise_sigma()).collect();
        let mut x0 = vec![0.0; 16];
        let noise: Vec<Option<Vec<f32>>> = (0..calls).map(|_| Some(outputs.clone())).collect();
        let mut noise = InjectedNoise::new(noise);
        s.prepare(&mut x, &mut noise);
        // An adaptive sampler's calls grow as it runs.
        let mut i = 0;
        while i < s.timesteps().len() {
            let divisor = s.model_input_divisor();
            // sqrt(sigma² + 1), or for the EDM classes sqrt(sigma² + sigma_data²), which can be below 1.
            prop_assert!(divisor > 0.0 && divisor.is_finite());
            let out: Vec<f32> = x.iter().zip(&outputs).map(|(x, o)| (0.3 * x / divisor).tanh() + o).collect();
            s.step(&out, &mut x, &mut x0, 2, &mut noise).unwrap();
            prop_assert!(x.iter().all(|v| v.is_finite()), "call {} of {} {:?}: {:?}", i, name, settings, x);
            i += 1;
        }
        let out = vec![0.0; 16];
        prop_assert!(s.step(&out, &mut x, &mut x0, 2, &mut noise).is_err());
    }

    #[test]
    fn valid_configs_give_finite_samples(
        (name, settings, steps) in valid_settings(),
        values in prop::collection::vec(-3.0f32..3.0, 16),
        outputs in prop::collection::vec(-3.0f32..3.0, 16),
    ) {
        let resolved = SamplerConfig::resolve(&name, None, &settings).unwrap();
        let mut s = resolved.config.build();
        s.set_steps(steps).unwrap();
        prop_assert_eq!(s.timesteps().len(), steps);
        let mut x = values.clone();
        let mut x0 = vec![0.0; 16];
        let noise: Vec<Option<Vec<f32>>> = (0..steps).map(|_| Some(outputs.clone())).collect();
        let mut noise = InjectedNoise::new(noise);
        for i in 0..steps {
            // A bounded model output that depends on the sample, like a real network.
            let out: Vec<f32> = x.iter().zip(&outputs).map(|(x, o)| (0.3 * x).tanh() + o).collect();
            s.step(&out, &mut x, &mut x0, 2, &mut noise).unwrap();
            prop_assert!(x.iter().all(|v| v.is_finite()), "step {} of {} {:?}: {:?}", i, name, settings, x);
            prop_assert!(x0.iter().all(|v| v.is_finite()));
        }
        // One step too many is an error, not a panic.
        let out = vec![0.0; 16];
        prop_assert!(s.step(&out, &mut x, &mut x0, 2, &mut noise).is_err());
    }

    /// Any value of any key, then any step count: an error or a schedule, never a panic.
    #[test]
    fn odd_values_never_panic(
        name in prop::sample::select(NAMES.to_vec()),
        key in prop::sample::select(KEYS.to_vec()),
        value in prop_oneof![
            Just(json!("nonsense")), Just(json!(-1)), Just(json!(0)), Just(json!(4)), Just(json!(1.5)),
            Just(json!([1, 2])), Just(json!({"a": 1})), Just(json!(null)), Just(json!(true)),
            Just(json!(1e300)),
        ],
        steps in 0usize..1200,
    ) {
        let mut settings = Map::new();
        settings.insert(key.to_string(), value);
        if let Ok(resolved) = SamplerConfig::resolve(name, None, &settings) {
            let mut s = resolved.config.build();
            match s.set_steps(steps) {
                Ok(()) => prop_assert!(steps >= 1),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn arbitrary_json_files_never_panic(text in ".{0,200}") {
        let _ = SamplerConfig::from_json_str(&text, "fuzz.json");
    }
}

#[test]
fn invalid_configs_name_the_problem() {
    let cases: Vec<(Result<_, _>, &str)> = vec![
        (
            SamplerConfig::resolve("dpm++4m", None, &Map::new()),
            "unknown sampler \"dpm++4m\"",
        ),
        (
            SamplerConfig::from_json_str(r#"{"_class_name": "KarrasVeScheduler"}"#, "c.json"),
            "c.json: scheduler class \"KarrasVeScheduler\" is not supported",
        ),
        (
            SamplerConfig::from_json_str("{", "c.json"),
            "c.json is not valid JSON",
        ),
        (
            SamplerConfig::from_json_str("{}", "c.json"),
            "c.json has no \"_class_name\"",
        ),
        (
            SamplerConfig::resolve(
                "dpm++2m",
                None,
                json!({"solver_order": 4}).as_object().unwrap(),
            ),
            "`solver_order`: got 4, expected 1, 2 or 3",
        ),
        (
            SamplerConfig::resolve(
                "ddim",
                None,
                json!({"clip_sample": "yes"}).as_object().unwrap(),
            ),
            "`clip_sample`: got \"yes\", expected true or false",
        ),
        (
            SamplerConfig::resolve("missing/scheduler_config.json", None, &Map::new()),
            "cannot read scheduler config missing/scheduler_config.json",
        ),
    ];
    for (result, expected) in cases {
        let err = result.expect_err(expected).to_string();
        assert!(
            err.contains(expected),
            "{err:?} should contain {expected:?}"
        );
    }
    for (steps, expected) in [
        (0, "at least one step"),
        (1001, "num_train_timesteps = 1000"),
    ] {
        let mut s = SamplerConfig::resolve("ddim", None, &Map::new())
            .unwrap()
            .config
            .build();
        let err = s.set_steps(steps).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
    let mut s = SamplerConfig::resolve(
        "ddpm",
        None,
        json!({"steps_offset": 1}).as_object().unwrap(),
    )
    .unwrap()
    .config
    .build();
    let err = s.set_steps(1000).unwrap_err().to_string();
    assert!(err.contains("timestep 1000"), "{err}");
}

/// A value no setting takes (an object, a word where a number or a known name belongs) is an error naming the
/// key wherever the class reads that key, and a warning that the key is ignored where it does not: every
/// class, every key it has and the common ones, both values.
#[test]
fn wrong_values_are_errors() {
    for family in registry::FAMILIES {
        let defaults = registry::defaults(family);
        let keys: std::collections::BTreeSet<&str> =
            defaults.keys().map(String::as_str).chain(KEYS).collect();
        for key in keys {
            let reads_key = defaults.contains_key(key);
            for value in [json!("nonsense"), json!({"a": 1})] {
                let mut config = json!({"_class_name": family.class, key: value.clone()});
                // The web-UI loops' family needs the loop named.
                if family.class == "KDiffusionSampler" && key != "sampler" {
                    config["sampler"] = json!("dpmpp_2s_ancestral");
                }
                let config = config.to_string();
                let class = family.class;
                match SamplerConfig::from_json_str(&config, "test.json") {
                    Err(e) => {
                        assert!(
                            reads_key,
                            "{class} does not read `{key}`, yet {value} is an error: {e}"
                        );
                        assert!(e.to_string().contains(&format!("`{key}`")), "{class}: {e}");
                    }
                    Ok(resolved) => {
                        assert!(!reads_key, "{class} reads `{key}` and took {value}");
                        let ignored = format!("unknown key `{key}` ignored");
                        assert!(
                            resolved.warnings.iter().any(|w| w.contains(&ignored)),
                            "{class} {key}: {:?}",
                            resolved.warnings
                        );
                    }
                }
            }
        }
    }
}
