//! Experiment files: a good one resolves; each kind of mistake gives one error with file, line,
//! column and key, and a "did you mean" for typos.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::experiment::{Experiment, InitPer, ModelSource, NoiseKind, Preview};

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
            "sample_shape [4, 4] has 2 sizes; give channels, height and width [C, H, W], or channels, frames, height and width [C, F, H, W]",
        ),
        (
            GOOD.replace("[model]", "[model]\nthreads = 0"),
            format!("{p}:3:11: `model.threads`"),
            "must be at least 1",
        ),
        (
            format!("{GOOD}[model.roles]\nsampel = \"x\"\n"),
            format!("{p}:15:1: `model.roles`"),
            "unknown role `sampel`; the roles are sample, timestep, class_labels, conditioning, text_embeds, time_ids, timestep_cond, text_mask, control_image, control_scale, output; did you mean `sample`?",
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
    let e = Experiment::load(&dir().join("mnist16.toml")).unwrap();
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

#[test]
fn guidance_is_a_scale_or_a_list_and_defaults_to_none() {
    let e = Experiment::parse(&dir().join("test.toml"), GOOD).unwrap();
    assert_eq!(e.samplers[0].guidance, [1.0]);
    assert_eq!(e.samplers[0].guidance_rescale, 0.0);
    assert_eq!(e.conditioning, None);
    assert_eq!(e.init_noise, None);
    let text = GOOD
        .replace(
            "steps = [10, 20]",
            "steps = [10, 20]\nguidance = [1.0, 7.5]\nguidance_rescale = 0.7",
        )
        .replace("steps = 8", "steps = 8\nguidance = 3");
    let e = Experiment::parse(&dir().join("test.toml"), &text).unwrap();
    assert_eq!(e.samplers[0].guidance, [1.0, 7.5]);
    assert_eq!(e.samplers[0].guidance_rescale, 0.7);
    assert_eq!(e.samplers[1].guidance, [3.0]);
    let warned = e.warnings_for(0);
    assert!(
        warned
            .iter()
            .any(|w| w.contains("`sampler[0].guidance`: the analytic model takes no conditioning")),
        "{warned:?}"
    );
}

#[test]
fn guidance_out_of_bounds_is_located_at_its_key() {
    let path = dir().join("test.toml");
    let p = path.display().to_string();
    let with = |line: &str| GOOD.replace("steps = [10, 20]", &format!("steps = [10, 20]\n{line}"));
    let cases = [
        (
            with("guidance = [1.0, -2]"),
            format!("{p}:9:12: `sampler[0].guidance`"),
            "guidance must be a finite number ≥ 0 (1 = no guidance)",
        ),
        (
            with("guidance = nan"),
            format!("{p}:9:12: `sampler[0].guidance`"),
            "guidance must be a finite number ≥ 0",
        ),
        (
            with("guidance = inf"),
            format!("{p}:9:12: `sampler[0].guidance`"),
            "guidance must be a finite number ≥ 0 (1 = no guidance)",
        ),
        (
            with("guidance = []"),
            format!("{p}:9:12: `sampler[0].guidance`"),
            "list at least one guidance scale",
        ),
        (
            with("guidance = \"high\""),
            format!("{p}:9:12: `sampler.guidance`"),
            "`guidance` must be a guidance scale or a list of them, e.g. 7.5 or [1.0, 7.5]",
        ),
        (
            with("guidance_rescale = 1.5"),
            format!("{p}:9:20: `sampler[0].guidance_rescale`"),
            "guidance_rescale must be from 0 to 1",
        ),
    ];
    assert_errors(&cases);
}

/// The small exported Stable Diffusion pipeline kept for tests, relative to `experiments/`.
const SD1: &str = "../tests/data/pipelines/sd1";

/// An experiment on the test pipeline (or `path`), with `model` keys and a `[conditioning]` table.
fn on(path: &str, model: &str, conditioning: &str) -> String {
    format!(
        "[model]\npath = \"{path}\"\n{model}[[sampler]]\nname = \"ddim\"\nsteps = 10\n{conditioning}"
    )
}

#[test]
fn a_pipeline_folder_brings_its_training_schedule() {
    let e = Experiment::parse(&dir().join("test.toml"), &on(SD1, "", "")).unwrap();
    let sd1 = dir().join(SD1);
    assert_eq!(e.model.source, ModelSource::Pipeline(sd1.clone()));
    assert_eq!(
        e.model.scheduler_config,
        Some(sd1.join("scheduler/scheduler_config.json"))
    );
    assert_eq!(
        e.samplers[0].resolved.settings["beta_schedule"],
        "scaled_linear"
    );
    let prompts = "[conditioning]\nprompts = [\"a photo of a cat\", \"a red car\"]\nnegative_prompt = \"blurry\"\n";
    let e = Experiment::parse(&dir().join("test.toml"), &on(SD1, "", prompts)).unwrap();
    let c = e.conditioning.unwrap();
    assert_eq!(c.prompts, ["a photo of a cat", "a red car"]);
    assert_eq!(c.negative_prompt.as_deref(), Some("blurry"));
    assert!(c.classes.is_empty() && c.embeddings.is_none() && c.null_class.is_none());
    let e = Experiment::parse(&dir().join("test.toml"), &on(SD1, "", "[conditioning]\n")).unwrap();
    assert_eq!(e.conditioning, None);
    let warned: Vec<String> = e.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warned
            .iter()
            .any(|w| w.contains("`conditioning`: [conditioning] is empty")),
        "{warned:?}"
    );
}

