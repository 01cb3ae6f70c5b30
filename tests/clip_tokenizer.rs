//! CLIP tokenization from a pipeline's own tokenizer files equals transformers' `CLIPTokenizer` on
//! awkward prompts (punctuation, unicode, HTML entities, long prompts cut at 77, the empty prompt), for
//! both pad tokens: `<|endoftext|>` (SD 1.x) and `!` (SD 2.x, SDXL's second tokenizer).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::engine::clip_tokenizer::{ClipTokenizer, TokenizerKind};
use serde_json::Value;

fn pipelines() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipelines")
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn ids_and_masks_equal_transformers_for_both_pad_tokens() {
    let text = std::fs::read_to_string(pipelines().join("tokenizer_reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for (name, t) in reference["tokenizers"].as_object().unwrap() {
        let folder = pipelines().join(t["folder"].as_str().unwrap());
        let tokenizer = ClipTokenizer::from_folder(&folder).unwrap();
        assert_eq!(tokenizer.max_length(), 77);
        assert_eq!(
            i64::from(tokenizer.pad_id()),
            t["pad_token_id"].as_i64().unwrap(),
            "{name}"
        );
        for case in t["prompts"].as_array().unwrap() {
            let prompt = case["prompt"].as_str().unwrap();
            let got = tokenizer.encode(prompt).unwrap();
            assert_eq!(got.ids, ids(&case["ids"]), "{name}: {prompt:?}");
            assert_eq!(
                got.attention_mask,
                ids(&case["attention_mask"]),
                "{name}: {prompt:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "checked {checked} prompts");
}

#[test]
fn a_folder_without_its_files_is_an_error_naming_it() {
    let dir = std::env::temp_dir().join(format!("difflab-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = ClipTokenizer::from_folder(&dir).err().unwrap().to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains(&dir.display().to_string()),
        "{err}"
    );
    std::fs::copy(
        pipelines().join("sd1/tokenizer/tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    let err = ClipTokenizer::from_folder(&dir).err().unwrap().to_string();
    assert!(err.contains("vocab.json"), "{err}");
}

/// SD3's three tokenizers (two CLIPs and T5) from its folder equal transformers' on the same prompts: T5 cut at
/// `max_sequence_length` keeping `</s>`, padded with `<pad>`, special tokens kept whole, no HTML unescaping.
#[test]
fn sd3_tokenizers_equal_transformers_t5_at_max_sequence_length() {
    let path = pipelines().join("sd3/reference/reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for (name, t) in reference["tokenizers"].as_object().unwrap() {
        let mut tokenizer =
            ClipTokenizer::from_folder(&pipelines().join("sd3").join(name)).unwrap();
        if t["class"].as_str().unwrap().starts_with("T5") {
            assert!(tokenizer.is_t5(), "{name}");
            tokenizer.set_max_length(reference["max_sequence_length"].as_u64().unwrap() as usize);
        }
        for case in t["prompts"].as_array().unwrap() {
            let prompt = case["prompt"].as_str().unwrap();
            let tokens = tokenizer.encode(prompt).unwrap();
            assert_eq!(tokens.ids, ids(&case["ids"]), "{name} {prompt:?}");
            assert_eq!(
                tokens.attention_mask,
                ids(&case["attention_mask"]),
                "{name} {prompt:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 36, "three tokenizers × twelve prompts");
}

/// Sana's Gemma tokenizer from its folder equals transformers' `GemmaTokenizerFast` as the pipeline calls it
/// (BOS, no EOS, right padding to 16, truncation keeping the first tokens), on the raw prompts and on the
/// pipeline's lowercased, stripped text.
#[test]
fn sana_gemma_tokenizer_equals_transformers() {
    let path = pipelines().join("sana/reference/reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut tokenizer = ClipTokenizer::from_folder(&pipelines().join("sana/tokenizer")).unwrap();
    assert_eq!(tokenizer.kind(), TokenizerKind::Gemma);
    tokenizer.set_max_length(reference["max_sequence_length"].as_u64().unwrap() as usize);
    let cases = reference["tokenizers"]["tokenizer"]["prompts"]
        .as_array()
        .unwrap();
    for case in cases {
        for (text, ids_key, mask_key) in [
            (&case["prompt"], "ids", "attention_mask"),
            (
                &case["pipeline_text"],
                "pipeline_ids",
                "pipeline_attention_mask",
            ),
        ] {
            let text = text.as_str().unwrap();
            let tokens = tokenizer.encode(text).unwrap();
            assert_eq!(tokens.ids, ids(&case[ids_key]), "{text:?}");
            assert_eq!(tokens.attention_mask, ids(&case[mask_key]), "{text:?}");
        }
    }
    assert_eq!(cases.len(), 12);
    let long = cases
        .iter()
        .find(|c| c["untruncated_length"].as_u64() > Some(16))
        .unwrap();
    let cut = tokenizer.cut_off(long["prompt"].as_str().unwrap()).unwrap();
    assert!(cut.is_some_and(|c| !c.is_empty()));
}
