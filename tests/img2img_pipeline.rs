//! img2img through the whole lab on the checked-in exports (tests/data/pipelines/{sd1,sdxl}): a start image
//! encoded by the folder's `vae_encoder`, each sampler's schedule cut at the strength and the noise added there
//! reproduce Optimum's img2img pipelines from the seed alone (`noise = "torch"`), final latents and images; with
//! a mask, Optimum's inpainting pipeline.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use serde_json::Value;
use support::{max_difference, run, temp_dir};

mod support;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipelines")
}

/// The difflab sampler of a reference case: the pipeline's own scheduler (`shipped`) or one made from its config.
fn sampler_of(folder: &str, case: &str) -> &'static str {
    match (folder, case.split("_s").next().unwrap()) {
        ("sd1" | "sd1-inpaint", "shipped") => "name = \"plms\"",
        ("sdxl" | "sd3" | "flux", "shipped") | (_, "euler") => "name = \"euler\"",
        (_, "ddim") => {
            "name = \"ddim\"\nsettings = { clip_sample = false, set_alpha_to_one = false }"
        }
        (_, "dpmpp_2m") => "name = \"dpm++2m\"",
        other => panic!("no sampler for {other:?}"),
    }
}

/// Every case of `folder`'s img2img (or inpainting) references, both seeds in one cell.
fn check_folder(folder: &str, kind: &str) {
    let refs = data().join(folder).join("reference").join(kind);
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(refs.join(format!("{kind}.json"))).unwrap())
            .unwrap();
    let mask = match meta["mask"].as_str() {
        Some(m) => format!("mask = {:?}\n", refs.join(m)),
        None => String::new(),
    };
    // SD3's and FLUX's references cut T5 at 16 tokens; FLUX has no sample size of its own.
    let mask = match meta["max_sequence_length"].as_u64() {
        Some(n) => format!("{mask}max_sequence_length = {n}\n"),
        None => mask,
    };
    let shape = match folder {
        "flux" => "sample_shape = [16, 8, 8]\n",
        _ => "",
    };
    for case in meta["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dir = temp_dir(&format!("difflab-img2img-{folder}-{kind}-{name}"));
        let text = format!(
            "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n{shape}[conditioning]\nprompts = [{:?}]\n\
             init_image = {:?}\n{mask}[sampling]\nseeds = {}\nnoise = \"torch\"\n[[sampler]]\n{}\nsteps = {}\n\
             guidance = {}\nstrength = {}\n",
            data().join(folder),
            meta["prompt"].as_str().unwrap(),
            refs.join("start.png"),
            meta["seeds"],
            sampler_of(folder, name),
            meta["steps"],
            meta["guidance_scale"],
            case["strength"],
        );
        let results = run(&dir, &text).unwrap();
        let cell = &results.cells[0];
        assert!(cell.error.is_none(), "{name}: {:?}", cell.error);
        assert_eq!(cell.strength, case["strength"].as_f64());
        let steps = meta["steps"].as_f64().unwrap();
        let ran = (steps * case["strength"].as_f64().unwrap()).floor() as usize;
        let per_step = if cell.class == "HeunDiscreteScheduler" {
            2
        } else {
            1
        };
        assert!(
            cell.nfe <= ran * per_step + 1,
            "{name}: {} calls for {ran} steps",
            cell.nfe
        );
        let stem = cell
            .grid
            .trim_start_matches("cells/")
            .trim_end_matches(".png");
        let latents: ArrayD<f32> = read_npy(dir.join(format!("out/latents/{stem}.npy"))).unwrap();
        let want: ArrayD<f32> =
            read_npy(refs.join(case["final_latents"].as_str().unwrap())).unwrap();
        let latent_diff = max_difference(&latents, &want);
        let images: ArrayD<f32> = read_npy(dir.join(format!("out/samples/{stem}.npy"))).unwrap();
        let want: ArrayD<f32> = read_npy(refs.join(case["images"].as_str().unwrap())).unwrap();
        let want = want.permuted_axes(vec![0, 3, 1, 2]).to_owned();
        let image_diff = max_difference(&images, &want);
        println!(
            "{folder} {kind} {name}: {} calls, max latent diff {latent_diff:.2e}, max image diff {image_diff:.2e}",
            cell.nfe
        );
        assert!(
            latent_diff < 1e-3,
            "{folder} {name}: latents differ by {latent_diff}"
        );
        assert!(
            image_diff < 1e-3,
            "{folder} {name}: images differ by {image_diff}"
        );
    }
}

