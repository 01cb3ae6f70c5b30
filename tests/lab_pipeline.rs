//! The lab on the checked-in Stable Diffusion exports (tests/data/pipelines): a pipeline folder as the model,
//! prompts, a negative prompt, guidance as a swept axis and `init_noise` reproduce Optimum's own pipeline
//! images through `--save-samples`; the class-conditional model runs classes with guidance; bad conditioning
//! is one clear error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::experiment::Experiment;
use difflab::lab::{LabEvent, Results, RunOptions, start};
use ndarray::{ArrayD, Axis};
use ndarray_npy::{read_npy, write_npy};
use serde_json::Value;
use support::{max_difference, run, temp_dir};

mod support;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipelines")
}

/// The samples `--save-samples` wrote for the cell called `name`.
fn cell_samples(dir: &Path, results: &Results, name: &str) -> ArrayD<f32> {
    let cell = results.cells.iter().find(|c| c.name == name).unwrap();
    let stem = cell
        .grid
        .trim_start_matches("cells/")
        .trim_end_matches(".png");
    read_npy(dir.join(format!("out/samples/{stem}.npy"))).unwrap()
}

fn reference(folder: &str) -> Value {
    let path = data().join(folder).join("reference/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Row `row` of the reference's initial latents as a one-seed `init_noise` file.
fn init_noise(dir: &Path, folder: &str, row: usize) -> PathBuf {
    let all: ArrayD<f32> =
        read_npy(data().join(folder).join("reference/initial_latents.npy")).unwrap();
    let one = all.index_axis(Axis(0), row).insert_axis(Axis(0)).to_owned();
    let path = dir.join(format!("latents{row}.npy"));
    write_npy(&path, &one).unwrap();
    path
}

/// The reference image `row` of a case, NHWC → CHW.
fn reference_image(case: &Value, row: usize) -> ArrayD<f32> {
    let images: ArrayD<f32> =
        read_npy(data().join(case["images"]["file"].as_str().unwrap())).unwrap();
    let image = images.index_axis(Axis(0), row);
    image
        .permuted_axes(vec![2, 0, 1])
        .insert_axis(Axis(0))
        .to_owned()
}

fn sampler_of(case: &Value) -> &'static str {
    let name = case["name"].as_str().unwrap();
    // SD3's cases are named by their guidance: its pipeline's own sampler, flow Euler.
    if name.starts_with('g') {
        return "name = \"euler\"";
    }
    if name.starts_with("ddim") {
        "name = \"ddim\"\nsettings = { clip_sample = false, set_alpha_to_one = false }"
    } else {
        "name = \"dpm++2m\""
    }
}

/// One prompt of a reference case through the whole lab, compared with Optimum's image.
fn check_case(folder: &str, case_name: &str, row: usize) {
    let dir = temp_dir(&format!("difflab-pipe-{folder}-{case_name}-{row}"));
    let sampling = format!(
        "seeds = 1\ninit_noise = {:?}\n",
        init_noise(&dir, folder, row)
    );
    check_case_with(&dir, folder, case_name, row, &sampling);
}

/// The reference's latents are `torch.randn([2, 4, 8, 8], generator=manual_seed(1234 + 7))`: their first row is
/// `torch.randn([1, 4, 8, 8])` under that seed, so `noise = "torch"` and the seed alone reproduce Optimum's image.
#[test]
fn torch_noise_reproduces_optimums_image_from_the_seed_alone() {
    let dir = temp_dir("difflab-pipe-torch-noise");
    let sampling = "seeds = [1241]\nnoise = \"torch\"\n";
    check_case_with(&dir, "sd1", "ddim_g7.5", 0, sampling);
}

fn check_case_with(dir: &Path, folder: &str, case_name: &str, row: usize, sampling: &str) {
    check_models_against(dir, folder, folder, case_name, row, sampling, 1e-3);
}

/// The float16 export of sd1 (`make_fp16.py`: every network's inputs and outputs float16, the text encoder's
/// hidden states too) runs through the whole lab and decodes Optimum's fp32 images to within 1e-2.
#[test]
fn an_fp16_pipeline_folder_matches_the_fp32_pipelines_images() {
    for (case, row) in [("ddim_g7.5", 0), ("dpmpp_2m_g7.5", 1)] {
        let dir = temp_dir(&format!("difflab-pipe-fp16-{case}"));
        let sampling = format!(
            "seeds = 1\ninit_noise = {:?}\n",
            init_noise(&dir, "sd1", row)
        );
        check_models_against(&dir, "sd1-fp16", "sd1", case, row, &sampling, 1e-2);
    }
}

/// Runs pipeline folder `models` on a case of `folder`'s reference and compares the image.
fn check_models_against(
    dir: &Path,
    models: &str,
    folder: &str,
    case_name: &str,
    row: usize,
    sampling: &str,
    tolerance: f32,
) {
    let reference = reference(folder);
    let case = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == case_name)
        .unwrap();
    let prompt = reference["prompts"][row].as_str().unwrap();
    let negative = match case["negative_prompt"].as_str() {
        Some(n) => format!("negative_prompt = {n:?}\n"),
        None => match reference["negative_prompt"].as_str() {
            Some(n) => format!("negative_prompt = {n:?}\n"),
            None => String::new(),
        },
    };
    let negative = match reference["max_sequence_length"].as_u64() {
        Some(n) => format!("{negative}max_sequence_length = {n}\n"),
        None => negative,
    };
    let g = case["guidance_scale"].as_f64().unwrap();
    let true_cfg = match case["true_cfg_scale"].as_f64() {
        Some(t) if t != 1.0 => format!("true_cfg_scale = {t}\n"),
        _ => String::new(),
    };
    // FLUX has no sample size in its config, and Sana's reference is not square: the reference's latent shape.
    let shape = match reference["initial_latents"]["shape"].as_array() {
        Some(s) if ["flux", "sana"].contains(&models) => {
            format!("sample_shape = [{}, {}, {}]\n", s[1], s[2], s[3])
        }
        _ => String::new(),
    };
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\n{shape}providers = [\"cpu\"]\n[conditioning]\nprompts = [{prompt:?}]\n{negative}\
         [sampling]\n{sampling}[[sampler]]\n{}\nsteps = 4\nguidance = [{g}]\n{true_cfg}",
        data().join(models),
        sampler_of(case),
    );
    let results = run(dir, &text).unwrap();
    let cell = &results.cells[0];
    assert!(cell.error.is_none(), "{:?}", cell.error);
    assert_eq!(cell.guidance, g);
    assert_eq!(cell.prompts, vec![prompt.to_string()]);
    let file = dir.join("out/samples").join(format!(
        "{}.npy",
        cell.grid
            .trim_start_matches("cells/")
            .trim_end_matches(".png")
    ));
    let ours: ArrayD<f32> = read_npy(&file).unwrap();
    let want = reference_image(case, row);
    assert_eq!(ours.shape(), want.shape());
    let diff = ours
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    println!("{models} on {folder} {case_name} {prompt:?}: max image diff {diff:.2e}");
    assert!(
        diff < tolerance,
        "{models} on {folder} {case_name}: image differs by {diff}"
    );
    check_final_latents(&file, case, row, tolerance);
}

