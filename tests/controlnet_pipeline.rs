//! ControlNet through the whole lab on tests/data/pipelines/sd1-controlnet (a graph holding sd1's U-Net and a
//! ControlNet, as diffusers' ControlNet-to-ONNX script exports one) and sd1-controlnet-split (the same networks
//! exported apart), and sd1-controlnet-multi (two ControlNets in one graph; the second also on its own): the control
//! images, the conditioning scales and their windows reproduce diffusers' StableDiffusionControlNetPipeline (with a
//! MultiControlNetModel for two) from the seed alone, final latents and images.

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
    let model = format!("path = {:?}", data().join("sd1-controlnet"));
    check_cases("sd1-controlnet", "graph", &model);
}

/// The same networks exported apart: the ControlNet's outputs feed the U-Net's inputs of the same names.
#[test]
fn a_controlnet_on_its_own_feeding_the_unet_equals_the_pipeline_too() {
    let model = format!("path = {:?}", data().join("sd1-controlnet-split"));
    check_cases("sd1-controlnet", "split", &model);
}

/// Two ControlNets in one graph (`controlnet_conds` [2, 2B, 3, H, W]): each its own control image, scale and window.
#[test]
fn two_controlnets_in_one_graph_equal_the_pipeline_with_both() {
    let model = format!("path = {:?}", data().join("sd1-controlnet-multi"));
    check_cases("sd1-controlnet-multi", "graph", &model);
}

/// Two ControlNets exported on their own beside a bare U-Net that takes their summed residuals.
#[test]
fn two_controlnets_on_their_own_feeding_one_unet_equal_the_pipeline_too() {
    let split = data().join("sd1-controlnet-split");
    let model = format!(
        "path = {:?}\nsample_shape = [4, 8, 8]\ncontrolnet = [{:?}, {:?}]\nvae_decoder = {:?}\ntext_encoder = {:?}\ntokenizer = {:?}",
        split.join("unet/model.onnx"),
        split.join("controlnet/model.onnx"),
        data().join("sd1-controlnet-multi/controlnet-b/model.onnx"),
        split.join("vae_decoder/model.onnx"),
        split.join("text_encoder/model.onnx"),
        split.join("tokenizer"),
    );
    check_cases("sd1-controlnet-multi", "split", &model);
}

/// The conditioning section's control images: `control_image` for one ControlNet, a table each for several.
fn control_images(refs: &Path, meta: &Value) -> String {
    match meta["control_images"].as_array() {
        None => format!(
            "control_image = {:?}\n",
            refs.join(meta["control_image"].as_str().unwrap())
        ),
        Some(files) => (files.iter())
            .map(|f| {
                format!(
                    "[[conditioning.controlnet]]\nimage = {:?}\n",
                    refs.join(f.as_str().unwrap())
                )
            })
            .collect(),
    }
}

/// A case's scale as `control_scale` takes it: one number for all, or (inside the axis' list) one per ControlNet.
fn scale_of(case: &Value) -> String {
    let scale = &case["controlnet_conditioning_scale"];
    match scale.is_array() {
        true => format!("[{scale}]"),
        false => scale.to_string(),
    }
}

/// Every reference case of `references` with the model section `model`, and once with the control off.
fn check_cases(references: &str, layout: &str, model: &str) {
    let refs = data().join(references).join("reference/controlnet");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(refs.join("controlnet.json")).unwrap())
            .unwrap();
    for case in meta["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let folder = format!("{references}-{layout}");
        let dir = temp_dir(&format!("difflab-controlnet-{folder}-{name}"));
        let text = format!(
            "output = \"out\"\n[model]\n{model}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [{:?}]\n\
             {}[sampling]\nseeds = {}\nnoise = \"torch\"\n[[sampler]]\n{}\nsteps = {}\n\
             guidance = {}\ncontrol_scale = {}\ncontrol_guidance_start = {}\ncontrol_guidance_end = {}\n",
            meta["prompt"].as_str().unwrap(),
            control_images(&refs, &meta),
            meta["seeds"],
            sampler_of(case),
            meta["steps"],
            case["guidance_scale"],
            scale_of(case),
            case["control_guidance_start"],
            case["control_guidance_end"],
        );
        let results = run(&dir, &text).unwrap();
        let cell = &results.cells[0];
        assert!(cell.error.is_none(), "{name}: {:?}", cell.error);
        let scales = cell.control_scale.as_ref().unwrap().values();
        let given = &case["controlnet_conditioning_scale"];
        let wanted_scales: Vec<f64> = match given.as_array() {
            Some(list) => list.iter().map(|v| v.as_f64().unwrap()).collect(),
            None => vec![given.as_f64().unwrap(); scales.len()],
        };
        assert_eq!(scales, wanted_scales, "{name}");
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
        // The control really steers: off, the same seeds give other latents; with several ControlNets the last
        // one off too.
        let mut offs = vec![("control", "0".to_string())];
        if let [first @ .., _] = wanted_scales.as_slice()
            && !first.is_empty()
        {
            let first: Vec<String> = first.iter().map(f64::to_string).collect();
            offs.push(("last ControlNet", format!("[[{}, 0]]", first.join(", "))));
        }
        for (what, scale) in offs {
            let off = text.replace(
                &format!("control_scale = {}", scale_of(case)),
                &format!("control_scale = {scale}"),
            );
            let without = latents_of(&format!("{folder}-{name}-no-{what}"), &off);
            let moved = max_difference(&without, &latents);
            println!("{folder} {name}: without the {what} the latents move by {moved:.2e}");
            assert!(moved > 1e-2, "{name}: the {what} changes nothing ({moved})");
        }
    }
}

