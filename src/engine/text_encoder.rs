//! A CLIP (or T5) text encoder exported to ONNX, with the tokenizer from its pipeline folder: prompts in, every
//! output of the encoder out (hidden states, pooled embeddings), as ONNX Runtime gives them.

use std::collections::BTreeMap;
use std::path::Path;

use super::clip_tokenizer::ClipTokenizer;
use super::denoiser::NonFinite;
use super::error::{EngineError, ort_error};
use super::floats::{is_float_tensor, read_floats};
use super::packing::TypedBuf;
use super::roles::{ElemType, TensorSpec};
use super::session::{OnnxModel, OnnxOptions};

/// One output of the encoder for a batch of prompts: its shape (batch first) and values.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderOutput {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl EncoderOutput {
    /// Item `i` of the batch.
    pub fn item(&self, i: usize) -> &[f32] {
        let per: usize = self.shape[1..].iter().product();
        &self.data[i * per..(i + 1) * per]
    }
}

pub struct TextEncoder {
    model: OnnxModel,
    tokenizer: ClipTokenizer,
    input_ids: TensorSpec,
    /// The attention-mask input, for encoders exported with one.
    attention_mask: Option<TensorSpec>,
}

impl TextEncoder {
    /// Opens the encoder and its tokenizer, checking that the tokenizer's ids fit the encoder's vocabulary
    /// (from the encoder's `config.json`, when there is one; without it, `encode` names the mismatch).
    pub fn load(
        model: &Path,
        tokenizer: &Path,
        options: &OnnxOptions,
    ) -> Result<Self, EngineError> {
        let tokenizer = ClipTokenizer::from_folder(tokenizer)
            .map_err(|e| EngineError::Options(e.to_string()))?;
        check_vocabulary(model, &tokenizer)?;
        let model = OnnxModel::open(model, options)?;
        let int_input = |name: &str| {
            model
                .inputs()
                .iter()
                .find(|s| s.name == name && matches!(s.elem, ElemType::I64 | ElemType::I32))
                .cloned()
        };
        let input_ids = int_input("input_ids").ok_or_else(|| {
            EngineError::Options(format!(
                "{}: a text encoder takes int64 `input_ids` [batch, tokens]; its inputs are {}",
                model.path().display(),
                describe(model.inputs())
            ))
        })?;
        let attention_mask = int_input("attention_mask");
        Ok(Self {
            model,
            tokenizer,
            input_ids,
            attention_mask,
        })
    }

    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// Pads and truncates prompts to `max_length` tokens (T5's `max_sequence_length`).
    pub fn set_max_length(&mut self, max_length: usize) {
        self.tokenizer.set_max_length(max_length);
    }

    /// Tokenizes the prompts (padded to the tokenizer's max length) and runs the encoder on them: every float
    /// output by name.
    pub fn encode(
        &mut self,
        prompts: &[&str],
    ) -> Result<BTreeMap<String, EncoderOutput>, EngineError> {
        self.encode_masked(prompts).map(|(outputs, _)| outputs)
    }

    /// [`Self::encode`], with the attention mask of each prompt's tokens (1 real, 0 padding), prompt after prompt.
    pub fn encode_masked(
        &mut self,
        prompts: &[&str],
    ) -> Result<(BTreeMap<String, EncoderOutput>, Vec<i64>), EngineError> {
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for prompt in prompts {
            let tokens = self
                .tokenizer
                .encode(prompt)
                .map_err(EngineError::Options)?;
            ids.extend(tokens.ids.iter().map(|&i| i as f64));
            mask.extend_from_slice(&tokens.attention_mask);
        }
        let largest_id = ids.iter().copied().fold(0.0, f64::max) as usize;
        let dims = [prompts.len() as i64, self.tokenizer.max_length() as i64];
        let (mut ids_buf, mut mask_buf) = (TypedBuf::default(), TypedBuf::default());
        ids_buf.fill(self.input_ids.elem, ids.into_iter());
        let mut inputs = vec![(
            self.input_ids.name.clone(),
            ids_buf.view(&dims).map_err(ort_error)?,
        )];
        if let Some(spec) = &self.attention_mask {
            mask_buf.fill(spec.elem, mask.iter().map(|&m| m as f64));
            inputs.push((spec.name.clone(), mask_buf.view(&dims).map_err(ort_error)?));
        }
        let path = self.model.path().to_path_buf();
        let outputs = self.model.session.run(inputs).map_err(|e| {
            match embedding_rows(&e.to_string()).filter(|&rows| largest_id >= rows) {
                Some(rows) => mismatch(&self.tokenizer, &path, rows, "rows of its token embedding"),
                None => ort_error(e),
            }
        })?;
        let mut all = BTreeMap::new();
        for (name, value) in outputs.iter() {
            if !is_float_tensor(&value) {
                continue;
            }
            let (shape, data) = read_floats(&value).map_err(ort_error)?;
            if let Some(bad) = NonFinite::count(&data) {
                return Err(EngineError::Options(format!(
                    "{}: the text encoder's output `{name}` is not finite ({bad}) for prompts {prompts:?}; a float16 \
                     encoder can overflow: use a float32 export of the text encoder",
                    path.display()
                )));
            }
            let shape = shape.iter().map(|&d| d as usize).collect();
            all.insert(name.to_string(), EncoderOutput { shape, data });
        }
        Ok((all, mask))
    }
}

/// A tokenizer whose ids reach past the encoder's token embedding is the wrong tokenizer for it.
fn check_vocabulary(model: &Path, tokenizer: &ClipTokenizer) -> Result<(), EngineError> {
    let config = model.with_file_name("config.json");
    let Ok(text) = std::fs::read_to_string(&config) else {
        return Ok(());
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        EngineError::Options(format!("{} is not valid JSON: {e}", config.display()))
    })?;
    let vocab = json.get("vocab_size").and_then(serde_json::Value::as_u64);
    match vocab {
        Some(n) if (n as usize) < tokenizer.vocab_size() => Err(mismatch(
            tokenizer,
            model,
            n as usize,
            &format!("vocab_size in {}", config.display()),
        )),
        _ => Ok(()),
    }
}

/// The tokenizer's ids reach past the `rows` tokens the encoder embeds (`source` says where that count
/// comes from).
fn mismatch(tokenizer: &ClipTokenizer, model: &Path, rows: usize, source: &str) -> EngineError {
    EngineError::Options(format!(
        "the tokenizer has {} tokens but the text encoder {} embeds only {rows} ({source}): \
         they do not belong together; use the tokenizer folder exported with this encoder",
        tokenizer.vocab_size(),
        model.display(),
    ))
}

/// The rows of the table an out-of-range Gather indexed, from ONNX Runtime's message ("indices element
/// out of data bounds, idx=49407 must be within the inclusive range [-1000,999]"): without a config.json,
/// this is how a text encoder says its token embedding is smaller than the tokenizer.
fn embedding_rows(message: &str) -> Option<usize> {
    let pattern = regex::Regex::new(
        r"out of data bounds, idx=-?\d+ must be within the inclusive range \[-(\d+),",
    )
    .ok()?;
    pattern.captures(message)?.get(1)?.as_str().parse().ok()
}

fn describe(specs: &[TensorSpec]) -> String {
    let parts: Vec<String> = specs.iter().map(TensorSpec::describe).collect();
    parts.join(", ")
}
