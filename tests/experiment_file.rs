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

/// Each (file text, expected start of the error, expected detail) is refused with that error, in
/// plain words rather than serde's.
fn assert_errors(cases: &[(String, String, &str)]) {
    for (text, place, detail) in cases {
        let err = error_of(text);
        assert!(
            err.starts_with(place),
            "{err:?} should start with {place:?}"
        );
        assert!(err.contains(detail), "{err:?} should contain {detail:?}");
        assert!(!err.contains("untagged"), "{err:?} names serde's jargon");
    }
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
    assert_errors(&cases);
    let err = Experiment::load(Path::new("no/such/experiment.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("no/such/experiment.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn values_out_of_bounds_and_jargon_become_plain_errors() {
    let path = dir().join("test.toml");
    let p = path.display().to_string();
    let cases = [
        (
            GOOD.replace("steps = 8", "steps = \"eight\""),
            format!("{p}:12:9: `sampler.steps`"),
            "`steps` must be a step count or a list of step counts, e.g. 50 or [10, 20, 50]",
        ),
        (
            GOOD.replace("steps = [10, 20]", "steps = [10, -20]"),
            format!("{p}:8:9: `sampler.steps`"),
            "`steps` must be a step count or a list of step counts",
        ),
        (
            format!("{GOOD}[sampling]\nseeds = \"all\"\n"),
            format!("{p}:15:9: `sampling.seeds`"),
            "`seeds` must be a count (8 means seeds 0 to 7) or a list of seeds",
        ),
        (
            GOOD.replace("[1, 4, 4]", "[1, 0, 4]"),
            format!("{p}:4:16: `model.sample_shape`"),
            "sample_shape [1, 0, 4] has a zero",
        ),
        (
            GOOD.replace("[1, 4, 4]", "[3, 100000, 100000]"),
            format!("{p}:4:16: `model.sample_shape`"),
            "is too large: one sample may have at most 16777216 values",
        ),
        (
            GOOD.replace("[1, 4, 4]", "[4, 4]"),
            format!("{p}:4:16: `model.sample_shape`"),
            "invalid length 2, expected an array of length 3",
        ),
        (
            GOOD.replace("[model]", "[model]\nthreads = 0"),
            format!("{p}:3:11: `model.threads`"),
            "must be at least 1",
        ),
        (
            format!("{GOOD}[model.roles]\nsampel = \"x\"\n"),
            format!("{p}:15:1: `model.roles`"),
            "unknown role `sampel`; the roles are sample, timestep, class_labels, conditioning, output; did you mean `sample`?",
        ),
        (
            GOOD.replace("steps = 8", "steps = 8\nsamples = 1"),
            format!("{p}:13:11: `sampler[1].samples`"),
            "must be from 2 to 1000000 samples per cell",
        ),
        (
            GOOD.replace(
                "\"dpm++2m-karras\"\nsteps = 8\nsettings = { final_sigmas_type = \"sigma_min\" }",
                "\"dpm++2m-karras\"\nsteps = 1\nsettings = { num_train_timesteps = 1 }",
            ),
            format!("{p}:13:12: `sampler[1].settings`"),
            "num_train_timesteps must be at least 2",
        ),
        (
            GOOD.replace("[model]", "[model]\nproviders = []"),
            format!("{p}:4:8: `model.providers`"),
            "list at least one provider",
        ),
    ];
    assert_errors(&cases);
}

#[test]
fn ignored_and_adjusted_settings_are_warnings_located_per_sampler() {
    let path = dir().join("test.toml");
    let text = GOOD
        .replace(
            "name = \"ddim\"\n",
            "name = \"ddim\"\nsettings = { etta = 0.5 }\n",
        )
        .replace(
            "[model]",
            "[model]\nthreads = 100000\nproviders = [\"cpu\", \"CPU\"]",
        );
    let e = Experiment::parse(&path, &text).unwrap();
    let all: Vec<String> = e.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(all.len(), 3, "{all:#?}");
    let p = path.display().to_string();
    assert!(
        all.iter().any(|w| w.starts_with(&format!(
            "{p}:3:11: `model.threads`: threads = 100000 is more than the"
        ))),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|w| w.contains("`model.providers`: cpu is listed twice")),
        "{all:#?}"
    );
    let ddim = e.warnings_for(0);
    assert!(
        ddim.iter().any(|w| w.contains(
            "`sampler[0].settings`: unknown key `etta` ignored (DDIMScheduler does not use it)"
        )),
        "{ddim:#?}"
    );
    assert_eq!(
        e.warnings_for(1).len(),
        2,
        "the other sampler gets only the experiment-wide ones"
    );
    assert_eq!(
        e.model.threads,
        Some(difflab::engine::limits::available_cores())
    );
    assert_eq!(e.model.providers, [difflab::engine::ProviderKind::Cpu]);
}

#[test]
fn training_runs_expand_globs_and_the_shipped_run_is_read_once() {
    let e = Experiment::load(&dir().join("default.toml")).unwrap();
    assert_eq!(e.training_runs.len(), 1, "{:?}", e.training_runs);
    assert!(e.training_runs[0].contains("runs/mnist16-unet/events.out.tfevents."));
    let store = difflab::metrics::load(&e.training_runs).unwrap();
    let runs: Vec<&str> = store.runs().map(|r| r.name.as_str()).collect();
    assert_eq!(
        runs,
        ["mnist16-unet"],
        "an event file is named by its folder"
    );
    let tags: Vec<&str> = store.runs().flat_map(|r| r.tags()).collect();
    assert!(
        tags.contains(&"train/loss") && !tags.contains(&"loss"),
        "each curve once: {tags:?}"
    );
    let text = "[model]\npath = \"analytic\"\n[[sampler]]\nname = \"ddim\"\nsteps = 5\n[training]\nruns = [\"runs/*\", \"nothing-here/*\"]\n";
    let e = Experiment::parse(&dir().join("test.toml"), text).unwrap();
    assert!(
        e.training_runs
            .iter()
            .any(|r| r.ends_with("runs/mnist16-unet")),
        "{:?}",
        e.training_runs
    );
    let warned: Vec<String> = e.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warned
            .iter()
            .any(|w| w.contains("`training.runs`: \"nothing-here/*\" matches nothing yet")),
        "{warned:?}"
    );
}
