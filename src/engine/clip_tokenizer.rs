//! CLIP's tokenizer (and T5's, which SD3 and Flux pair with it, and Gemma's, Sana's), from a pipeline's own
//! tokenizer folder:
//! `tokenizer.json` when the export has one, else the files transformers' `CLIPTokenizer` reads
//! (vocab.json, merges.txt and tokenizer_config.json), put together as transformers' converter does for
//! `CLIPTokenizerFast`. Max length, padding, BOS and EOS come from the folder, never from constants: SD 1.x
//! pads with `<|endoftext|>`, SD 2.x and SDXL's second tokenizer with `!`, T5 with `<pad>`; a pipeline may
//! set T5's length (`max_sequence_length`). Gemma adds a BOS and no EOS, so truncation keeps the first tokens;
//! its folder gives no usable length, which Sana's pipeline always sets.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tokenizers::Tokenizer;

/// CLIP's pre-tokenizer pattern (transformers' `CLIPConverter`).
const CLIP_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("tokenizer {}: {message}", folder.display())]
pub struct TokenizerError {
    pub folder: PathBuf,
    pub message: String,
}

/// A prompt as the text encoder takes it: `max_length` ids, padded, and which are real tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
}

/// Which tokenizer family a folder holds, from its `tokenizer_class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// BOS, tokens, EOS; HTML entities undone first (ftfy), as transformers' `CLIPTokenizer` does.
    Clip,
    /// Tokens and `</s>`, padded with `<pad>`.
    T5,
    /// BOS and tokens, no EOS (Sana's Gemma 2).
    Gemma,
}

/// Sana's default `max_sequence_length`, for a Gemma folder whose `model_max_length` is transformers' "no
/// limit" sentinel.
const GEMMA_DEFAULT_LENGTH: usize = 300;

/// A CLIP tokenizer padding and truncating to the model's length, as diffusers calls it
/// (`padding="max_length", truncation=True`).
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
    pad_id: u32,
    eos_id: u32,
    kind: TokenizerKind,
}

impl ClipTokenizer {
    /// Reads the tokenizer in `folder`.
    pub fn from_folder(folder: &Path) -> Result<Self, TokenizerError> {
        let fail = |message: String| TokenizerError {
            folder: folder.to_path_buf(),
            message,
        };
        let config = read_json(&folder.join("tokenizer_config.json")).map_err(&fail)?;
        let fast = folder.join("tokenizer.json");
        let tokenizer = if fast.is_file() {
            Tokenizer::from_file(&fast)
                .map_err(|e| fail(format!("cannot read tokenizer.json: {e}")))?
        } else {
            let spec = slow_files_as_json(folder, &config).map_err(&fail)?;
            spec.parse::<Tokenizer>().map_err(|e| {
                fail(format!(
                    "vocab.json and merges.txt do not make a tokenizer: {e}"
                ))
            })?
        };
        let token = |key: &str| -> Result<u32, TokenizerError> {
            let text = token_text(&config, key)
                .ok_or_else(|| fail(format!("tokenizer_config.json names no {key}")))?;
            tokenizer
                .token_to_id(&text)
                .ok_or_else(|| fail(format!("its {key} {text:?} is not in the vocabulary")))
        };
        let class = config.get("tokenizer_class").and_then(Value::as_str);
        let kind = match class {
            Some(c) if c.starts_with("T5") => TokenizerKind::T5,
            Some(c) if c.starts_with("Gemma") => TokenizerKind::Gemma,
            _ => TokenizerKind::Clip,
        };
        let max_length = config
            .get("model_max_length")
            .and_then(Value::as_u64)
            .filter(|&n| (2..=1 << 16).contains(&n))
            .map(|n| n as usize);
        let max_length = match (max_length, kind) {
            (Some(n), _) => n,
            (None, TokenizerKind::Gemma) => GEMMA_DEFAULT_LENGTH,
            (None, _) => {
                return Err(fail(
                    "tokenizer_config.json gives no model_max_length (77 for CLIP)".into(),
                ));
            }
        };
        Ok(Self {
            max_length,
            pad_id: token("pad_token")?,
            eos_id: token("eos_token")?,
            kind,
            tokenizer,
        })
    }

    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Pads and truncates to `max_length` tokens instead of the folder's (a pipeline's
    /// `max_sequence_length` for T5).
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length.max(2);
    }

    /// Whether this is a T5 tokenizer (no BOS, `</s>` at the end, padded with `<pad>`).
    pub fn is_t5(&self) -> bool {
        self.kind == TokenizerKind::T5
    }

    /// Whether truncation keeps the EOS at the end (CLIP and T5; Gemma adds none).
    fn ends_with_eos(&self) -> bool {
        self.kind != TokenizerKind::Gemma
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokens in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// `prompt` as ids: BOS, its tokens, EOS, truncated to the max length (keeping the EOS) and padded.
    pub fn encode(&self, prompt: &str) -> Result<Tokens, String> {
        let mut ids = self.untruncated(prompt)?;
        if ids.len() > self.max_length {
            if self.ends_with_eos() {
                ids.truncate(self.max_length - 1);
                ids.push(self.eos_id);
            } else {
                ids.truncate(self.max_length);
            }
        }
        let real = ids.len();
        ids.resize(self.max_length, self.pad_id);
        Ok(Tokens {
            ids: ids.iter().map(|&i| i64::from(i)).collect(),
            attention_mask: (0..self.max_length).map(|i| i64::from(i < real)).collect(),
        })
    }

    /// The text `encode` cuts off a prompt longer than the max length, as diffusers shows it in its
    /// warning (the tokens between the kept ones and the EOS, decoded); `None` when the prompt fits.
    pub fn cut_off(&self, prompt: &str) -> Result<Option<String>, String> {
        self.cut_off_at(prompt, self.max_length)
    }

    /// [`Self::cut_off`] at `max_length` tokens.
    pub fn cut_off_at(&self, prompt: &str, max_length: usize) -> Result<Option<String>, String> {
        let ids = self.untruncated(prompt)?;
        if ids.len() <= max_length {
            return Ok(None);
        }
        let cut = match self.ends_with_eos() {
            true => &ids[max_length - 1..ids.len() - 1],
            false => &ids[max_length..],
        };
        let text = self
            .tokenizer
            .decode(cut, true)
            .map_err(|e| format!("cannot decode the cut-off tokens of {prompt:?}: {e}"))?;
        // CLIP's slow files end each word with </w>, which the byte-level decoder keeps.
        Ok(Some(text.replace("</w>", " ").trim().to_string()))
    }

    /// The number of tokens `text` takes with its special tokens, untruncated (Sana's instruction prefix).
    pub fn count(&self, text: &str) -> Result<usize, String> {
        self.untruncated(text).map(|ids| ids.len())
    }

    /// BOS, the prompt's tokens and EOS, however many.
    fn untruncated(&self, prompt: &str) -> Result<Vec<u32>, String> {
        let text = match self.kind {
            TokenizerKind::Clip => unescape_html(prompt),
            _ => prompt.into(),
        };
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| format!("cannot tokenize {prompt:?}: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }
}

/// HTML entities as ftfy's `fix_text` undoes them (only in text without tags), which transformers'
/// `CLIPTokenizer` applies when ftfy is installed, as it is with diffusers' usual setup.
fn unescape_html(prompt: &str) -> std::borrow::Cow<'_, str> {
    if prompt.contains('<') && prompt.contains('>') {
        return prompt.into();
    }
    html_escape::decode_html_entities(prompt)
}

fn read_json(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {}: {}",
            path.display(),
            crate::path_error::reason(path, &e)
        )
    })?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("{} is not a JSON object", path.display())),
        Err(e) => Err(format!("{} is not valid JSON: {e}", path.display())),
    }
}