#[test]
fn a_bare_unet_takes_its_other_parts_one_by_one() {
    let unet = format!("{SD1}/unet/model.onnx");
    let parts = format!(
        "vae_decoder = \"{SD1}/vae_decoder/model.onnx\"\ntext_encoder = \"{SD1}/text_encoder/model.onnx\"\ntokenizer = \"{SD1}/tokenizer\"\n"
    );
    let classes = "[conditioning]\nclasses = [3, 7]\nnull_class = 10\n";
    let e = Experiment::parse(&dir().join("test.toml"), &on(&unet, &parts, classes)).unwrap();
    assert_eq!(e.model.source, ModelSource::Onnx(dir().join(&unet)));
    let sd1 = dir().join(SD1);
    assert_eq!(
        e.model.vae_decoder,
        Some(sd1.join("vae_decoder/model.onnx"))
    );
    assert_eq!(
        e.model.text_encoder,
        Some(sd1.join("text_encoder/model.onnx"))
    );
    assert_eq!(e.model.tokenizer, Some(sd1.join("tokenizer")));
    let c = e.conditioning.unwrap();
    assert_eq!((c.classes, c.null_class), (vec![3, 7], Some(10)));
}

#[test]
fn model_parts_and_conditioning_mistakes_are_located() {
    let path = dir().join("test.toml");
    let p = path.display().to_string();
    let unet = format!("{SD1}/unet/model.onnx");
    let text_encoder = format!("text_encoder = \"{SD1}/text_encoder/model.onnx\"\n");
    let cases = [
        (
            on("../tests/data", "", ""),
            format!("{p}:2:8: `model.path`"),
            "data is a folder without model_index.json; give the U-Net .onnx file or a pipeline folder as `optimum-cli export onnx --task text-to-image` writes it",
        ),
        (
            on(SD1, "vae_decoder = \"vae.onnx\"\n", ""),
            format!("{p}:3:15: `model.vae_decoder`"),
            "the pipeline folder has its own vae_decoder",
        ),
        (
            on(&unet, &text_encoder, ""),
            format!("{p}:3:16: `model.text_encoder`"),
            "a text encoder needs its tokenizer",
        ),
        (
            on(&unet, &format!("tokenizer = \"{SD1}/unet\"\n"), ""),
            format!("{p}:3:13: `model.tokenizer`"),
            "holds neither tokenizer.json nor vocab.json with merges.txt",
        ),
        (
            on(
                SD1,
                "",
                "[conditioning]\nprompts = [\"a cat\"]\nclasses = [3]\n",
            ),
            format!("{p}:8:11: `conditioning.classes`"),
            "give prompts (or embeddings) or classes, not both: a run is text- or class-conditional",
        ),
        (
            on(SD1, "", "[conditioning]\nprompts = []\n"),
            format!("{p}:7:11: `conditioning.prompts`"),
            "list at least one prompt",
        ),
        (
            on(SD1, "", "[conditioning]\nclasses = [3, -1]\n"),
            format!("{p}:7:15: `conditioning.classes`"),
            "a class label must be ≥ 0",
        ),
        (
            on(SD1, "", "[conditioning]\nclasses = [3]\nnull_class = -1\n"),
            format!("{p}:8:14: `conditioning.null_class`"),
            "a class label must be ≥ 0",
        ),
        (
            on(SD1, "", "[conditioning]\nembeddings = \"missing.npy\"\n"),
            format!("{p}:7:14: `conditioning.embeddings`"),
            "no embeddings file at",
        ),
        (
            format!("{GOOD}[conditioning]\nprompts = [\"a cat\"]\n"),
            format!("{p}:14:1: `conditioning`"),
            "the analytic model takes no conditioning",
        ),
        (
            format!("{GOOD}[sampling]\ninit_noise = \"missing.npy\"\n"),
            format!("{p}:15:14: `sampling.init_noise`"),
            "no initial noise file at",
        ),
    ];
    assert_errors(&cases);
}

#[test]
fn previews_are_the_cheap_map_or_a_decode_every_k_steps() {
    let path = dir().join("test.toml");
    let e = Experiment::parse(&path, GOOD).unwrap();
    assert_eq!(e.preview, Preview::Approx);
    let with = |lines: &str| format!("[sampling]\n{lines}\n{GOOD}");
    let e = Experiment::parse(&path, &with("preview = \"decode\"")).unwrap();
    assert_eq!(e.preview, Preview::Decode { every: 5 });
    let e = Experiment::parse(&path, &with("preview = \"decode\"\npreview_every = 2")).unwrap();
    assert_eq!(e.preview, Preview::Decode { every: 2 });
    let e = Experiment::parse(&path, &with("preview_every = 2")).unwrap();
    assert_eq!(e.preview, Preview::Approx);
    let warned = e.warnings_for(0);
    assert!(
        warned.iter().any(|w| w.contains("`sampling.preview_every`: applies only with preview = \"decode\"")),
        "{warned:?}"
    );
    let p = path.display().to_string();
    assert_errors(&[
        (
            with("preview = \"vae\""),
            format!("{p}:2:11: `sampling.preview`"),
            "unknown variant `vae`, expected `approx` or `decode`",
        ),
        (
            with("preview = \"decode\"\npreview_every = 0"),
            format!("{p}:3:17: `sampling.preview_every`"),
            "must be at least 1",
        ),
    ]);
}

