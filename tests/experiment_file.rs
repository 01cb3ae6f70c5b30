//! Experiment files: a good one resolves; each kind of mistake gives one error with file, line,
//! column and key, and a "did you mean" for typos.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::experiment::{Experiment, ModelSource};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments")
}

fn error_of(text: &str) -> String {
    Experiment::parse(&dir().join("test.toml"), text)
        .expect_err("the experiment should be rejected")
        .to_string()
}

const GOOD: &str = r#"
[model]
path = "analytic"
sample_shape = [1, 4, 4]

[[sampler]]
name = "ddim"
steps = [10, 20]

[[sampler]]
name = "dpm++2m-karras"
steps = 8
settings = { final_sigmas_type = "sigma_min" }
"#;

#[test]
fn the_shipped_analytic_experiment_loads() {
    let e = Experiment::load(&dir().join("analytic.toml")).unwrap();
    assert_eq!(e.model.source, ModelSource::Analytic);
    assert_eq!(e.seeds, (0..8).collect::<Vec<u64>>());
    assert_eq!(e.output_dir, dir().join("out/analytic"));
    assert_eq!(e.samplers.len(), 3);
    assert_eq!(e.samplers[0].steps, [10, 50]);
}

#[test]
fn a_good_experiment_resolves_samplers_and_paths() {
    let e = Experiment::parse(&dir().join("test.toml"), GOOD).unwrap();
    assert_eq!(e.name, "test");
    assert_eq!(e.output_dir, dir().join("out/test"));
    assert_eq!(
        e.samplers[1].resolved.config.class_name(),
        "DPMSolverMultistepScheduler"
    );
    assert_eq!(
        e.samplers[1].resolved.settings["final_sigmas_type"],
        "sigma_min"
    );
}

#[test]
fn mistakes_are_located_and_named() {
    let path = dir().join("test.toml");
    let p = path.display().to_string();
    let cases = [
        (
            GOOD.replace("steps = 8", "stpes = 8"),
            format!("{p}:12:1: `sampler.stpes`"),
            "did you mean `steps`?",
        ),
        (
            GOOD.replace("\"dpm++2m-karras\"", "\"dpm++2m-karas\""),
            format!("{p}:11:8: `sampler[1].name`"),
            "did you mean `dpm++2m-karras`?",
        ),
        (
            GOOD.replace("steps = 8", "steps = 0"),
            format!("{p}:12:9: `sampler[1].steps`"),
            "from 1 to 1000",
        ),
        (
            GOOD.replace("\"sigma_min\"", "\"smallest\""),
            format!("{p}:13:12: `sampler[1].settings`"),
            "`final_sigmas_type`: got \"smallest\", expected one of zero, sigma_min",
        ),
        (
            GOOD.replace("path = \"analytic\"", "path = \"missing.onnx\""),
            format!("{p}:3:8: `model.path`"),
            "no model file at",
        ),
        (
            GOOD.replace("[model]", "[model]\nproviders = [\"cuda\", \"gpu\"]"),
            format!("{p}:3:22: `model.providers`"),
            "unknown execution provider \"gpu\"",
        ),
        (
            GOOD.replace("steps = [10, 20]", "steps = [10, 20"),
            format!("{p}:10:1:"),
            "missing comma",
        ),
        (
            GOOD.replace("[model]", "[modle]"),
            format!("{p}:2:"),
            "did you mean `model`?",
        ),
    ];
    for (text, place, detail) in cases {
        let err = error_of(&text);
        assert!(
            err.starts_with(&place),
            "{err:?} should start with {place:?}"
        );
        assert!(err.contains(detail), "{err:?} should contain {detail:?}");
    }
    let err = Experiment::load(Path::new("no/such/experiment.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("no/such/experiment.toml: cannot read"),
        "{err}"
    );
}
