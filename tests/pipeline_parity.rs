//! The engine's pieces of a Stable Diffusion pipeline against Optimum's own ONNX Runtime pipelines on the
//! checked-in exports (tests/data/pipelines, made by make.py): text encoders, classifier-free guidance with a
//! negative prompt, DDIM and DPM++ 2M, the VAE decoder. Final latents and images must match within 1e-3.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::engine::{
    Condition, Denoiser, OnnxDenoiser, OnnxOptions, PromptEmbedding, PromptOptions, PromptSide,
    TextEncoder, VaeDecoder, encode_prompts,
};
use difflab::lab::guidance::guide;
use difflab::sampler::{SamplerConfig, SeededNoise};
use ndarray::ArrayD;
use ndarray_npy::read_npy;
use serde_json::Value;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipelines")
}

fn npy(path: &Path) -> Vec<f32> {
    let a: ArrayD<f32> = read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    a.iter().copied().collect()
}

fn reference(folder: &str) -> Value {
    let path = data().join(folder).join("reference/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn options() -> OnnxOptions {
    let mut o = OnnxOptions::default();
    o.providers.preference = vec![difflab::engine::ProviderKind::Cpu];
    o
}

fn encoders(folder: &str) -> Vec<TextEncoder> {
    let root = data().join(folder);
    let mut out = vec![
        TextEncoder::load(
            &root.join("text_encoder/model.onnx"),
            &root.join("tokenizer"),
            &options(),
        )
        .unwrap(),
    ];
    if root.join("text_encoder_2").is_dir() {
        out.push(
            TextEncoder::load(
                &root.join("text_encoder_2/model.onnx"),
                &root.join("tokenizer_2"),
                &options(),
            )
            .unwrap(),
        );
    }
    out
}

#[test]
fn text_encoders_match_onnx_runtime_in_python() {
    for folder in ["sd1", "sd2v", "sdxl"] {
        let reference = reference(folder);
        let te = &reference["text_encoders"];
        let prompt = te["prompt"].as_str().unwrap();
        for (k, encoder) in encoders(folder).iter_mut().enumerate() {
            let key = if k == 0 {
                "text_encoder"
            } else {
                "text_encoder_2"
            };
            let want_ids: Vec<i64> = te[key]["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(encoder.tokenizer().encode(prompt).unwrap().ids, want_ids);
            let outputs = encoder.encode(&[prompt]).unwrap();
            for (name, spec) in te[key]["outputs"].as_object().unwrap() {
                let want = npy(&data().join(spec["file"].as_str().unwrap()));
                let got = &outputs[name].data;
                let diff = max_abs_diff(got, &want);
                assert!(diff < 1e-5, "{folder} {key} {name}: max diff {diff}");
            }
        }
    }
}

/// Prompt embeddings and the unconditional one as the pipelines make them.
fn conditions(folder: &str, case: &Value, prompts: &[&str]) -> (Vec<Condition>, usize) {
    let mut encoders = encoders(folder);
    let options = PromptOptions::default();
    let embeds = encode_prompts(&mut encoders, prompts, &options, PromptSide::Prompt).unwrap();
    let uncond: PromptEmbedding = match case["negative_prompt"].as_str() {
        Some(neg) => encode_prompts(&mut encoders, &[neg], &options, PromptSide::Negative)
            .unwrap()
            .remove(0),
        None => embeds[0].zeros_like(),
    };
    let mut table: Vec<Condition> = embeds.iter().map(|e| e.condition(64, 64)).collect();
    table.push(uncond.condition(64, 64));
    (table, prompts.len())
}

/// Runs one reference case: the pipeline's loop, with CFG when g ≠ 1; returns final latents and images (NHWC,
/// [0, 1]).
fn run_case(folder: &str, case: &Value, reference: &Value) -> (Vec<f32>, Vec<f32>) {
    let root = data().join(folder);
    let prompts: Vec<&str> = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let mut unet_options = options();
    unet_options.sample_shape = Some([4, 8, 8]);
    let mut unet = OnnxDenoiser::load(root.join("unet/model.onnx"), &unet_options).unwrap();
    let (table, uncond) = conditions(folder, case, &prompts);
    unet.set_conditions(table).unwrap();

    let config = SamplerConfig::from_json_str(&case["scheduler"].to_string(), "case")
        .unwrap()
        .config;
    let mut scheduler = config.build();
    scheduler.set_steps(4).unwrap();
    let want_t: Vec<f64> = case["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(
        scheduler.timesteps(),
        want_t.as_slice(),
        "{folder} timesteps"
    );

    let g = case["guidance_scale"].as_f64().unwrap() as f32;
    let n = prompts.len();
    let item = 4 * 8 * 8;
    let mut x = npy(&root.join("reference/initial_latents.npy"));
    let mut x0 = vec![0.0; x.len()];
    let mut noise = SeededNoise::new(vec![0; n]);
    for i in 0..4 {
        let t = scheduler.timesteps()[i];
        let guided = if g == 1.0 {
            let mut out = vec![0.0; x.len()];
            let rows: Vec<usize> = (0..n).collect();
            unet.predict_with(&x, &vec![t; n], &rows, &mut out).unwrap();
            out
        } else {
            // One call on [uncond; cond], as diffusers batches it.
            let mut input = x.clone();
            input.extend_from_slice(&x);
            let mut rows = vec![uncond; n];
            rows.extend(0..n);
            let mut out = vec![0.0; input.len()];
            unet.predict_with(&input, &vec![t; 2 * n], &rows, &mut out)
                .unwrap();
            let (u, c) = out.split_at(n * item);
            let mut guided = vec![0.0; n * item];
            guide(u, c, g, 0.0, item, &mut guided);
            guided
        };
        scheduler
            .step(&guided, &mut x, &mut x0, n, &mut noise)
            .unwrap();
    }
    let vae_config: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("vae_decoder/config.json")).unwrap(),
    )
    .unwrap();
    let scaling = vae_config["scaling_factor"].as_f64().unwrap();
    let mut vae = VaeDecoder::load(
        &root.join("vae_decoder/model.onnx"),
        scaling,
        None,
        &options(),
    )
    .unwrap();
    let (images, shape) = vae.decode(&x, [4, 8, 8], 2).unwrap();
    assert_eq!(shape, [3, 64, 64]);
    // NCHW in [-1, 1] → NHWC in [0, 1], as output_type="np".
    let mut nhwc = vec![0.0; images.len()];
    for b in 0..n {
        for c in 0..3 {
            for p in 0..64 * 64 {
                nhwc[b * 3 * 4096 + p * 3 + c] = images[b * 3 * 4096 + c * 4096 + p] / 2.0 + 0.5;
            }
        }
    }
    (x, nhwc)
}

