//! The shipped flow-matching model (models/digits-flow, made by models/train_flow.py): a rectified-flow
//! text-to-digit model in Stable Diffusion 3's layout.
//!
//! - the ONNX exports give what PyTorch gave on the check vectors (models/checks/digits_flow_check.json), and
//!   difflab's SD3 prompt encoding (two CLIPs and T5 at `max_sequence_length` 16) equals the pipeline's;
//! - through the whole lab, `init_noise` reproduces the PyTorch pipeline's images;
//! - flow samplers do on it what they do on real models: guidance makes the prompted digit, and the error
//!   against a long solve shrinks with steps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::engine::{
    Condition, Denoiser, OnnxDenoiser, OnnxOptions, PromptOptions, PromptSide, ProviderKind,
    TextEncoder, VaeDecoder, encode_prompts,
};
use difflab::experiment::Experiment;
use difflab::lab::{CellResult, LabEvent, Results, RunOptions, start};
use ndarray::{Array4, ArrayD};
use ndarray_npy::{read_npy, write_npy};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits-flow")
}

fn check() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/checks/digits_flow_check.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn shape4(v: &Value) -> [usize; 4] {
    let dims: Vec<usize> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    <[usize; 4]>::try_from(dims).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cpu() -> OnnxOptions {
    let mut o = OnnxOptions::default();
    o.providers.preference = vec![ProviderKind::Cpu];
    o
}

fn encoders() -> Vec<TextEncoder> {
    ["", "_2", "_3"]
        .iter()
        .map(|k| {
            TextEncoder::load(
                &root().join(format!("text_encoder{k}/model.onnx")),
                &root().join(format!("tokenizer{k}")),
                &cpu(),
            )
            .unwrap()
        })
        .collect()
}

fn vae_config() -> (f64, f64) {
    let text = std::fs::read_to_string(root().join("vae_decoder/config.json")).unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    (
        config["scaling_factor"].as_f64().unwrap(),
        config["shift_factor"].as_f64().unwrap(),
    )
}

#[test]
fn the_flow_model_exports_give_what_pytorch_gave() {
    let c = check();
    let prompts: Vec<&str> = c["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let options = PromptOptions {
        max_sequence_length: Some(c["max_sequence_length"].as_u64().unwrap() as usize),
        instruction: None,
    };
    let mut encoders = encoders();
    let embeddings = encode_prompts(&mut encoders, &prompts, &options, PromptSide::Prompt).unwrap();
    let states: Vec<f32> = embeddings
        .iter()
        .flat_map(|e| e.hidden_states.data.clone())
        .collect();
    let pooled: Vec<f32> = embeddings
        .iter()
        .flat_map(|e| e.pooled.clone().unwrap().data)
        .collect();
    let d_states = max_abs_diff(&states, &floats(&c["encoder_hidden_states"]));
    let d_pooled = max_abs_diff(&pooled, &floats(&c["pooled_projections"]));
    // The transformer on PyTorch's own conditioning, at each recorded timestep.
    let t = &c["transformer"];
    let [n, ch, h, w] = shape4(&t["hidden_states_shape"]);
    let transformer_options = OnnxOptions {
        sample_shape: Some([ch, h, w]),
        ..cpu()
    };
    let mut transformer =
        OnnxDenoiser::load(root().join("transformer/model.onnx"), &transformer_options).unwrap();
    let want_states = floats(&c["encoder_hidden_states"]);
    let want_pooled = floats(&c["pooled_projections"]);
    let (per_state, per_pool) = (want_states.len() / n, want_pooled.len() / n);
    let table = (0..n)
        .map(|i| Condition {
            hidden_states: Some(difflab::engine::ItemTensor::new(
                embeddings[i].hidden_states.shape.clone(),
                want_states[i * per_state..(i + 1) * per_state].to_vec(),
            )),
            text_embeds: Some(difflab::engine::ItemTensor::new(
                vec![per_pool],
                want_pooled[i * per_pool..(i + 1) * per_pool].to_vec(),
            )),
            ..Condition::default()
        })
        .collect();
    transformer.set_conditions(table).unwrap();
    let sample = floats(&t["hidden_states"]);
    let mut d_transformer = 0.0f32;
    for case in t["cases"].as_array().unwrap() {
        let timestep = case["timestep"].as_f64().unwrap();
        let mut got = vec![0.0; sample.len()];
        let rows: Vec<usize> = (0..n).collect();
        transformer
            .predict_with(&sample, &vec![timestep; n], &rows, &mut got)
            .unwrap();
        d_transformer = d_transformer.max(max_abs_diff(&got, &floats(&case["out_hidden_states"])));
    }
    // The VAE decoder: `decode` divides by the scaling factor and adds the shift itself.
    let v = &c["vae_decoder"];
    let (scaling, shift) = vae_config();
    let mut vae = VaeDecoder::load(
        &root().join("vae_decoder/model.onnx"),
        scaling,
        Some(shift),
        &cpu(),
    )
    .unwrap();
    let latents: Vec<f32> = floats(&v["latent_sample"])
        .iter()
        .map(|z| ((f64::from(*z) - shift) * scaling) as f32)
        .collect();
    let (images, _) = vae.decode(&latents, [ch, h, w], 1).unwrap();
    let want: Vec<f32> = floats(&v["sample"])
        .iter()
        .map(|x| x.clamp(-1.0, 1.0))
        .collect();
    let d_vae = max_abs_diff(&images, &want);
    println!(
        "max |difflab - PyTorch|: prompt states {d_states:.2e}, pooled {d_pooled:.2e}, transformer \
         {d_transformer:.2e}, VAE {d_vae:.2e}"
    );
    assert!(d_states < 1e-4 && d_pooled < 1e-4, "{d_states} {d_pooled}");
    assert!(
        d_transformer < 1e-4 && d_vae < 1e-4,
        "{d_transformer} {d_vae}"
    );
}

/// Runs an experiment (written into a fresh folder) and returns its cells and the folder.
fn lab_run(name: &str, experiment: &str, save_samples: bool) -> (Vec<CellResult>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("difflab-flow-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("exp.toml"), experiment).unwrap();
    let options = RunOptions {
        save_samples,
        ..RunOptions::default()
    };
    let lab = start(Experiment::load(&dir.join("exp.toml")).unwrap(), options);
    for event in lab.events.iter() {
        if let LabEvent::Finished { error: Some(e), .. } = event {
            panic!("{e}");
        }
    }
    lab.join();
    let cells = Results::load(&dir.join("out/results.json")).cells;
    for c in &cells {
        assert!(c.error.is_none(), "{}: {:?}", c.name, c.error);
    }
    (cells, dir)
}

/// The check's pipeline run: "a handwritten 3" from latent 0 and "a handwritten 8" from latent 1, flow Euler 20
/// at guidance 4. Through the lab with those latents as `init_noise` (seeds 0 and 1), the same images.
#[test]
fn the_lab_reproduces_the_pytorch_pipelines_images_from_its_latents() {
    let p = &check()["pipeline"];
    let dir = std::env::temp_dir().join(format!("difflab-flow-latents-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let latents =
        Array4::from_shape_vec(shape4(&p["latents_shape"]), floats(&p["latents"])).unwrap();
    let noise = dir.join("latents.npy");
    write_npy(&noise, &latents).unwrap();
    let prompts: Vec<String> = p["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [{}]\n\
         max_sequence_length = {}\n[sampling]\nseeds = 2\ninit_noise = {noise:?}\n[[sampler]]\nname = \"euler\"\n\
         steps = {}\nguidance = {}\n",
        root(),
        prompts.join(", "),
        p["max_sequence_length"],
        p["num_inference_steps"],
        p["guidance_scale"],
    );
    let (cells, out) = lab_run("replay", &text, true);
    let cell = &cells[0];
    let file = out.join("out/samples").join(format!(
        "{}.npy",
        cell.grid
            .trim_start_matches("cells/")
            .trim_end_matches(".png")
    ));
    let ours: ArrayD<f32> = read_npy(&file).unwrap();
    let [n, hh, ww, c] = shape4(&p["images_shape"]);
    let want = floats(&p["images"]);
    // Rows are prompt-major: prompt 0 seed 0, prompt 0 seed 1, prompt 1 seed 0, prompt 1 seed 1.
    for (image, row) in (0..n).zip([0, 3]) {
        let mut diff = 0.0f32;
        for y in 0..hh {
            for x in 0..ww {
                for ch in 0..c {
                    let reference = want[((image * hh + y) * ww + x) * c + ch];
                    diff = diff.max((ours[[row, ch, y, x]] - reference).abs());
                }
            }
        }
        println!("image {image}: max diff {diff:.2e}");
        assert!(diff < 1e-3, "image {image} differs by {diff}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

/// Flow Euler and DPM++ 2M on flow sigmas, 4 and 16 steps, at g = 1 and 4, against a 50-step flow Heun solve:
/// guidance makes the prompted digit, and each sampler's error shrinks with its steps. Measured (4 seeds per
/// digit): accuracy 0.90 / 0.85 at g = 1 and 1.00 at g = 4 (16 steps); at g = 4 the RMSE to the solve falls from
/// 0.24 to 0.051 (Euler) and 0.18 to 0.046 (DPM++ 2M) from 4 to 16 steps.
#[test]
fn flow_samplers_converge_on_the_flow_model_and_guidance_makes_the_digit() {
    let prompts: Vec<String> = (0..10).map(|d| format!("\"a handwritten {d}\"")).collect();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let text = format!(
        "output = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[conditioning]\nprompts = [{}]\n\
         max_sequence_length = 16\n[sampling]\nseeds = 4\n[[sampler]]\nname = \"euler\"\nsteps = [4, 16]\n\
         guidance = [1, 4]\n[[sampler]]\nname = \"dpm++2m\"\nsteps = [4, 16]\nguidance = [1, 4]\n[quality]\n\
         features = {:?}\nreference = {:?}\nsamples = 40\nexpected_classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n\
         reference_sampler = \"heun:50\"\n",
        root(),
        prompts.join(", "),
        models.join("mnist32-features.onnx"),
        models.join("mnist16-reference.npz"),
    );
    let (cells, dir) = lab_run("samplers", &text, false);
    let cell = |name: &str| cells.iter().find(|c| c.name == name).unwrap();
    for c in &cells {
        println!(
            "{}: accuracy {:.3}, ref RMSE {:.2e}",
            c.name,
            c.score("accuracy").unwrap(),
            c.score("ref_rmse").unwrap()
        );
    }
    for sampler in ["euler", "dpm++2m"] {
        for g in ["1", "4"] {
            let coarse = cell(&format!("{sampler} 4 g{g}"))
                .score("ref_rmse")
                .unwrap();
            let fine = cell(&format!("{sampler} 16 g{g}"))
                .score("ref_rmse")
                .unwrap();
            assert!(fine < 0.5 * coarse, "{sampler} g{g}: {fine} vs {coarse}");
        }
        let a1 = cell(&format!("{sampler} 16 g1")).score("accuracy").unwrap();
        let a4 = cell(&format!("{sampler} 16 g4")).score("accuracy").unwrap();
        assert!(
            a4 >= 0.95 && a4 > a1,
            "{sampler}: accuracy {a1} at g = 1, {a4} at g = 4"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