/// A special token's text: a string, or an object with `content`, as tokenizer configs write both.
fn token_text(config: &Map<String, Value>, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The `tokenizer.json` that transformers' converter makes of CLIP's slow files.
fn slow_files_as_json(folder: &Path, config: &Map<String, Value>) -> Result<String, String> {
    let vocab = read_json(&folder.join("vocab.json"))?;
    let merges_path = folder.join("merges.txt");
    let merges_text = std::fs::read_to_string(&merges_path).map_err(|e| {
        format!(
            "cannot read {}: {}",
            merges_path.display(),
            crate::path_error::reason(&merges_path, &e)
        )
    })?;
    let merges: Vec<Value> = merges_text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(|l| Value::String(l.to_string()))
        .collect();
    let id_of = |text: &str| vocab.get(text).and_then(Value::as_u64);
    let bos = token_text(config, "bos_token").ok_or("tokenizer_config.json names no bos_token")?;
    let eos = token_text(config, "eos_token").ok_or("tokenizer_config.json names no eos_token")?;
    let unk = token_text(config, "unk_token").unwrap_or_else(|| eos.clone());
    let (Some(bos_id), Some(eos_id)) = (id_of(&bos), id_of(&eos)) else {
        return Err(format!(
            "vocab.json lacks the special tokens {bos:?} and {eos:?}"
        ));
    };
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens(config, &vocab),
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"},
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [eos, eos_id], "cls": [bos, bos_id],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    });
    Ok(spec.to_string())
}

/// The special tokens, as transformers adds them: those of `added_tokens_decoder`, else the named
/// special tokens found in the vocabulary. A pad token such as SD 2's `!` is one of them, so a `!` in
/// a prompt is that token, as in transformers.
fn added_tokens(config: &Map<String, Value>, vocab: &Map<String, Value>) -> Vec<Value> {
    let flag = |o: &Map<String, Value>, key: &str, default: bool| {
        o.get(key).and_then(Value::as_bool).unwrap_or(default)
    };
    if let Some(Value::Object(decoder)) = config.get("added_tokens_decoder") {
        let mut tokens: Vec<(u64, Value)> = decoder
            .iter()
            .filter_map(|(id, t)| {
                let id: u64 = id.parse().ok()?;
                let t = t.as_object()?;
                Some((
                    id,
                    json!({
                        "id": id,
                        "content": t.get("content")?.as_str()?,
                        "single_word": flag(t, "single_word", false),
                        "lstrip": flag(t, "lstrip", false),
                        "rstrip": flag(t, "rstrip", false),
                        "normalized": flag(t, "normalized", true),
                        "special": flag(t, "special", true),
                    }),
                ))
            })
            .collect();
        tokens.sort_by_key(|(id, _)| *id);
        return tokens.into_iter().map(|(_, t)| t).collect();
    }
    let mut tokens: Vec<Value> = Vec::new();
    for key in ["pad_token", "bos_token", "eos_token", "unk_token"] {
        let Some(text) = token_text(config, key) else {
            continue;
        };
        let Some(id) = vocab.get(&text).and_then(Value::as_u64) else {
            continue;
        };
        if tokens.iter().all(|t| t["id"] != id) {
            tokens.push(
                json!({"id": id, "content": text, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": true, "special": true}),
            );
        }
    }
    tokens
}