/// The final latents of the one cell `text` runs.
fn latents_of(name: &str, text: &str) -> ArrayD<f32> {
    let dir = temp_dir(&format!("difflab-controlnet-{name}").replace(' ', "-"));
    let results = run(&dir, text).unwrap();
    let stem = results.cells[0]
        .grid
        .trim_start_matches("cells/")
        .trim_end_matches(".png");
    read_npy(dir.join(format!("out/latents/{stem}.npy"))).unwrap()
}

/// Control images for another number of ControlNets than the model holds: one message that says both counts.
#[test]
fn control_images_for_another_number_of_controlnets_are_refused() {
    let refs = data().join("sd1-controlnet-multi/reference/controlnet");
    let ring = refs.join("ring.png");
    let cases = [
        (
            "sd1-controlnet-multi",
            format!("control_image = {ring:?}\n"),
            "gives control images for 1 ControlNet; ",
        ),
        (
            "sd1-controlnet",
            format!(
                "[[conditioning.controlnet]]\nimage = {ring:?}\n[[conditioning.controlnet]]\nimage = {ring:?}\n"
            ),
            "gives control images for 2 ControlNets; ",
        ),
    ];
    for (folder, images, expected) in cases {
        let text = format!(
            "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [\"a\"]\n{images}\
             [sampling]\nseeds = 1\n[[sampler]]\nname = \"ddim\"\nsteps = 2\n",
            data().join(folder)
        );
        let dir = temp_dir(&format!("difflab-controlnet-count-{folder}"));
        let error = run(&dir, &text).unwrap_err();
        assert!(error.contains(expected), "{folder}: {error}");
        assert!(error.contains("holds"), "{folder}: {error}");
    }
}

/// The shipped digit ControlNet (models/digits-sd-controlnet, one graph with digits-sd's U-Net): the edges of a 5
/// overrule "a handwritten 8" as the scale grows — at scale 0 the prompt alone decides.
#[test]
fn the_digit_controlnet_draws_the_five_its_edges_show() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sd = repo.join("models/digits-sd");
    let dir = temp_dir("difflab-controlnet-digits");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nsample_shape = [4, 8, 8]\nscheduler_config = {:?}\n\
         vae_decoder = {:?}\ntext_encoder = {:?}\ntokenizer = {:?}\nproviders = [\"cpu\"]\n[conditioning]\n\
         prompts = [\"a handwritten 8\"]\ncontrol_image = {:?}\n[sampling]\nseeds = 8\n[[sampler]]\nname = \"ddim\"\n\
         steps = 20\nguidance = 4\ncontrol_scale = [0, 1]\n[quality]\nfeatures = {:?}\nreference = {:?}\nsamples = 8\n\
         expected_classes = [8]\n",
        repo.join("models/digits-sd-controlnet/model.onnx"),
        sd.join("scheduler/scheduler_config.json"),
        sd.join("vae_decoder/model.onnx"),
        sd.join("text_encoder/model.onnx"),
        sd.join("tokenizer"),
        repo.join("experiments/digit-5-edges.png"),
        repo.join("models/mnist32-features.onnx"),
        repo.join("models/mnist16-reference.npz"),
    );
    let results = run(&dir, &text).unwrap();
    let accuracy = |name: &str| {
        let cell = results.cells.iter().find(|c| c.name == name).unwrap();
        cell.score("accuracy").unwrap()
    };
    let (off, on) = (accuracy("ddim cs0 20 g4"), accuracy("ddim cs1 20 g4"));
    println!("eights: {off} at scale 0, {on} at scale 1");
    assert!(off >= 0.75, "without the control the prompt decides");
    assert!(on <= 0.25, "at scale 1 the edges of the 5 decide");
}