#[test]
fn expected_classes_are_one_per_prompt() {
    let path = dir().join("test.toml");
    let p = path.display().to_string();
    let quality = |extra: &str| {
        format!(
            "[quality]\nfeatures = \"../models/mnist16-features.onnx\"\n\
             reference = \"../models/mnist16-reference.npz\"\n{extra}\n"
        )
    };
    let prompts = "[conditioning]\nprompts = [\"a 3\", \"a 7\"]\n";
    let good = on(
        SD1,
        "",
        &format!(
            "{prompts}{}",
            quality("expected_classes = [3, 7]\nlogits = \"logits\"")
        ),
    );
    let e = Experiment::parse(&path, &good).unwrap();
    let q = e.quality.unwrap();
    assert_eq!(q.expected_classes, [3, 7]);
    assert_eq!(q.logits.as_deref(), Some("logits"));
    let classes = on(
        "../tests/data/pipelines/classcond",
        "",
        &format!(
            "[conditioning]\nclasses = [3, 7]\n{}",
            quality("expected_classes = [1]")
        ),
    );
    let e = Experiment::parse(&path, &classes).unwrap();
    assert!(e.quality.as_ref().unwrap().expected_classes.is_empty());
    let warned = e.warnings_for(0);
    assert!(
        warned.iter().any(|w| w.contains("`quality.expected_classes`: a class-conditional run is scored against its [conditioning] classes")),
        "{warned:?}"
    );
    for (extra, detail) in [
        (
            "expected_classes = [3]",
            "gives 1 classes for 2 prompts; give one per prompt",
        ),
        ("expected_classes = [3, -1]", "class -1 is negative"),
    ] {
        let err = error_of(&on(SD1, "", &format!("{prompts}{}", quality(extra))));
        assert!(
            err.starts_with(&p) && err.contains("`quality.expected_classes`"),
            "{err}"
        );
        assert!(err.contains(detail), "{err}");
    }
    let unconditioned = on(SD1, "", &quality("expected_classes = [3]"));
    let err = error_of(&unconditioned);
    assert!(err.contains("needs [conditioning] prompts"), "{err}");
}

#[test]
fn noise_is_difflabs_own_or_torchs() {
    let path = dir().join("test.toml");
    assert_eq!(
        Experiment::parse(&path, GOOD).unwrap().noise,
        NoiseKind::Difflab
    );
    let torch = format!("[sampling]\nnoise = \"torch\"\n{GOOD}");
    assert_eq!(
        Experiment::parse(&path, &torch).unwrap().noise,
        NoiseKind::Torch
    );
    let p = path.display().to_string();
    assert_errors(&[(
        format!("[sampling]\nnoise = \"numpy\"\n{GOOD}"),
        format!("{p}:2:9: `sampling.noise`"),
        "unknown variant `numpy`, expected `difflab` or `torch`",
    )]);
}

#[test]
fn schedule_is_a_key_of_its_own_like_comfyuis_scheduler() {
    let path = dir().join("test.toml");
    let p = path.display().to_string();
    let table = |name: &str, schedule: &str| {
        format!(
            "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\n[[sampler]]\nname = \"{name}\"\nsteps = 8\nschedule = \"{schedule}\"\n"
        )
    };
    let e = Experiment::parse(&path, &table("euler", "karras")).unwrap();
    let settings = &e.samplers[0].resolved.settings;
    assert_eq!(settings["use_karras_sigmas"], serde_json::Value::Bool(true));
    let e = Experiment::parse(&path, &table("Heun", "exponential")).unwrap();
    assert_eq!(
        e.samplers[0].resolved.settings["use_exponential_sigmas"],
        serde_json::Value::Bool(true)
    );
    let e = Experiment::parse(&path, &table("Euler", "beta")).unwrap();
    assert_eq!(
        e.samplers[0].resolved.settings["use_beta_sigmas"],
        serde_json::Value::Bool(true)
    );
    let e = Experiment::parse(&path, &table("DPM++ 2M", "SGM Uniform")).unwrap();
    assert_eq!(
        e.samplers[0].resolved.settings["timestep_spacing"],
        serde_json::json!("trailing")
    );
    // The web UIs' other schedules are difflab's `sigma_schedule`, by ComfyUI's names (AYS as "ays" too).
    for (schedule, name) in [
        ("kl_optimal", "kl_optimal"),
        ("AYS", "align_your_steps"),
        ("Linear Quadratic", "linear_quadratic"),
    ] {
        let e = Experiment::parse(&path, &table("Euler a", schedule)).unwrap();
        assert_eq!(
            e.samplers[0].resolved.settings["sigma_schedule"],
            serde_json::json!(name)
        );
    }
    assert_errors(&[
        (
            table("ddim", "kl_optimal"),
            format!("{p}:7:12: `sampler[0].schedule`"),
            "has no \"kl_optimal\" schedule",
        ),
        (
            table("ddim", "karras"),
            format!("{p}:7:12: `sampler[0].schedule`"),
            "has no \"karras\" schedule",
        ),
        (
            table("euler", "cosine"),
            format!("{p}:7:12: `sampler[0].schedule`"),
            "unknown schedule \"cosine\"; use one of karras, exponential, beta, sgm_uniform, simple, normal, \
             ddim_uniform, linear_quadratic, polyexponential, kl_optimal, laplace, vp, align_your_steps (ays), gits, \
             optimal_steps",
        ),
    ]);
}