/// `--save-samples` writes a latent model's final latents beside its images (`latents/<cell>.npy`, [N, C, H,
/// W]): they equal the reference pipeline's where it keeps them in that layout (FLUX packs its own).
fn check_final_latents(images: &Path, case: &Value, row: usize, tolerance: f32) {
    let file = images
        .parent()
        .unwrap()
        .with_file_name("latents")
        .join(images.file_name().unwrap());
    let ours: ArrayD<f32> = read_npy(&file).unwrap();
    assert_eq!(ours.ndim(), 4, "{}", file.display());
    let want: ArrayD<f32> =
        read_npy(data().join(case["final_latents"]["file"].as_str().unwrap())).unwrap();
    if want.shape()[1..] != ours.shape()[1..] {
        return;
    }
    let want = want
        .index_axis(Axis(0), row)
        .insert_axis(Axis(0))
        .to_owned();
    let diff = max_difference(&ours, &want);
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
    assert!(
        diff < tolerance * scale,
        "final latents differ by {diff} (largest {scale})"
    );
}

#[test]
fn sd1_ddim_with_and_without_guidance_equals_optimum() {
    check_case("sd1", "ddim_g1", 0);
    check_case("sd1", "ddim_g7.5", 1);
}

#[test]
fn sd1_dpmpp_2m_guided_equals_optimum() {
    check_case("sd1", "dpmpp_2m_g7.5", 0);
}

#[test]
fn sd2_v_prediction_and_sdxl_equal_optimum() {
    check_case("sd2v", "dpmpp_2m_g7.5", 1);
    check_case("sdxl", "ddim_g7.5", 0);
    check_case("sdxl", "ddim_g7.5_noneg", 1);
}

/// SD3 (a transformer on two CLIPs and T5, flow matching, a 16-channel VAE with a shift factor) equals
/// Optimum's `ORTStableDiffusion3Pipeline` with and without classifier-free guidance, with a negative prompt
/// and with the empty one, under its own sampler (flow Euler, shift 3).
#[test]
fn sd3_equals_optimum_with_and_without_guidance() {
    check_case("sd3", "g1", 0);
    check_case("sd3", "g5", 1);
    check_case("sd3", "g5_noneg", 0);
}

/// Sana (Gemma 2 with its complex human instruction, the text attention mask, a DC-AE with no shift, a
/// non-square image) equals Optimum's `ORTSanaPipeline`, with and without guidance.
#[test]
fn sana_equals_optimum_with_and_without_guidance() {
    check_case("sana", "g1", 0);
    check_case("sana", "g4.5", 1);
}

