//! A video U-Net through the whole lab: the tiny AnimateDiff folder (tests/data/pipelines/animatediff, made by
//! `make_video.py`: a `UNetMotionModel` whose sample is [B, C, F, H, W] and whose text condition is repeated per
//! frame) reproduces diffusers' `AnimateDiffPipeline` clips, latents and decoded frames, from given noise and from
//! the seed alone; clip shapes that do not fit are one clear error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::lab::Results;
use ndarray::ArrayD;
use ndarray_npy::read_npy;
use serde_json::Value;
use support::{max_difference, run, temp_dir};

mod support;

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipelines/animatediff")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(folder().join("reference/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference_array(file: &Value) -> ArrayD<f32> {
    let data = folder().parent().unwrap().to_path_buf();
    read_npy(data.join(file.as_str().unwrap())).unwrap()
}

/// The experiment of the reference: its prompt, guidance and steps, both seeds, DDIM and Euler, 8 frames.
fn experiment(sampling: &str, shape: &str) -> String {
    let r = reference();
    format!(
        "output = \"out\"\n[model]\npath = {:?}\n{shape}providers = [\"cpu\"]\n[conditioning]\nprompts = [{:?}]\n\
         [sampling]\n{sampling}\n[[sampler]]\nname = \"ddim\"\nsteps = {steps}\nguidance = [{g}]\n\
         [[sampler]]\nname = \"euler\"\nsteps = {steps}\nguidance = [{g}]\n",
        folder(),
        r["prompt"].as_str().unwrap(),
        steps = r["num_inference_steps"],
        g = r["guidance_scale"],
    )
}

/// What `--save-samples` wrote for the cell of `sampler`: (latents, frames).
fn cell_files(dir: &Path, results: &Results, sampler: &str) -> (ArrayD<f32>, ArrayD<f32>) {
    let cell = results
        .cells
        .iter()
        .find(|c| c.name.starts_with(sampler))
        .unwrap();
    assert!(cell.error.is_none(), "{:?}", cell.error);
    let stem = cell
        .grid
        .trim_start_matches("cells/")
        .trim_end_matches(".png");
    let read = |kind: &str| read_npy(dir.join(format!("out/{kind}/{stem}.npy"))).unwrap();
    (read("latents"), read("samples"))
}

/// Both cases of the reference against the run in `dir`: final latents [N, C, F, H, W] and decoded frames
/// (difflab's [N, 3, F, H, W] against diffusers' [N, F, H, W, 3]).
fn check_against_reference(dir: &Path, results: &Results) {
    for case in reference()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (latents, frames) = cell_files(dir, results, name);
        let want = reference_array(&case["final_latents"]["file"]);
        assert_eq!(latents.shape(), want.shape());
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let latent_diff = max_difference(&latents, &want);
        let want = reference_array(&case["frames"]["file"]);
        let frames = frames.permuted_axes(vec![0, 2, 3, 4, 1]).to_owned();
        assert_eq!(frames.shape(), want.shape());
        let frame_diff = max_difference(&frames, &want);
        println!(
            "{name}: final latents within {latent_diff:.2e} (largest {scale:.1}), frames within {frame_diff:.2e}"
        );
        assert!(
            latent_diff < 1e-5 * scale,
            "{name}: latents differ by {latent_diff}"
        );
        assert!(frame_diff < 1e-3, "{name}: frames differ by {frame_diff}");
    }
}

#[test]
fn clips_from_given_noise_match_the_animatediff_pipeline() {
    let dir = temp_dir("difflab-video-given");
    let noise = folder().join("reference/init_latents.npy");
    let sampling = format!("seeds = 2\ninit_noise = {noise:?}");
    let results = run(
        &dir,
        &experiment(&sampling, "sample_shape = [4, 8, 8, 8]\n"),
    )
    .unwrap();
    check_against_reference(&dir, &results);
}

/// The reference's noise is `torch.randn((1, 4, 8, 8, 8), generator=manual_seed(seed))` per seed: `noise =
/// "torch"` draws a clip's noise from its seed as one tensor, so the seeds alone give the same clips.
#[test]
fn a_seed_alone_gives_the_pipelines_clip() {
    let dir = temp_dir("difflab-video-torch");
    let sampling = "seeds = [0, 1]\nnoise = \"torch\"";
    let results = run(&dir, &experiment(sampling, "sample_shape = [4, 8, 8, 8]\n")).unwrap();
    check_against_reference(&dir, &results);
}