/// `sigmas = [...]`: a sampler's own noise levels, one per step (a final 0 allowed), as ComfyUI's custom SIGMAS;
/// a count that is not the step count, a class without the setting, or a schedule beside it is refused.
#[test]
fn a_sampler_can_step_through_a_list_of_sigmas() {
    let path = dir().join("test.toml");
    let p = path.display().to_string();
    let table = |name: &str, steps: usize, extra: &str| {
        format!(
            "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\n[[sampler]]\nname = \"{name}\"\nsteps = {steps}\n\
             sigmas = [14.6, 3.0, 0.5, 0.0]\n{extra}"
        )
    };
    let e = Experiment::parse(&path, &table("euler", 3, "")).unwrap();
    assert_eq!(
        e.samplers[0].resolved.settings["sigmas"],
        serde_json::json!([14.6, 3.0, 0.5, 0.0])
    );
    assert_errors(&[
        (
            table("euler", 4, ""),
            format!("{p}:7:10: `sampler[0].sigmas`"),
            "4 sigmas (a final 0 aside) make 3 steps, but `steps` asks for 4",
        ),
        (
            table("ddim", 3, ""),
            format!("{p}:7:10: `sampler[0].sigmas`"),
            "ddim (DDIMScheduler) takes no list of sigmas",
        ),
        (
            table("euler", 3, "schedule = \"karras\"\n"),
            format!("{p}:7:10: `sampler[0].sigmas`"),
            "give `schedule` or `sigmas`, not both",
        ),
    ]);
}

/// Every shipped experiment loads, with nothing to warn about.
#[test]
fn every_shipped_experiment_loads_without_warnings() {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let e = Experiment::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let warnings: Vec<String> = e.warnings.iter().map(ToString::to_string).collect();
            assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 6, "{seen} experiments");
}

/// DPM++ 2M Karras, the web UIs' most used sampler, runs at any step count as diffusers does: at 50 steps on
/// SD 1.5's schedule its rounded timesteps repeat (…, 2, 1, 1, 0) but its sigmas do not. Only a schedule whose
/// sigmas really repeat is refused, and the advice names a step count that works.
#[test]
fn karras_sigmas_run_at_any_step_count_and_only_real_repeats_are_refused() {
    let sampler = |path: &str, name: &str, steps: usize| {
        format!(
            "[model]\npath = \"{path}\"\nsample_shape = [1, 4, 4]\n[[sampler]]\nname = \"{name}\"\nsteps = {steps}\n"
        )
    };
    for (path, name, steps) in [
        (SD1, "dpm++2m-karras", 50),
        (SD1, "dpm++2m-sde-karras", 100),
        ("analytic", "dpm++2m-karras", 200),
        ("analytic", "dpm++2m-karras", 500),
        ("analytic", "dpm++2m-sde-karras", 1000),
    ] {
        let text = sampler(path, name, steps);
        if let Err(e) = Experiment::parse(&dir().join("test.toml"), &text) {
            panic!("{name} at {steps} steps on {path}: {e}");
        }
    }
    let e = error_of(&sampler("analytic", "dpm++2m", 1000));
    assert!(
        e.contains("sampler[0].steps")
            && e.contains("DPMSolverMultistepScheduler with 1000 steps visits sigma")
            && e.contains("twice")
            && e.contains("; 999 steps do not"),
        "{e}"
    );
}

/// SD3's scheduler config, as a flow-matching pipeline ships it.
const FLOW_MATCH: &str = r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}"#;

/// On a flow-matching model (its scheduler config a FlowMatch class) short names are flow samplers, as in
/// ComfyUI: `euler` is flow Euler with the model's shift, `dpm++2m` DPM-Solver++ with flow sigmas; a sampler
/// without a flow form is refused at its name, listing those that have one.
#[test]
fn short_names_on_a_flow_matching_model_are_its_flow_samplers() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("scheduler_config.json");
    std::fs::write(&config, FLOW_MATCH).unwrap();
    let with = |name: &str| {
        format!(
            "[model]\npath = \"analytic\"\nprediction_type = \"flow_prediction\"\nscheduler_config = \"{}\"\n\
             [[sampler]]\nname = \"{name}\"\nsteps = 10\n",
            config.display()
        )
    };
    let e = Experiment::parse(&dir().join("test.toml"), &with("euler")).unwrap();
    let resolved = &e.samplers[0].resolved;
    assert_eq!(
        resolved.config.class_name(),
        "FlowMatchEulerDiscreteScheduler"
    );
    assert_eq!(resolved.settings["shift"], serde_json::json!(3.0));
    let e = Experiment::parse(&dir().join("test.toml"), &with("dpm++2m")).unwrap();
    let resolved = &e.samplers[0].resolved;
    assert_eq!(resolved.config.class_name(), "DPMSolverMultistepScheduler");
    assert_eq!(resolved.settings["flow_shift"], serde_json::json!(3.0));
    assert_eq!(
        resolved.settings["use_flow_sigmas"],
        serde_json::json!(true)
    );
    let err = error_of(&with("ddim"));
    assert!(err.contains("`sampler[0].name`"), "{err}");
    assert!(
        err.contains("`ddim` has no flow-matching form, and the model is a flow-matching one"),
        "{err}"
    );
    assert!(err.contains("euler, euler-karras, heun"), "{err}");
}