#[test]
fn sd1_img2img_equals_optimum_for_four_samplers() {
    check_folder("sd1", "img2img");
}

#[test]
fn sdxl_img2img_equals_optimum() {
    check_folder("sdxl", "img2img");
}

/// Flow models: the image's latents shifted and scaled by the VAE's factors, `scale_noise` at the cut sigma; FLUX
/// with its dynamic shift (references: Optimum's SD3 img2img pipeline, diffusers' FluxImg2ImgPipeline on ONNX Runtime).
#[test]
fn sd3_and_flux_img2img_equal_their_pipelines() {
    check_folder("sd3", "img2img");
    check_folder("flux", "img2img");
}

/// A plain (4-channel) U-Net inpaints as StableDiffusionInpaintPipeline runs it: the known region blended back
/// after every step, strength 1 starting from pure noise.
#[test]
fn sd1_inpainting_with_a_plain_unet_equals_optimum() {
    check_folder("sd1", "inpaint");
}

/// An inpainting U-Net (9 input channels: latents, the mask at the latents' size, the masked image's latents) as
/// StableDiffusionInpaintPipeline runs it: no blend, the masked image encoded with the seed's third draw.
#[test]
fn an_inpainting_unet_equals_optimum() {
    check_folder("sd1-inpaint", "inpaint");
}

/// The shipped demonstration in small: a real "3" under "a handwritten 8" stays a 3 at strength 0.3 and becomes
/// an 8 at 0.9, which also takes it further from the start image; NFE are the steps that run.
#[test]
fn digits_sd_turns_a_three_into_an_eight_as_strength_grows() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = temp_dir("difflab-img2img-digits");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [\"a handwritten 8\"]\n\
         init_image = {:?}\n[sampling]\nseeds = 8\n[[sampler]]\nname = \"ddim\"\nsteps = 20\nguidance = 4\n\
         strength = [0.3, 0.9]\n[quality]\nfeatures = {:?}\nreference = {:?}\nsamples = 8\nexpected_classes = [8]\n",
        repo.join("models/digits-sd"),
        repo.join("experiments/digit-3.png"),
        repo.join("models/mnist32-features.onnx"),
        repo.join("models/mnist16-reference.npz"),
    );
    let results = run(&dir, &text).unwrap();
    let by = |name: &str| results.cells.iter().find(|c| c.name == name).unwrap();
    let (low, high) = (by("ddim s0.3 20 g4"), by("ddim s0.9 20 g4"));
    assert_eq!((low.nfe, high.nfe), (6, 18));
    let score = |c: &difflab::lab::CellResult, key: &str| c.score(key).unwrap();
    println!(
        "accuracy {} → {}, start RMSE {:.3} → {:.3}",
        score(low, "accuracy"),
        score(high, "accuracy"),
        score(low, "start_rmse"),
        score(high, "start_rmse")
    );
    assert!(score(low, "accuracy") <= 0.25, "a light touch keeps the 3");
    assert!(score(high, "accuracy") >= 0.75, "a strong one draws the 8");
    assert!(score(high, "start_rmse") > score(low, "start_rmse") + 0.1);
    let csv = std::fs::read_to_string(dir.join("out/results.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",strength,start_rmse"),
        "{csv}"
    );
}

/// An inpainting U-Net asked for text-to-image says what it needs instead of failing inside ONNX Runtime.
#[test]
fn an_inpainting_unet_without_image_and_mask_says_what_it_needs() {
    let dir = temp_dir("difflab-img2img-inpaint-needs");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [\"a cat\"]\n\
         [sampling]\nseeds = 1\n[[sampler]]\nname = \"ddim\"\nsteps = 2\n",
        data().join("sd1-inpaint")
    );
    let error = run(&dir, &text).unwrap_err();
    assert!(
        error.contains("inpainting U-Net") && error.contains("init_image and mask"),
        "{error}"
    );
}