#[test]
fn clip_shapes_that_do_not_fit_are_named() {
    let dir = temp_dir("difflab-video-errors");
    // Longer than the motion U-Net's temporal position embedding.
    let err = run(
        &dir,
        &experiment("seeds = 1", "sample_shape = [4, 40, 8, 8]\n"),
    )
    .unwrap_err();
    assert!(err.contains("motion_max_seq_length, 32"), "{err}");
    // Noise for images given to a video model.
    let noise = dir.join("image-noise.npy");
    ndarray_npy::write_npy(&noise, &ndarray::Array4::<f32>::zeros((1, 4, 8, 8))).unwrap();
    let sampling = format!("seeds = 1\ninit_noise = {noise:?}");
    let err = run(
        &dir,
        &experiment(&sampling, "sample_shape = [4, 8, 8, 8]\n"),
    )
    .unwrap_err();
    assert!(err.contains("[N, 4, 8, 8, 8]"), "{err}");
    // A start image for a clip.
    let start = folder()
        .with_file_name("sd3")
        .join("reference/img2img/start.png");
    let text = experiment("seeds = 1", "sample_shape = [4, 8, 8, 8]\n")
        .replace("[sampling]", &format!("init_image = {start:?}\n[sampling]"))
        .replace("guidance = [7.5]", "guidance = [7.5]\nstrength = 0.5");
    let err = run(&dir, &text).unwrap_err();
    assert!(
        err.contains("[conditioning] init_image") && err.contains("clips of 8 frames"),
        "{err}"
    );
}

#[test]
fn a_frame_rate_for_an_image_model_is_an_error() {
    let dir = temp_dir("difflab-video-fps");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nfps = 8\n[[sampler]]\nname = \"ddim\"\nsteps = 2\n",
        folder().with_file_name("classcond")
    );
    let err = run(&dir, &text).unwrap_err();
    assert!(
        err.contains("[model] fps") && err.contains("images"),
        "{err}"
    );
}

/// Without `sample_shape` the folder's U-Net config gives 8×8 latents and AnimateDiff's 16 frames.
#[test]
fn a_folder_without_a_shape_runs_sixteen_frames() {
    let dir = temp_dir("difflab-video-default");
    let results = run(&dir, &experiment("seeds = 1", "")).unwrap();
    let (latents, frames) = cell_files(&dir, &results, "ddim");
    assert_eq!(latents.shape(), &[1, 4, 16, 8, 8]);
    assert_eq!(frames.shape(), &[1, 3, 16, 64, 64]);
}

/// FID scores a clip's frames (8 clips of 4 frames: 32 images through the feature network), and every cell has
/// its clips' frame-to-frame change, the mean |frame f+1 − frame f| of its saved frames, in results.json and
/// results.csv.
#[test]
fn clips_are_scored_by_their_frames_and_their_change_from_frame_to_frame() {
    let dir = temp_dir("difflab-video-quality");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let quality = format!(
        "[quality]\nfeatures = {:?}\nreference = {:?}\nsamples = 8\nkid_subsets = 2\nkid_subset_size = 16\n",
        models.join("mnist16-features.onnx"),
        models.join("mnist16-reference.npz"),
    );
    let text = experiment("seeds = 2", "sample_shape = [4, 4, 8, 8]\n") + &quality;
    let results = run(&dir, &text).unwrap();
    let csv = std::fs::read_to_string(dir.join("out/results.csv")).unwrap();
    assert!(
        csv.lines().next().unwrap().ends_with(",frame_change"),
        "{csv}"
    );
    for cell in &results.cells {
        assert!(cell.error.is_none(), "{:?}", cell.error);
        let fid = cell.score("fid").unwrap();
        assert!(fid.is_finite() && fid > 0.0, "FID {fid}");
        let (_, frames) = cell_files(&dir, &results, &cell.name);
        assert_eq!(frames.shape(), &[8, 3, 4, 64, 64]);
        let pairs: Vec<f32> = (0..8)
            .flat_map(|n| (1..4).map(move |f| (n, f)))
            .map(|(n, f)| {
                let at = |k: usize| frames.slice(ndarray::s![n, .., k, .., ..]).to_owned();
                (at(f) - at(f - 1)).mapv(f32::abs).mean().unwrap()
            })
            .collect();
        let want = pairs.iter().sum::<f32>() / pairs.len() as f32;
        let got = cell.score("frame_change").unwrap();
        println!(
            "{}: FID {fid:.1} over frames, frame change {got:.4}",
            cell.name
        );
        assert!((got - f64::from(want)).abs() < 1e-4, "{got} against {want}");
    }
}