/// `[[sampler]] shift` is the flow sampler's shift: `shift` for flow Euler and Heun, `flow_shift` for the
/// multistep solvers; on a sampler that is not a flow one it is an error at that key.
#[test]
fn shift_sets_each_flow_samplers_own_key() {
    let with = |prediction: &str, name: &str| {
        format!(
            "[model]\npath = \"analytic\"\n{prediction}[[sampler]]\nname = \"{name}\"\nsteps = 10\nshift = 3\n"
        )
    };
    let flow = "prediction_type = \"flow_prediction\"\n";
    for (name, key) in [
        ("euler", "shift"),
        ("heun", "shift"),
        ("unipc", "flow_shift"),
    ] {
        let e = Experiment::parse(&dir().join("test.toml"), &with(flow, name)).unwrap();
        let resolved = &e.samplers[0].resolved;
        assert_eq!(resolved.settings[key], serde_json::json!(3.0), "{name}");
        assert!(e.warnings.is_empty(), "{name}: {:?}", e.warnings);
    }
    let err = error_of(&with("", "euler"));
    assert!(err.contains("`sampler[0].shift`"), "{err}");
    assert!(
        err.contains("EulerDiscreteScheduler here is not one"),
        "{err}"
    );
    // A list is an axis: a variant per value, labelled by it.
    let e = Experiment::parse(
        &dir().join("test.toml"),
        &with(flow, "dpm++2m").replace("shift = 3", "shift = [1, 3.5]"),
    )
    .unwrap();
    let variants: Vec<(&str, Option<f64>)> = (e.samplers[0].variants.iter())
        .map(|v| (v.label.as_str(), v.shift))
        .collect();
    assert_eq!(
        variants,
        [("dpm++2m s1", Some(1.0)), ("dpm++2m s3.5", Some(3.5))]
    );
    assert_eq!(
        e.samplers[0].variants[1].resolved.settings["flow_shift"],
        serde_json::json!(3.5)
    );
    for (list, says) in [
        ("[]", "non-empty list"),
        ("[1, 0]", "positive number"),
        ("[2, 2]", "shift 2 is listed twice"),
        ("\"3\"", "must be a flow shift or a list of them"),
    ] {
        let err = error_of(&with(flow, "euler").replace("shift = 3", &format!("shift = {list}")));
        assert!(err.contains(says), "{list}: {err}");
    }
}