#[test]
fn sd_pipelines_match_optimum_with_guidance_and_a_negative_prompt() {
    let mut checked = 0;
    for folder in ["sd1", "sd2v", "sdxl"] {
        let reference = reference(folder);
        for case in reference["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let (latents, images) = run_case(folder, case, &reference);
            let want_latents = npy(&data().join(case["final_latents"]["file"].as_str().unwrap()));
            let want_images = npy(&data().join(case["images"]["file"].as_str().unwrap()));
            let dl = max_abs_diff(&latents, &want_latents);
            let di = max_abs_diff(&images, &want_images);
            println!("{folder} {name}: final latents max diff {dl:.2e}, images {di:.2e}");
            assert!(dl < 1e-3, "{folder} {name}: final latents differ by {dl}");
            assert!(di < 1e-3, "{folder} {name}: images differ by {di}");
            checked += 1;
        }
    }
    assert_eq!(checked, 11);
}

#[test]
fn a_scalar_timestep_unet_runs_mixed_timesteps_as_one_call_per_timestep() {
    let mut options = options();
    options.sample_shape = Some([4, 8, 8]);
    let mut unet = OnnxDenoiser::load(data().join("sd1/unet/model.onnx"), &options).unwrap();
    assert!(!unet.roles().timestep_per_item);
    let reference = reference("sd1");
    let case = &reference["cases"][1];
    let (table, uncond) = conditions("sd1", case, &["a red circle", "a cat"]);
    unet.set_conditions(table).unwrap();
    let x = npy(&data().join("sd1/reference/initial_latents.npy"));
    let item = 256;
    // Three items at two timesteps, interleaved: each must equal its own call.
    let mut batch = x.clone();
    batch.extend_from_slice(&x[..item]);
    let (t, rows) = ([801.0, 1.0, 1.0], [0, 1, uncond]);
    let mut out = vec![0.0; batch.len()];
    unet.predict_with(&batch, &t, &rows, &mut out).unwrap();
    for i in 0..3 {
        let mut alone = vec![0.0; item];
        unet.predict_with(
            &batch[i * item..(i + 1) * item],
            &[t[i]],
            &[rows[i]],
            &mut alone,
        )
        .unwrap();
        let diff = max_abs_diff(&out[i * item..(i + 1) * item], &alone);
        assert!(diff < 1e-5, "item {i}: {diff}");
    }
    // A row that is not in the table is an error, not a panic.
    let err = unet
        .predict_with(&x[..item], &[1.0], &[9], &mut vec![0.0; item])
        .unwrap_err();
    assert!(err.to_string().contains("condition rows"), "{err}");
}