/// FLUX.1-dev's form (2×2-packed latents, int64 ids, the timestep over 1000, guidance embedded rather than
/// classifier-free, its own sigmas shifted by the image size's mu) equals Optimum's `ORTFluxPipeline`.
#[test]
fn flux_with_embedded_guidance_equals_optimum() {
    check_case("flux", "g3.5", 0);
    check_case("flux", "g3.5", 1);
}

/// FLUX's true CFG (`true_cfg_scale` with a negative prompt: a second prediction on the negative prompt,
/// `neg + s·(pos − neg)`) on top of its embedded guidance equals Optimum's.
#[test]
fn flux_true_cfg_equals_optimum() {
    check_case("flux", "g3.5_truecfg4", 0);
    check_case("flux", "g3.5_truecfg4", 1);
}

#[test]
fn guidance_is_an_axis_and_prompts_are_rows() {
    let dir = temp_dir("difflab-pipe-axes");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [\"a red circle\", \"a cat\"]\n\
         [sampling]\nseeds = 2\n[[sampler]]\nname = \"ddim\"\nsteps = 3\nguidance = [1, 4.5]\nguidance_rescale = 0.5\n",
        data().join("sd1")
    );
    let results = run(&dir, &text).unwrap();
    let names: Vec<&str> = results.cells.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ddim 3 g1", "ddim 3 g4.5"]);
    for cell in &results.cells {
        assert_eq!(cell.samples, 4, "two prompts × two seeds");
        let grid = image::open(dir.join("out").join(&cell.grid)).unwrap();
        assert!(
            grid.width() > 2 * 64 && grid.height() > 2 * 64,
            "a 2×2 grid of 64² images"
        );
    }
    let csv = std::fs::read_to_string(dir.join("out/results.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains(
        ",guidance,guidance_rescale,guidance_method,shift,true_cfg_scale,prompt,classes,"
    ));
    assert!(
        csv.contains(",4.5,0.5,cfg,,,a red circle | a cat,,cpu,done,"),
        "{csv}"
    );
}

/// Guidance methods run on a real pipeline, each a column: ComfyUI's APG with eta 1, no momentum and no norm
/// clipping is CFG at scale g + 1 (`cond + g·(cond − uncond)`), made on the denoised predictions and turned
/// back into the U-Net's ε, so its samples equal plain CFG's at 4.5 for g = 3.5; a guidance interval that
/// covers every σ changes nothing, one that covers none leaves the conditional prediction alone (g = 1).
#[test]
fn guidance_methods_are_an_axis_equal_to_cfg_where_they_should_be() {
    let dir = temp_dir("difflab-pipe-methods");
    let sampler = |g: f64, extra: &str| {
        format!("[[sampler]]\nname = \"dpm++2m\"\nsteps = 4\nguidance = {g}\n{extra}")
    };
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [\"a cat\"]\n\
         [sampling]\nseeds = 2\n{}{}{}{}",
        data().join("sd1"),
        sampler(4.5, "label = \"cfg\"\n"),
        sampler(1.0, "label = \"plain\"\n"),
        sampler(
            3.5,
            "label = \"m\"\nguidance_method = [\"apg\", \"cfg-norm\"]\n\
             guidance_settings = { eta = 1.0, norm_threshold = 1e9, momentum = 0.0 }\n"
        ),
        sampler(4.5, "label = \"window\"\nguidance_interval = [0, 1e6]\n")
            + &sampler(4.5, "label = \"never\"\nguidance_interval = [1e6, 1e7]\n"),
    );
    let results = run(&dir, &text).unwrap();
    let names: Vec<&str> = results.cells.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cfg 4 g4.5",
            "plain 4 g1",
            "m apg norm_threshold=1000000000.0 4 g3.5",
            "m cfg-norm 4 g3.5",
            "window 4 g4.5",
            "never 4 g4.5"
        ]
    );
    let samples = |name: &str| cell_samples(&dir, &results, name);
    let close = max_difference;
    let cfg = samples("cfg 4 g4.5");
    assert!(close(&samples("m apg norm_threshold=1000000000.0 4 g3.5"), &cfg) < 1e-4);
    assert!(
        close(&samples("m cfg-norm 4 g3.5"), &cfg) > 1e-3,
        "CFG-Norm changes the samples"
    );
    assert!(close(&samples("window 4 g4.5"), &cfg) < 1e-6);
    assert!(close(&samples("never 4 g4.5"), &samples("plain 4 g1")) < 1e-6);
    let csv = std::fs::read_to_string(dir.join("out/results.csv")).unwrap();
    assert!(csv.contains(",cfg-norm,"), "{csv}");
    assert!(csv.contains(",\"cfg σ∈[1000000,10000000]\","), "{csv}");
}