/// EDM samplers precondition for EDM-trained models; on a variance-preserving model they run but give
/// nothing meaningful, and the sampler's name says so. A model whose own config is an EDM class is not warned.
#[test]
fn edm_samplers_on_a_variance_preserving_model_are_warned_at_the_name() {
    let path = dir().join("test.toml");
    let p = path.display().to_string();
    let edm = |model: &str, name: &str| {
        format!(
            "[model]\n{model}sample_shape = [1, 4, 4]\n[[sampler]]\nname = \"{name}\"\nsteps = 8\n"
        )
    };
    let analytic = Experiment::parse(&path, &edm("path = \"analytic\"\n", "edm-euler")).unwrap();
    assert_eq!(
        analytic.warnings_for(0),
        [format!(
            "{p}:5:8: `sampler[0].name`: EDMEulerScheduler is for EDM-trained models; the analytic model is a \
             variance-preserving one, on which its samples are meaningless"
        )]
    );
    let sd1 =
        Experiment::parse(&path, &edm(&format!("path = \"{SD1}\"\n"), "edm-dpm++2m")).unwrap();
    let warned = sd1.warnings_for(0);
    assert!(
        warned.iter().any(|w| w.contains(
            "`sampler[0].name`: EDMDPMSolverMultistepScheduler is for EDM-trained models; the model's scheduler \
             config is PNDMScheduler's, so the model is a variance-preserving one"
        )),
        "{warned:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("scheduler_config.json");
    std::fs::write(
        &config,
        r#"{"_class_name": "EDMEulerScheduler", "sigma_data": 0.5}"#,
    )
    .unwrap();
    let unet = "path = \"../tests/data/onnx/tiny_f32.onnx\"\n";
    let bare = Experiment::parse(&path, &edm(unet, "edm-euler")).unwrap();
    let warned = bare.warnings_for(0);
    assert!(
        warned.iter().any(|w| w.contains(
            "no scheduler config says the model is EDM-trained, so it is taken to be a variance-preserving one"
        )),
        "{warned:?}"
    );
    let model = format!("{unet}scheduler_config = \"{}\"\n", config.display());
    let trained = Experiment::parse(&path, &edm(&model, "edm-euler")).unwrap();
    assert!(trained.warnings.is_empty(), "{:?}", trained.warnings_for(0));
}

/// `[model.cuda]` and `[model.tensorrt]` take ONNX Runtime's provider options by their key names; TF32 is off
/// unless asked for (so GPU fp32 matches the CPU parity tests), and a value ONNX Runtime does not take is an
/// error at its key.
#[test]
fn cuda_and_tensorrt_options_use_onnx_runtimes_keys() {
    let model = |tables: &str| {
        format!(
            "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\n{tables}[[sampler]]\nname = \"ddim\"\nsteps = 4\n"
        )
    };
    let e = Experiment::parse(&dir().join("test.toml"), &model("")).unwrap();
    assert!(!e.model.cuda.tf32, "TF32 off by default");
    let text = model(
        "[model.cuda]\ntf32 = true\ncudnn_conv_algo_search = \"heuristic\"\narena_extend_strategy = \"same_as_requested\"\n\
         gpu_mem_limit = 8000000000\nprefer_nhwc = true\n[model.tensorrt]\nfp16 = true\nbuilder_optimization_level = 5\n",
    );
    let e = Experiment::parse(&dir().join("test.toml"), &text).unwrap();
    let c = &e.model.cuda;
    assert!(c.tf32 && c.prefer_nhwc && !c.cuda_graph);
    assert_eq!(c.cudnn_conv_algo_search.as_deref(), Some("heuristic"));
    assert_eq!(
        c.arena_extend_strategy.as_deref(),
        Some("same_as_requested")
    );
    assert_eq!(c.gpu_mem_limit, Some(8_000_000_000));
    assert_eq!(e.model.tensorrt_builder_optimization_level, Some(5));
    assert_eq!(
        e.model.tensorrt_layer_norm_fp32_fallback, None,
        "on with fp16 when unset"
    );
    let e = error_of(&model(
        "[model.cuda]\ncudnn_conv_algo_search = \"fastest\"\n",
    ));
    assert!(
        e.contains("`model.cuda.cudnn_conv_algo_search`: \"fastest\" is not one of exhaustive, heuristic, default"),
        "{e}"
    );
    let e = error_of(&model("[model.tensorrt]\nbuilder_optimization_level = 7\n"));
    assert!(
        e.contains("`model.tensorrt.builder_optimization_level`: must be from 0 to 5"),
        "{e}"
    );
    let e = error_of(&model("[model.cuda]\ntf_32 = true\n"));
    assert!(
        e.contains("tf_32") && e.contains("did you mean `tf32`"),
        "{e}"
    );
}

/// `true_cfg_scale` is FLUX's classifier-free guidance beside the guidance it embeds: on another model it is
/// an error naming `guidance`, and without a negative prompt an error, as FluxPipeline ignores it then.
#[test]
fn true_cfg_scale_is_for_flux_with_a_negative_prompt() {
    let flux = "../tests/data/pipelines/flux";
    let with = |path: &str, negative: &str| {
        format!(
            "[model]\npath = \"{path}\"\n[conditioning]\nprompts = [\"a cat\"]\n{negative}[[sampler]]\nname = \"euler\"\n\
             steps = 4\nguidance = 3.5\ntrue_cfg_scale = 4\n"
        )
    };
    let e = Experiment::parse(
        &dir().join("test.toml"),
        &with(flux, "negative_prompt = \"blurry\"\n"),
    )
    .unwrap();
    assert_eq!(e.samplers[0].true_cfg_scale, 4.0);
    let err = error_of(&with(flux, ""));
    assert!(err.contains("`sampler[0].true_cfg_scale`"), "{err}");
    assert!(
        err.contains("needs [conditioning] negative_prompt"),
        "{err}"
    );
    let err = error_of(&with(SD1, "negative_prompt = \"blurry\"\n"));
    assert!(
        err.contains("`guidance` is classifier-free guidance"),
        "{err}"
    );
}

/// Any sampler setting given as a list, a list of schedules and a list of guidance methods are axes: every
/// combination is a variant, labelled by the values that vary, each value its own results column.
#[test]
fn setting_lists_are_axes_of_every_combination() {
    let text = "[model]\npath = \"analytic\"\n[[sampler]]\nname = \"dpm++2s-a\"\nsteps = 10\n\
                schedule = [\"karras\", \"kl_optimal\"]\nsettings = { eta = [0.5, 1.0], s_noise = 1.0 }\n\
                guidance_method = [\"cfg\", \"apg\"]\nguidance_settings = { momentum = -0.5 }\n";
    let e = Experiment::parse(&dir().join("test.toml"), text).unwrap();
    let labels: Vec<&str> = e.samplers[0]
        .variants
        .iter()
        .map(|v| v.label.as_str())
        .collect();
    assert_eq!(
        labels,
        [
            "dpm++2s-a karras eta=0.5 cfg",
            "dpm++2s-a karras eta=0.5 apg momentum=-0.5",
            "dpm++2s-a karras eta=1.0 cfg",
            "dpm++2s-a karras eta=1.0 apg momentum=-0.5",
            "dpm++2s-a kl_optimal eta=0.5 cfg",
            "dpm++2s-a kl_optimal eta=0.5 apg momentum=-0.5",
            "dpm++2s-a kl_optimal eta=1.0 cfg",
            "dpm++2s-a kl_optimal eta=1.0 apg momentum=-0.5",
        ]
    );
    let last = &e.samplers[0].variants[7];
    assert_eq!(last.resolved.settings["eta"], serde_json::json!(1.0));
    assert_eq!(last.resolved.settings["s_noise"], serde_json::json!(1.0));
    assert_eq!(
        last.resolved.settings["sigma_schedule"],
        serde_json::json!("kl_optimal")
    );
    let columns: Vec<&str> = last.axes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(columns, ["schedule", "eta", "guidance_method"]);
    // Settings whose value is a list are not axes.
    let sigmas = "[model]\npath = \"analytic\"\n[[sampler]]\nname = \"euler\"\nsteps = 2\n\
                  settings = { sigmas = [10.0, 1.0] }\n";
    let e = Experiment::parse(&dir().join("test.toml"), sigmas).unwrap();
    assert_eq!(e.samplers[0].variants.len(), 1);
}

/// Guidance methods, their settings and intervals are checked where they are written.
#[test]
fn guidance_methods_and_intervals_are_checked() {
    let with = |extra: &str| {
        format!(
            "[model]\npath = \"analytic\"\n[[sampler]]\nname = \"euler\"\nsteps = 10\nguidance = 3\n{extra}"
        )
    };
    for (extra, place, says) in [
        (
            "guidance_method = \"apj\"",
            "sampler[0].guidance_method",
            "unknown guidance method \"apj\"; use one of cfg, apg,",
        ),
        (
            "guidance_method = \"apg\"\nguidance_settings = { etta = 1 }",
            "sampler[0].guidance_settings",
            "apg has no setting \"etta\"; it has eta, momentum, norm_threshold",
        ),
        (
            "guidance_method = \"cfg-norm\"\nguidance_settings = { strength = \"x\" }",
            "sampler[0].guidance_settings",
            "must be a number",
        ),
        (
            "guidance_method = [\"cfg\", \"cfg-norm\"]\nguidance_settings = { momentum = 1 }",
            "sampler[0].guidance_settings",
            "no guidance method named here has the setting \"momentum\"",
        ),
        (
            "guidance_method = [\"apg\", \"apg\"]",
            "sampler[0].guidance_method",
            "\"apg\" is listed twice",
        ),
        (
            "guidance_interval = [5, 1]",
            "sampler[0].guidance_interval",
            "[lo, hi] (sigmas, lo ≤ hi)",
        ),
        (
            "guidance_interval = { start = 0.2 }",
            "sampler[0].guidance_interval",
            "{ start = 0.2, stop = 0.8 }",
        ),
        (
            "settings = { eta = [] }",
            "sampler[0].settings.eta",
            "list at least one value",
        ),
        (
            "settings = { s_churn = [1, 1] }",
            "sampler[0].settings.s_churn",
            "1 is listed twice",
        ),
    ] {
        let err = error_of(&with(extra));
        assert!(err.contains(&format!("`{place}`")), "{extra}: {err}");
        assert!(err.contains(says), "{extra}: {err}");
    }
    let e = Experiment::parse(
        &dir().join("test.toml"),
        &with("guidance_interval = { start = 0.2, stop = 0.8 }"),
    )
    .unwrap();
    assert_eq!(
        e.samplers[0].variants[0].guidance_method.label(),
        "cfg steps 0.2–0.8"
    );
}

/// `init_image` and `strength`: an axis named `s0.6`; each without the other, a value out of (0, 1], a
/// strength that runs no step, a sampler that cannot start part-way and a list of the wrong length are errors.
#[test]
fn init_image_and_strength_make_img2img_cells() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipelines");
    let start = data.join("sd1/reference/img2img/start.png");
    let with = |conditioning: &str, sampler: &str| {
        format!(
            "[model]\npath = {:?}\n[conditioning]\nprompts = [\"a\", \"b\"]\n{conditioning}[sampling]\nseeds = 3\n\
             [[sampler]]\nname = \"ddim\"\nsteps = 10\n{sampler}",
            data.join("sd1")
        )
    };
    let image = format!("init_image = {start:?}\n");
    let e = Experiment::parse(
        &dir().join("test.toml"),
        &with(&image, "strength = [0.3, 0.6]\n"),
    )
    .unwrap();
    let labels: Vec<(&str, Option<f64>)> = (e.samplers[0].variants.iter())
        .map(|v| (v.label.as_str(), v.strength))
        .collect();
    assert_eq!(labels, [("ddim s0.3", Some(0.3)), ("ddim s0.6", Some(0.6))]);
    let per = |n: usize| {
        format!(
            "init_image = [{}]\n",
            vec![format!("{start:?}"); n].join(", ")
        )
    };
    let spec = |text: &str| {
        Experiment::parse(&dir().join("test.toml"), text)
            .unwrap()
            .conditioning
            .unwrap()
            .init_per
    };
    use difflab::experiment::InitPer;
    assert_eq!(spec(&with(&per(2), "strength = 0.5\n")), InitPer::Condition);
    assert_eq!(spec(&with(&per(3), "strength = 0.5\n")), InitPer::Seed);
    let at = format!("{}:", dir().join("test.toml").display());
    let missing = format!("init_image = {:?}\n", data.join("nothing.png"));
    assert_errors(&[
        (
            with("", "strength = 0.5\n"),
            at.clone(),
            "strength goes with [conditioning] init_image",
        ),
        (with(&image, ""), at.clone(), "give this sampler a strength"),
        (
            with(&image, "strength = 1.5\n"),
            at.clone(),
            "strength must be a number in (0, 1]",
        ),
        (
            with(&image, "strength = [0.5, 0.5]\n"),
            at.clone(),
            "strength 0.5 is listed twice",
        ),
        (
            with(&image, "strength = 0.05\n"),
            at.clone(),
            "runs no step (int(10 × 0.05) = 0)",
        ),
        (
            with(&per(4), "strength = 0.5\n"),
            at.clone(),
            "4 images: give one, one per prompt",
        ),
        (
            with(&missing, "strength = 0.5\n"),
            at.clone(),
            "no start image at",
        ),
        (
            with(&format!("mask = {start:?}\n"), "strength = 0.5\n"),
            at.clone(),
            "a mask goes with `init_image`",
        ),
        (
            with(
                &format!("{}mask = [{start:?}, {start:?}]\n", per(3)),
                "strength = 0.5\n",
            ),
            at.clone(),
            "2 masks for 3 start images",
        ),
        (
            with(
                &image,
                "strength = 0.5\nsettings = { skip_prk_steps = false }\n",
            )
            .replace("ddim", "pndm"),
            at.clone(),
            "cannot start part-way",
        ),
    ]);
}