#[test]
fn embeddings_of_the_wrong_width_are_refused_by_name() {
    let mut options = options();
    options.sample_shape = Some([4, 8, 8]);
    let mut unet = OnnxDenoiser::load(data().join("sd1/unet/model.onnx"), &options).unwrap();
    let wrong = Condition {
        hidden_states: Some(difflab::engine::ItemTensor::zeros(vec![77, 16])),
        ..Condition::default()
    };
    let err = unet.set_conditions(vec![wrong]).unwrap_err().to_string();
    assert!(
        err.contains("encoder_hidden_states") && err.contains("[77, 16]"),
        "{err}"
    );
    let labels = Condition {
        class_label: Some(3),
        ..Condition::default()
    };
    let err = unet.set_conditions(vec![labels]).unwrap_err().to_string();
    assert!(err.contains("takes no class labels"), "{err}");
}

#[test]
fn a_tokenizer_larger_than_the_encoders_vocabulary_is_refused() {
    let dir = std::env::temp_dir().join(format!("difflab-vocab-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let source = data().join("sd1/text_encoder");
    std::fs::copy(source.join("model.onnx"), dir.join("model.onnx")).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).unwrap())
            .unwrap();
    config["vocab_size"] = 1000.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = TextEncoder::load(
        &dir.join("model.onnx"),
        &data().join("sd1/tokenizer"),
        &options(),
    )
    .err()
    .expect("a mismatched tokenizer must be refused")
    .to_string();
    assert!(
        err.contains("49408 tokens") && err.contains("only 1000"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without a config.json the vocabulary cannot be checked at load; ONNX Runtime's out-of-range Gather on
/// the token embedding then becomes the same message the config check gives.
#[test]
fn a_tokenizer_larger_than_an_encoder_without_config_is_named_at_encode_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        data().join("sd1/text_encoder/model.onnx"),
        dir.path().join("model.onnx"),
    )
    .unwrap();
    let tokenizer = dir.path().join("tokenizer");
    std::fs::create_dir(&tokenizer).unwrap();
    for file in ["vocab.json", "merges.txt", "special_tokens_map.json"] {
        std::fs::copy(
            data().join("sd1/tokenizer").join(file),
            tokenizer.join(file),
        )
        .unwrap();
    }
    // One token more than the encoder's 49408 rows, as a larger tokenizer has.
    let config = data().join("sd1/tokenizer/tokenizer_config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    config["added_tokens_decoder"]["49408"] =
        serde_json::json!({"content": "<|extra|>", "special": true});
    std::fs::write(tokenizer.join("tokenizer_config.json"), config.to_string()).unwrap();
    let mut encoder =
        TextEncoder::load(&dir.path().join("model.onnx"), &tokenizer, &options()).unwrap();
    let err = encoder
        .encode(&["a <|extra|> cat"])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "the tokenizer has 49409 tokens but the text encoder {} embeds only 49408 (rows of its token \
             embedding): they do not belong together; use the tokenizer folder exported with this encoder",
            dir.path().join("model.onnx").display()
        )
    );
    assert!(
        encoder.encode(&["a cat"]).is_ok(),
        "ids within the table still encode"
    );
}

