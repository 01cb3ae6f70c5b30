//! Property tests over the experiment schema: any file the schema accepts runs to the end on the
//! analytic model (each cell finished with finite samples, or failed with a reason) or is refused
//! with an error; none panics or hangs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::PathBuf;

use difflab::experiment::Experiment;
use difflab::lab::{LabEvent, RunOptions, start};
use difflab::sampler::config::short_names;
use proptest::prelude::*;

/// A number from a small range, or one of the edge values users type by mistake.
fn count(small: std::ops::Range<u64>) -> impl Strategy<Value = u64> {
    prop_oneof![30 => small, 1 => Just(0u64), 1 => Just(100_000u64), 1 => Just(u32::MAX as u64)]
}

/// `guidance` and `guidance_rescale` lines: absent, typical, or out of bounds.
fn guidance() -> impl Strategy<Value = String> {
    let scale = prop_oneof![
        12 => (0.0f64..20.0).prop_map(|g| format!("{g:?}")),
        1 => Just("1".to_string()),
        1 => Just("-1.0".to_string()),
        1 => Just("nan".to_string()),
        1 => Just("inf".to_string()),
    ];
    let guidance = prop_oneof![
        2 => Just(String::new()),
        2 => scale.clone().prop_map(|g| format!("guidance = {g}\n")),
        2 => prop::collection::vec(scale, 1..3).prop_map(|g| format!("guidance = [{}]\n", g.join(", "))),
        1 => Just("guidance = []\n".to_string()),
    ];
    let rescale = prop_oneof![
        6 => Just(String::new()),
        6 => (0.0f64..1.0).prop_map(|r| format!("guidance_rescale = {r:?}\n")),
        1 => Just("guidance_rescale = 1.5\n".to_string()),
        1 => Just("guidance_rescale = -0.1\n".to_string()),
    ];
    (guidance, rescale).prop_map(|(g, r)| g + &r)
}

fn sampler() -> impl Strategy<Value = String> {
    (
        0..short_names().len(),
        prop::collection::vec(count(1..12), 1..3),
        prop_oneof![Just(1u64), 2u64..40, Just(1000u64)],
        prop_oneof![3 => Just(0.0001f64), 1 => Just(0.0), 3 => 0.0f64..0.2],
        prop_oneof![3 => Just(0.02f64), 1 => Just(1.0), 3 => 0.0f64..1.0],
        prop_oneof![Just("linear"), Just("scaled_linear"), Just("squaredcos_cap_v2")],
        prop_oneof![Just("leading"), Just("trailing"), Just("linspace")],
        prop_oneof![Just("epsilon"), Just("v_prediction"), Just("sample")],
        prop::option::of(count(1..40)),
        guidance(),
    )
        .prop_map(|(name, steps, train, start, end, beta, spacing, prediction, samples, guidance)| {
            let steps: Vec<String> = steps.iter().map(u64::to_string).collect();
            let samples = samples.map_or(String::new(), |n| format!("samples = {n}\n"));
            format!(
                "[[sampler]]\nname = \"{}\"\nsteps = [{}]\n{samples}{guidance}settings = {{ num_train_timesteps = {train}, beta_start = {start}, beta_end = {end}, beta_schedule = \"{beta}\", timestep_spacing = \"{spacing}\", prediction_type = \"{prediction}\", clip_sample = false }}\n",
                short_names()[name],
                steps.join(", ")
            )
        })
}

fn experiment_text() -> impl Strategy<Value = String> {
    (
        prop::array::uniform3(count(1..5)),
        count(1..6),
        count(1..80),
        prop::option::of(count(1..4)),
        prop::collection::vec(sampler(), 1..3),
    )
        .prop_map(|(shape, seeds, batch, threads, samplers)| {
            let threads = threads.map_or(String::new(), |t| format!("threads = {t}\n"));
            format!(
                "[model]\npath = \"analytic\"\nsample_shape = [{}, {}, {}]\n{threads}[sampling]\nseeds = {seeds}\nbatch = {batch}\n{}",
                shape[0],
                shape[1],
                shape[2],
                samplers.concat()
            )
        })
}

fn folder(case: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difflab-props-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs an accepted experiment to its end and checks what every cell produced.
fn run_checked(experiment: Experiment) {
    let lab = start(experiment, RunOptions::default());
    let mut finished = false;
    for event in lab.events.iter() {
        match event {
            LabEvent::CellDone { result, images, .. } if result.error.is_none() => {
                assert!(
                    images.iter().all(|v| v.is_finite()),
                    "{} finished with non-finite samples",
                    result.name
                );
            }
            LabEvent::Finished { error, .. } => {
                if let Some(e) = error {
                    assert!(!e.is_empty(), "an empty error");
                }
                finished = true;
            }
            _ => {}
        }
    }
    lab.join();
    assert!(finished, "the lab stopped without a result");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn accepted_experiments_run_or_error_never_panic(text in experiment_text(), case in any::<u64>()) {
        let dir = folder(case);
        let path = dir.join("props.toml");
        std::fs::write(&path, &text).unwrap();
        if let Ok(experiment) = Experiment::parse(&path, &text) {
            for s in &experiment.samplers {
                prop_assert!(!s.guidance.is_empty());
                prop_assert!(s.guidance.iter().all(|g| g.is_finite() && *g >= 0.0), "{:?}", s.guidance);
                prop_assert!((0.0..=1.0).contains(&s.guidance_rescale));
            }
            let seeds = experiment.seeds.len();
            let samples: usize = experiment
                .samplers
                .iter()
                .map(|s| s.steps.len() * s.guidance.len() * s.samples.unwrap_or(0).max(seeds))
                .sum();
            let item: usize = experiment.model.sample_shape.map_or(64, |s| s.iter().product());
            // Huge counts and shapes are accepted but would take minutes and gigabytes here; their
            // parsing is what is tested (the memory check has its own test).
            if samples <= 200 && samples * item <= 4_000_000 {
                run_checked(experiment);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