/// `control_image`, `control_scale` (an axis, cells named `cs1.5`) and the ControlNet's window; each setting
/// without a control image, a window out of order and a scale listed twice are errors at the key.
#[test]
fn control_images_and_scales_make_controlnet_cells() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipelines");
    let control = data.join("sd1-controlnet/reference/controlnet/control.png");
    let with = |conditioning: &str, sampler: &str| {
        format!(
            "[model]\npath = {:?}\n[conditioning]\nprompts = [\"a\"]\n{conditioning}[sampling]\nseeds = 2\n\
             [[sampler]]\nname = \"ddim\"\nsteps = 10\n{sampler}",
            data.join("sd1-controlnet")
        )
    };
    let image = format!("control_image = {control:?}\n");
    let e = Experiment::parse(
        &dir().join("test.toml"),
        &with(&image, "control_scale = [0.5, 1.5]\n"),
    )
    .unwrap();
    let labels: Vec<(&str, Option<Vec<f64>>)> = (e.samplers[0].variants.iter())
        .map(|v| (v.label.as_str(), v.control_scale.clone()))
        .collect();
    assert_eq!(
        labels,
        [
            ("ddim cs0.5", Some(vec![0.5])),
            ("ddim cs1.5", Some(vec![1.5]))
        ]
    );
    assert_eq!(e.samplers[0].control_windows, [(0.0, 1.0)]);
    let at = format!("{}:", dir().join("test.toml").display());
    assert_errors(&[
        (
            with("", "control_scale = 1\n"),
            at.clone(),
            "control_scale goes with [conditioning] control_image",
        ),
        (
            with("", "control_guidance_end = 0.5\n"),
            at.clone(),
            "control_guidance_end goes with",
        ),
        (
            with(
                &image,
                "control_guidance_start = 0.6\ncontrol_guidance_end = 0.4\n",
            ),
            at.clone(),
            "0 ≤ start < end ≤ 1",
        ),
        (
            with(&image, "control_scale = [1, 1]\n"),
            at.clone(),
            "control_scale 1 is listed twice",
        ),
    ]);
}