/// Sana's prompts (the default complex human instruction, lowercased, BOS and the last 15 of 867 tokens kept)
/// and its negative prompt (no instruction, 16 tokens as they are) give exactly the states and masks
/// ORTSanaPipeline fed its transformer: [negative ×2, prompt ×2] in the guided case.
#[test]
fn sana_prompts_and_negative_prompt_are_the_transformers_feed() {
    let reference = reference("sana");
    let case = &reference["cases"][1];
    let feed = &case["transformer_step0"]["inputs"];
    let states = npy(&data().join(feed["encoder_hidden_states"]["file"].as_str().unwrap()));
    let mask: ArrayD<i64> =
        read_npy(data().join(feed["encoder_attention_mask"]["file"].as_str().unwrap())).unwrap();
    let prompts: Vec<&str> = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let options = PromptOptions {
        max_sequence_length: Some(16),
        instruction: Some(difflab::engine::DEFAULT_INSTRUCTION.join("\n")),
    };
    let mut encoders = encoders("sana");
    let negative = reference["negative_prompt"].as_str().unwrap();
    let neg = encode_prompts(&mut encoders, &[negative], &options, PromptSide::Negative).unwrap();
    let pos = encode_prompts(&mut encoders, &prompts, &options, PromptSide::Prompt).unwrap();
    let rows = [&neg[0], &neg[0], &pos[0], &pos[1]];
    let per = 16 * 8;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.hidden_states.shape, vec![16, 8]);
        let diff = max_abs_diff(&row.hidden_states.data, &states[i * per..(i + 1) * per]);
        assert!(diff < 1e-5, "row {i}: states differ by {diff}");
        let got: Vec<i64> = row
            .text_mask
            .as_ref()
            .unwrap()
            .data
            .iter()
            .map(|&m| m as i64)
            .collect();
        let want: Vec<i64> = mask.iter().skip(i * 16).take(16).copied().collect();
        assert_eq!(got, want, "row {i}: mask");
    }
}

/// With `complex_human_instruction = false` Sana's prompts go to Gemma as they are (lowercased, 16 tokens, all
/// kept), as the pipeline encodes them with `complex_human_instruction=None`.
#[test]
fn sana_prompts_without_the_instruction_are_encoded_as_they_are() {
    let reference = reference("sana");
    let batch = &reference["text_encoders"]["batches"]["prompts_no_chi"];
    let want = npy(&data().join(
        batch["outputs"]["last_hidden_state"]["file"]
            .as_str()
            .unwrap(),
    ));
    let options = PromptOptions {
        max_sequence_length: Some(16),
        instruction: None,
    };
    let mut encoders = encoders("sana");
    let got = encode_prompts(
        &mut encoders,
        &["A Red Circle ", "a cat"],
        &options,
        PromptSide::Prompt,
    )
    .unwrap();
    let got: Vec<f32> = got
        .iter()
        .flat_map(|e| e.hidden_states.data.clone())
        .collect();
    assert!(max_abs_diff(&got, &want) < 1e-5);
}

/// A Sana prompt is cut where the pipeline cuts it, after the instruction: the instruction's tokens (with BOS)
/// plus `max_sequence_length - 2`, and the instruction's trailing space joins the prompt's first word, so a
/// prompt keeps 15 tokens of its own with or without the instruction, as a negative prompt does (BOS and 15).
#[test]
fn sana_prompts_are_cut_after_the_instruction() {
    let mut encoders = encoders("sana");
    let words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen";
    let with = PromptOptions {
        max_sequence_length: Some(16),
        instruction: Some(difflab::engine::DEFAULT_INSTRUCTION.join("\n")),
    };
    let without = PromptOptions {
        instruction: None,
        ..with.clone()
    };
    let cut = |options: &PromptOptions, side| {
        let (max, cut) = difflab::engine::cut_off(&encoders, words, options, side).unwrap();
        assert_eq!(max, 16);
        cut
    };
    let prompt_cut = cut(&with, PromptSide::Prompt);
    let negative_cut = cut(&with, PromptSide::Negative);
    let bare_cut = cut(&without, PromptSide::Prompt);
    assert_eq!(negative_cut, bare_cut);
    assert_eq!(prompt_cut, bare_cut);
    assert!(
        words.ends_with(&prompt_cut) && prompt_cut.len() < words.len() / 2,
        "{prompt_cut:?}"
    );
    // What is cut is what the transformer does not see.
    let kept = encode_prompts(&mut encoders, &[words], &without, PromptSide::Prompt).unwrap();
    assert_eq!(kept[0].text_mask.as_ref().unwrap().data, vec![1.0; 16]);
}