/// Perp-Neg makes a third prediction a step, of the empty prompt: without a negative prompt the unconditional
/// prediction is the empty prompt's and Perp-Neg is CFG; with one it differs from CFG with that negative prompt,
/// and each sample is projected on its own (its batch does not change it).
#[test]
fn perp_neg_guides_from_the_empty_prompt() {
    let dir = temp_dir("difflab-pipe-perpneg");
    let text = |negative: &str, seeds: &str| {
        format!(
            "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [\"a cat\"]\n\
             {negative}[sampling]\nseeds = {seeds}\n[[sampler]]\nname = \"dpm++2m\"\nsteps = 4\nguidance = 4\n\
             guidance_method = [\"cfg\", \"perp-neg\"]\n",
            data().join("sd1")
        )
    };
    let samples = |results: &Results, name: &str| cell_samples(&dir, results, name);
    let close = max_difference;
    let plain = run(&dir, &text("", "2")).unwrap();
    assert_eq!(plain.cells[1].name, "dpm++2m perp-neg 4 g4");
    assert!(
        close(
            &samples(&plain, "dpm++2m perp-neg 4 g4"),
            &samples(&plain, "dpm++2m cfg 4 g4")
        ) < 1e-5
    );
    let negative = run(&dir, &text("negative_prompt = \"a red circle\"\n", "2")).unwrap();
    let perp = samples(&negative, "dpm++2m perp-neg 4 g4");
    assert!(close(&perp, &samples(&negative, "dpm++2m cfg 4 g4")) > 1e-3);
    // Seed 1 alone gives the second sample of the pair.
    let alone = run(&dir, &text("negative_prompt = \"a red circle\"\n", "[1]")).unwrap();
    let one = samples(&alone, "dpm++2m perp-neg 4 g4");
    let second = perp.index_axis(Axis(0), 1).to_owned().into_dyn();
    assert!(close(&one.index_axis(Axis(0), 0).to_owned().into_dyn(), &second) < 1e-5);
}

