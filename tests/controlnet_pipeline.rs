//! ControlNet through the whole lab on tests/data/pipelines/sd1-controlnet (a graph holding sd1's U-Net and a
//! ControlNet, as diffusers' ControlNet-to-ONNX script exports one) and sd1-controlnet-split (the same networks
//! exported apart): the control image, the conditioning scale and its window reproduce diffusers'
//! StableDiffusionControlNetPipeline from the seed alone, final latents and images.

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

fn sampler_of(case: &Value) -> &'static str {
    match case["scheduler"].as_str().unwrap() {
        "DDIMScheduler" => {
            "name = \"ddim\"\nsettings = { clip_sample = false, set_alpha_to_one = false }"
        }
        "DPMSolverMultistepScheduler" => "name = \"dpm++2m\"",
        "EulerDiscreteScheduler" => "name = \"euler\"",
        other => panic!("no sampler for {other}"),
    }
}

#[test]
fn a_controlnet_graph_equals_diffusers_controlnet_pipeline() {
    check_folder("sd1-controlnet");
}

/// The same networks exported apart: the ControlNet's outputs feed the U-Net's inputs of the same names.
#[test]
fn a_controlnet_on_its_own_feeding_the_unet_equals_the_pipeline_too() {
    check_folder("sd1-controlnet-split");
}

/// Every reference case on `folder`, and once with the control off.
fn check_folder(folder: &str) {
    let refs = data().join("sd1-controlnet/reference/controlnet");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(refs.join("controlnet.json")).unwrap())
            .unwrap();
    for case in meta["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dir = temp_dir(&format!("difflab-controlnet-{folder}-{name}"));
        let text = format!(
            "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [{:?}]\n\
             control_image = {:?}\n[sampling]\nseeds = {}\nnoise = \"torch\"\n[[sampler]]\n{}\nsteps = {}\n\
             guidance = {}\ncontrol_scale = {}\ncontrol_guidance_start = {}\ncontrol_guidance_end = {}\n",
            data().join(folder),
            meta["prompt"].as_str().unwrap(),
            refs.join(meta["control_image"].as_str().unwrap()),
            meta["seeds"],
            sampler_of(case),
            meta["steps"],
            case["guidance_scale"],
            case["controlnet_conditioning_scale"],
            case["control_guidance_start"],
            case["control_guidance_end"],
        );
        let results = run(&dir, &text).unwrap();
        let cell = &results.cells[0];
        assert!(cell.error.is_none(), "{name}: {:?}", cell.error);
        assert_eq!(
            cell.control_scale,
            case["controlnet_conditioning_scale"].as_f64()
        );
        let csv = std::fs::read_to_string(dir.join("out/results.csv")).unwrap();
        let header = csv.lines().next().unwrap();
        assert!(
            header.ends_with(",control_scale,control_guidance_start,control_guidance_end"),
            "{header}"
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
        let image_diff = max_difference(&images, &want.permuted_axes(vec![0, 3, 1, 2]).to_owned());
        println!(
            "{folder} {name}: max latent diff {latent_diff:.2e}, max image diff {image_diff:.2e}"
        );
        assert!(
            latent_diff < 1e-3,
            "{name}: latents differ by {latent_diff}"
        );
        assert!(image_diff < 1e-3, "{name}: images differ by {image_diff}");
        // The control really steers: off, the same seeds give other latents.
        let off = text.replace(
            &format!("control_scale = {}", case["controlnet_conditioning_scale"]),
            "control_scale = 0",
        );
        let dir = temp_dir(&format!("difflab-controlnet-{folder}-{name}-off"));
        let results = run(&dir, &off).unwrap();
        let stem = results.cells[0]
            .grid
            .trim_start_matches("cells/")
            .trim_end_matches(".png");
        let without: ArrayD<f32> = read_npy(dir.join(format!("out/latents/{stem}.npy"))).unwrap();
        let moved = max_difference(&without, &latents);
        println!("{name}: without the control the latents move by {moved:.2e}");
        assert!(
            moved > 1e-2,
            "{name}: the control changes nothing ({moved})"
        );
    }
}