/// Several ControlNets: one `[[conditioning.controlnet]]` table each; a scale or window is one number for all or a
/// list with one per ControlNet (cells named `cs1+0.5`); a list of another length, both ways of giving control
/// images, and a scale list inside a one-ControlNet run are errors at the key.
#[test]
fn several_controlnets_take_a_table_each_and_scales_per_controlnet() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipelines");
    let refs = data.join("sd1-controlnet/reference/controlnet");
    let ring = refs.join("control.png");
    let with = |conditioning: &str, sampler: &str| {
        format!(
            "[model]\npath = {:?}\n[conditioning]\nprompts = [\"a\"]\n{conditioning}[sampling]\nseeds = 2\n\
             [[sampler]]\nname = \"ddim\"\nsteps = 10\n{sampler}",
            data.join("sd1-controlnet")
        )
    };
    let two = format!(
        "[[conditioning.controlnet]]\nimage = {ring:?}\n[[conditioning.controlnet]]\nimage = [{ring:?}, {ring:?}]\n"
    );
    let e = Experiment::parse(
        &dir().join("test.toml"),
        &with(
            &two,
            "control_scale = [[1, 0.5], 2]\ncontrol_guidance_start = [0, 0.2]\ncontrol_guidance_end = 0.9\n",
        ),
    )
    .unwrap();
    let controls = &e.conditioning.as_ref().unwrap().controls;
    assert_eq!(controls.len(), 2);
    assert_eq!(
        (controls[0].per, controls[1].per),
        (InitPer::All, InitPer::Seed)
    );
    let labels: Vec<(&str, Option<Vec<f64>>)> = (e.samplers[0].variants.iter())
        .map(|v| (v.label.as_str(), v.control_scale.clone()))
        .collect();
    assert_eq!(
        labels,
        [
            ("ddim cs1+0.5", Some(vec![1.0, 0.5])),
            ("ddim cs2", Some(vec![2.0]))
        ]
    );
    assert_eq!(e.samplers[0].control_windows, [(0.0, 0.9), (0.2, 0.9)]);
    let at = format!("{}:", dir().join("test.toml").display());
    let image = format!("control_image = {ring:?}\n");
    assert_errors(&[
        (
            with(&two, "control_scale = [[1, 0.5, 2]]\n"),
            at.clone(),
            "3 values for 2 ControlNet(s)",
        ),
        (
            with(&two, "control_guidance_start = [0, 0.1, 0.2]\n"),
            at.clone(),
            "3 values for 2 ControlNet(s)",
        ),
        (
            with(&image, "control_scale = [[1, 0.5]]\n"),
            at.clone(),
            "2 values for 1 ControlNet(s)",
        ),
        (
            with(&format!("{image}{two}"), ""),
            at.clone(),
            "give control_image (one ControlNet) or [[conditioning.controlnet]] tables",
        ),
        (
            with("controlnet = []\n", ""),
            at.clone(),
            "list one [[conditioning.controlnet]] table per ControlNet",
        ),
        (
            with("[[conditioning.controlnet]]\nimage = \"nowhere.png\"\n", ""),
            at.clone(),
            "no control image at",
        ),
    ]);
}