#[test]
fn class_conditional_model_cycles_classes_and_guides_from_the_null_class() {
    let dir = temp_dir("difflab-pipe-classes");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nclasses = [3, 7]\n\
         [sampling]\nseeds = 4\n[[sampler]]\nname = \"ddim\"\nsteps = 3\nguidance = [1, 3]\n",
        data().join("classcond")
    );
    let results = run(&dir, &text).unwrap();
    assert_eq!(results.cells.len(), 2);
    for cell in &results.cells {
        assert!(cell.error.is_none(), "{:?}", cell.error);
        assert_eq!(cell.classes, vec![3, 7]);
        let file = dir.join("out/samples").join(format!(
            "{}.npy",
            cell.grid
                .trim_start_matches("cells/")
                .trim_end_matches(".png")
        ));
        let samples: ArrayD<f32> = read_npy(&file).unwrap();
        assert_eq!(samples.shape(), &[4, 3, 16, 16]);
        assert!(samples.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn bad_conditioning_is_one_clear_error() {
    let dir = temp_dir("difflab-pipe-bad");
    let classcond = data().join("classcond");
    let sd1 = data().join("sd1");
    let unconditional = data().join("../onnx/tiny_f32.onnx");
    let cases = [
        (
            format!(
                "[model]\npath = {classcond:?}\n[conditioning]\nclasses = [12]\n[[sampler]]\nname = \"ddim\"\nsteps = 2\n"
            ),
            "class 12 is out of range",
        ),
        (
            format!(
                "[model]\npath = {classcond:?}\n[conditioning]\nprompts = [\"a cat\"]\n[[sampler]]\nname = \"ddim\"\nsteps = 2\n"
            ),
            "is class-conditional: it takes class labels, not text (it has no encoder_hidden_states input); \
             give [conditioning] classes instead of prompts or embeddings",
        ),
        (
            format!(
                "[model]\npath = {unconditional:?}\nsample_shape = [4, 8, 8]\n[conditioning]\nprompts = [\"a cat\"]\n\
                 [[sampler]]\nname = \"ddim\"\nsteps = 2\n"
            ),
            "is unconditional: it takes no prompts, embeddings or classes; remove [conditioning] from the experiment",
        ),
        (
            format!(
                "[model]\npath = {sd1:?}\n[conditioning]\nclasses = [1]\n[[sampler]]\nname = \"ddim\"\nsteps = 2\n"
            ),
            "takes no class labels",
        ),
        (
            format!("[model]\npath = {sd1:?}\n[[sampler]]\nname = \"ddim\"\nsteps = 2\n"),
            "give [conditioning] prompts",
        ),
        (
            format!(
                "[model]\npath = {classcond:?}\n[[sampler]]\nname = \"ddim\"\nsteps = 2\nguidance = 3\n"
            ),
            "no unconditional input to guide from",
        ),
        (
            format!(
                "[model]\npath = {sd1:?}\n[conditioning]\nprompts = [\"a cat\"]\ncomplex_human_instruction = false\n\
                 [[sampler]]\nname = \"ddim\"\nsteps = 2\n"
            ),
            "complex_human_instruction is Sana's",
        ),
    ];
    for (text, want) in cases {
        let text = format!("output = \"out\"\n{text}");
        let err = run(&dir, &text).unwrap_err();
        assert!(err.contains(want), "{want:?} not in: {err}");
        assert!(
            !err.contains("embeddings = "),
            "no advice that fails next: {err}"
        );
    }
}

#[test]
fn shipped_conditional_experiments_run_every_cell() {
    let experiments = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    for (file, cells, samples) in [("sd-guidance.toml", 6, 8), ("classcond.toml", 4, 8)] {
        let mut experiment = Experiment::load(&experiments.join(file)).unwrap();
        let dir = temp_dir(&format!("difflab-pipe-{file}"));
        experiment.output_dir = dir.clone();
        let lab = start(experiment, RunOptions::default());
        let mut error = None;
        for event in lab.events.iter() {
            if let LabEvent::Finished { error: e, .. } = event {
                error = e;
            }
        }
        lab.join();
        assert_eq!(error, None, "{file}");
        let results = Results::load(&dir.join("results.json"));
        assert_eq!(results.cells.len(), cells, "{file}");
        for cell in &results.cells {
            assert!(
                cell.error.is_none(),
                "{file} {}: {:?}",
                cell.name,
                cell.error
            );
            assert_eq!(cell.samples, samples, "{file} {}", cell.name);
            assert!(dir.join(&cell.grid).is_file());
        }
        assert!(results.cells.iter().any(|c| c.name.ends_with(" g1")));
    }
}

#[test]
fn quality_scores_decoded_images_resized_to_the_feature_network() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for (folder, conditioning) in [
        ("sd1", "prompts = [\"a cat\"]"),
        ("classcond", "classes = [3, 7]"),
    ] {
        let dir = temp_dir(&format!("difflab-pipe-quality-{folder}"));
        let text = format!(
            "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\n{conditioning}\n\
             [sampling]\nseeds = 2\n[[sampler]]\nname = \"ddim\"\nsteps = 2\n\
             [quality]\nfeatures = {:?}\nreference = {:?}\nsamples = 8\nkid_subsets = 2\nkid_subset_size = 4\n",
            data().join(folder),
            models.join("mnist16-features.onnx"),
            models.join("mnist16-reference.npz"),
        );
        let results = run(&dir, &text).unwrap();
        let cell = &results.cells[0];
        assert!(cell.error.is_none(), "{folder}: {:?}", cell.error);
        let fid = cell.score("fid").unwrap_or(f64::NAN);
        assert!(fid.is_finite() && fid > 0.0, "{folder}: FID {fid}");
        assert_eq!(cell.samples, 8);
    }
}

/// The Progress previews of a run, as (cell, step, preview) for the steps that carry one.
fn previews(dir: &Path, text: &str) -> Vec<(usize, usize, Vec<f32>)> {
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    let lab = start(Experiment::load(&path).unwrap(), RunOptions::default());
    let mut out = Vec::new();
    for event in lab.events.iter() {
        match event {
            LabEvent::Progress {
                cell,
                step,
                preview: Some(p),
                ..
            } => out.push((cell, step, p)),
            LabEvent::Finished { error: Some(e), .. } => panic!("{e}"),
            _ => {}
        }
    }
    lab.join();
    out
}

/// Precomputed embeddings on Sana's transformer, which also takes a text mask: every token is taken as real.
#[test]
fn precomputed_embeddings_on_sana_take_every_token_as_real() {
    let dir = temp_dir("difflab-pipe-sana-embeddings");
    let feed = data().join("sana/reference/g1_transformer_step0_in_encoder_hidden_states.npy");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nsample_shape = [4, 16, 32]\n[conditioning]\nembeddings = {feed:?}\n\
         [sampling]\nseeds = 1\n[[sampler]]\nname = \"euler\"\nsteps = 3\n",
        data().join("sana")
    );
    let results = run(&dir, &text).unwrap();
    assert!(
        results.cells[0].error.is_none(),
        "{:?}",
        results.cells[0].error
    );
    assert_eq!(results.cells[0].prompts, vec!["embedding 0", "embedding 1"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sana's latents have no cheap latent→RGB map: without `preview = "decode"` they are decoded anyway, every 5
/// steps, rather than shown as nothing.
#[test]
fn latents_without_a_cheap_map_are_previewed_through_the_decoder() {
    let dir = temp_dir("difflab-pipe-preview-sana");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nsample_shape = [4, 16, 32]\n[conditioning]\nprompts = [\"a cat\"]\n\
         max_sequence_length = 16\n[sampling]\nseeds = 1\n[[sampler]]\nname = \"euler\"\nsteps = 11\n",
        data().join("sana")
    );
    let shown = previews(&dir, &text);
    assert_eq!(shown.iter().map(|p| p.1).collect::<Vec<_>>(), [5, 10]);
    for (_, _, p) in &shown {
        assert_eq!(p.len(), 3 * 32 * 64);
        assert!(p.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn previews_decode_every_k_steps_when_asked_and_use_the_cheap_map_otherwise() {
    let dir = temp_dir("difflab-pipe-preview");
    let exp = |sampling: &str| {
        format!(
            "output = \"out\"\n[model]\npath = {:?}\n[conditioning]\nprompts = [\"a cat\"]\n\
             [sampling]\nseeds = 2\n{sampling}\n[[sampler]]\nname = \"ddim\"\nsteps = 5\n",
            data().join("sd1")
        )
    };
    let approx = previews(&dir, &exp(""));
    assert_eq!(
        approx.iter().map(|p| p.1).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let decoded = previews(&dir, &exp("preview = \"decode\"\npreview_every = 2"));
    // Steps 2 and 4; the last step's samples come decoded with the finished cell.
    assert_eq!(decoded.iter().map(|p| p.1).collect::<Vec<_>>(), [2, 4]);
    // Both at the image size (2 × 3 × 64 × 64), in [-1, 1], and not the same pictures: the map only
    // approximates the decoder.
    for (_, _, p) in approx.iter().chain(&decoded) {
        assert_eq!(p.len(), 2 * 3 * 64 * 64);
        assert!(p.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
    let differ = approx[1]
        .2
        .iter()
        .zip(&decoded[0].2)
        .any(|(a, b)| (a - b).abs() > 1e-3);
    assert!(differ);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The classifier's verdicts on a cell's saved samples, recomputed outside the lab: (predicted, expected) for
/// each sample in the file's order.
fn verdicts(samples: &Path, expected_of: impl Fn(usize, usize) -> usize) -> Vec<(usize, usize)> {
    use difflab::engine::{OnnxFeatures, OnnxOptions, ProviderOptions};
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let options = OnnxOptions {
        providers: ProviderOptions::cpu(),
        ..OnnxOptions::default()
    };
    let mut net = OnnxFeatures::load(models.join("mnist16-features.onnx"), &options, None).unwrap();
    let images: ArrayD<f32> = read_npy(samples).unwrap();
    let (n, shape) = (
        images.shape()[0],
        [images.shape()[1], images.shape()[2], images.shape()[3]],
    );
    let signed: Vec<f32> = images.iter().map(|v| v * 2.0 - 1.0).collect();
    let fitted = difflab::lab::resize::fit(&signed, shape, [1, 16, 16]);
    let rows = net.run(&fitted, n, [1, 16, 16]).unwrap();
    let (logits, k) = rows.logits.unwrap();
    let predicted = difflab::quality::predicted_classes(&logits, k);
    predicted
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, expected_of(i, n)))
        .collect()
}

/// The expected class of sample `i` of `n` in a samples file.
type ExpectedOf = fn(usize, usize) -> usize;

#[test]
fn prompt_accuracy_is_the_classifiers_share_of_the_expected_classes() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    // Prompts with one expected class each; a class-conditional model scores against its own classes.
    let cases: [(&str, &str, &str, ExpectedOf); 2] = [
        (
            "sd1",
            "prompts = [\"a three\", \"a seven\"]",
            "expected_classes = [3, 7]\n",
            |i, n| {
                if i < n / 2 { 3 } else { 7 }
            },
        ),
        ("classcond", "classes = [3, 7]", "", |i, _| {
            if i % 2 == 0 { 3 } else { 7 }
        }),
    ];
    for (folder, conditioning, expected, expected_of) in cases {
        let dir = temp_dir(&format!("difflab-pipe-accuracy-{folder}"));
        let text = format!(
            "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\n{conditioning}\n\
             [sampling]\nseeds = 4\n[[sampler]]\nname = \"ddim\"\nsteps = 2\nguidance = [1, 4]\n\
             [quality]\nfeatures = {:?}\nreference = {:?}\nsamples = 8\nkid_subsets = 2\nkid_subset_size = 4\n\
             {expected}",
            data().join(folder),
            models.join("mnist16-features.onnx"),
            models.join("mnist16-reference.npz"),
        );
        let results = run(&dir, &text).unwrap();
        assert_eq!(results.cells.len(), 2);
        for cell in &results.cells {
            assert!(cell.error.is_none(), "{folder}: {:?}", cell.error);
            let file = dir.join(format!("out/samples/{}.npy", cell.name.replace(' ', "_")));
            let v = verdicts(&file, expected_of);
            let hits = v.iter().filter(|(p, e)| p == e).count();
            let accuracy = cell.score("accuracy").unwrap();
            assert!(
                (accuracy - hits as f64 / v.len() as f64).abs() < 1e-12,
                "{folder} {}",
                cell.name
            );
            assert_eq!(cell.accuracies.len(), 2);
            let mean = cell.accuracies.iter().sum::<f64>() / 2.0;
            assert!(
                (mean - accuracy).abs() < 1e-12,
                "equal samples per condition"
            );
        }
        let csv = std::fs::read_to_string(dir.join("out/results.csv")).unwrap();
        assert!(
            csv.lines()
                .next()
                .unwrap()
                .contains(",kid_std,accuracy,ref_rmse,ref_psnr,guidance,")
        );
        // `difflab run` draws the plots from the results.
        let written = difflab::lab::plots::write_plots(&results.cells, &dir.join("out")).unwrap();
        assert!(
            written
                .iter()
                .any(|w| w.ends_with("quality_vs_guidance.png")),
            "{written:?}"
        );
        assert!(dir.join("out/quality_vs_guidance.png").is_file());
        assert!(dir.join("out/quality_vs_guidance.svg").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn accuracy_without_logits_or_with_a_wrong_name_is_one_clear_error() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let dir = temp_dir("difflab-pipe-accuracy-bad");
    let text = |extra: &str| {
        format!(
            "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\n\
             prompts = [\"a three\"]\n[sampling]\nseeds = 2\n[[sampler]]\nname = \"ddim\"\nsteps = 2\n\
             [quality]\nfeatures = {:?}\nreference = {:?}\nsamples = 2\nkid_subsets = 1\nkid_subset_size = 2\n\
             expected_classes = [3]\n{extra}",
            data().join("sd1"),
            models.join("mnist16-features.onnx"),
            models.join("mnist16-reference.npz"),
        )
    };
    let err = run(&dir, &text("logits = \"scores\"")).unwrap_err();
    assert!(
        err.contains("mnist16-features.onnx")
            && err.contains("[quality] logits = \"scores\"")
            && err.contains("'logits' [batch, 10]"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// numpy saves float64 by default: such embeddings are named with the line that converts them, whether
/// they stand alone or beside prompts.
#[test]
fn float64_embeddings_are_refused_with_how_to_convert_them() {
    let dir = temp_dir("difflab-pipe-f64-embeddings");
    let sd1 = data().join("sd1");
    let path = dir.join("embeddings.npy");
    write_npy(&path, &ndarray::Array3::<f64>::zeros((1, 77, 32))).unwrap();
    let want = format!(
        "{}: the embeddings file is float64 ('<f8'); it must be a float32 .npy [prompts, tokens, width]: \
         convert it with np.save(path, a.astype(np.float32))",
        path.display()
    );
    for prompts in ["", "prompts = [\"a cat\"]\n"] {
        let text = format!(
            "output = \"out\"\n[model]\npath = {sd1:?}\n[conditioning]\n{prompts}embeddings = \"embeddings.npy\"\n\
             [[sampler]]\nname = \"ddim\"\nsteps = 2\n"
        );
        let err = run(&dir, &text).unwrap_err();
        assert!(err.contains(&want), "{prompts:?}: {err}");
    }
}

/// A prompt longer than CLIP's 77 tokens is cut as diffusers cuts it, and the run's log says which part,
/// once per prompt; a prompt that fits is not mentioned.
#[test]
fn a_prompt_longer_than_the_tokenizer_is_cut_with_a_warning_naming_the_cut() {
    let dir = temp_dir("difflab-pipe-long-prompt");
    let sd1 = data().join("sd1");
    let long = format!("{} end of the line", "a cat ".repeat(40));
    let text = format!(
        "output = \"out\"\n[model]\npath = {sd1:?}\n[conditioning]\nprompts = [\"a dog\", {long:?}]\n\
         [sampling]\nseeds = 1\n[[sampler]]\nname = \"ddim\"\nsteps = 1\nguidance = [1.0, 7.5]\n"
    );
    std::fs::write(dir.join("exp.toml"), text).unwrap();
    let lab = start(
        Experiment::load(&dir.join("exp.toml")).unwrap(),
        RunOptions::default(),
    );
    let logs: Vec<String> = lab
        .events
        .iter()
        .filter_map(|e| match e {
            LabEvent::Log(l) if l.contains("longer than the tokenizer") => Some(l),
            _ => None,
        })
        .collect();
    lab.join();
    // BOS + 75 tokens are kept: 37 "a cat" pairs and one more "a"; the rest goes.
    assert_eq!(
        logs,
        [
            "warning: [conditioning] prompts[1] is longer than the tokenizer's 77 tokens; this part was cut \
          off, as diffusers cuts it: \"cat a cat a cat end of the line\""
        ]
    );
}

/// A pipeline folder whose unet/config.json is missing: the error names the file and the key that stands
/// in for it, in the experiment and in `difflab info`.
#[test]
fn a_pipeline_without_its_unet_config_names_the_file_and_sample_shape() {
    let dir = temp_dir("difflab-pipe-no-unet-config");
    let folder = dir.join("sd1");
    std::fs::create_dir_all(folder.join("unet")).unwrap();
    let sd1 = data().join("sd1");
    for part in [
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "vae_decoder",
        "unet/model.onnx",
    ] {
        std::os::unix::fs::symlink(sd1.join(part), folder.join(part)).unwrap();
    }
    let config = folder.join("unet/config.json");
    let text = format!(
        "output = \"out\"\n[model]\npath = {folder:?}\n[conditioning]\nprompts = [\"a cat\"]\n\
         [[sampler]]\nname = \"ddim\"\nsteps = 2\n"
    );
    let err = run(&dir, &text).unwrap_err();
    let dims = format!(
        "{}: the sample input 'sample' has dynamic dims [batch_size, 4, height, width] \
         and {} is missing (its in_channels and sample_size fix them); give them as ",
        folder.join("unet/model.onnx").display(),
        config.display()
    );
    assert_eq!(
        err,
        format!("{dims}`[model] sample_shape = [C, H, W]` in the experiment")
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_difflab"))
        .args(["info", "--ep", "cpu"])
        .arg(&folder)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{dims}`--sample-shape C,H,W`")),
        "{stderr}"
    );
    let shaped = text.replace("[conditioning]", "sample_shape = [4, 8, 8]\n[conditioning]");
    assert!(run(&dir, &shaped).is_ok(), "sample_shape stands in for it");
}

/// Runs `text` with the kept networks of `models`; returns the events.
fn run_kept(
    dir: &Path,
    text: &str,
    models: &difflab::lab::model_cache::ModelCache,
) -> Vec<LabEvent> {
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    let experiment = Experiment::load(&path).unwrap();
    let options = RunOptions {
        save_samples: true,
        models: Some(models.clone()),
        ..RunOptions::default()
    };
    let lab = start(experiment, options);
    let events: Vec<LabEvent> = lab.events.iter().collect();
    lab.join();
    events
}

/// The dashboard's reloads: a run hands its networks to the next one on the same model, which loads
/// nothing when only steps or prompts change (prompts are encoded again with the kept encoders, giving the
/// samples a fresh load gives); a changed model file loads again.
#[test]
fn unchanged_networks_stay_loaded_across_runs_and_prompts_are_encoded_again() {
    let dir = temp_dir("difflab-pipe-kept");
    let models = difflab::lab::model_cache::ModelCache::default();
    let folder = dir.join("sd1");
    copy_dir(&data().join("sd1"), &folder);
    let text = |steps: usize, prompt: &str| {
        format!(
            "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [{prompt:?}]\n\
             [sampling]\nseeds = 1\n[[sampler]]\nname = \"ddim\"\nsteps = {steps}\nguidance = [7.5]\n",
            folder.display().to_string()
        )
    };
    let loads = |events: &[LabEvent]| {
        events
            .iter()
            .filter(|e| matches!(e, LabEvent::Loading(_)))
            .count()
    };
    let kept = |events: &[LabEvent]| {
        events.iter().any(|e| {
            matches!(e, LabEvent::Log(l) if l.starts_with("the model is unchanged: its networks stay loaded"))
        })
    };
    let first = run_kept(&dir, &text(2, "a cat"), &models);
    assert_eq!(
        loads(&first),
        3,
        "unet, vae_decoder, text_encoder: {first:#?}"
    );
    let steps = run_kept(&dir, &text(3, "a cat"), &models);
    assert_eq!((loads(&steps), kept(&steps)), (0, true), "{steps:#?}");
    let prompt = run_kept(&dir, &text(3, "a red circle"), &models);
    assert_eq!((loads(&prompt), kept(&prompt)), (0, true), "{prompt:#?}");
    let reencoded: ArrayD<f32> = read_npy(dir.join("out/samples/ddim_3_g7.5.npy")).unwrap();

    let fresh_dir = temp_dir("difflab-pipe-kept-fresh");
    let fresh = run(&fresh_dir, &text(3, "a red circle")).unwrap();
    assert!(fresh.cells[0].error.is_none());
    let want: ArrayD<f32> = read_npy(fresh_dir.join("out/samples/ddim_3_g7.5.npy")).unwrap();
    assert_eq!(reencoded, want, "prompts encoded with the kept encoders");

    // Another byte in the U-Net's config is another model: loaded again.
    let config = folder.join("unet/config.json");
    let mut bytes = std::fs::read(&config).unwrap();
    bytes.push(b'\n');
    std::fs::write(&config, bytes).unwrap();
    let changed = run_kept(&dir, &text(4, "a red circle"), &models);
    assert_eq!(
        (loads(&changed), kept(&changed)),
        (3, false),
        "{changed:#?}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
