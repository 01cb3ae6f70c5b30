//! Prompts to U-Net conditioning as each pipeline family computes it. Stable Diffusion 1.x/2.x: the text
//! encoder's last hidden state. SDXL: the penultimate hidden states of both encoders side by side on the
//! feature axis, text_encoder_2's pooled projection as `text_embeds`, and `time_ids` from the image size.

use std::collections::BTreeMap;

use super::condition::{Condition, ItemTensor};
use super::error::EngineError;
use super::text_encoder::{EncoderOutput, TextEncoder};

/// What the U-Net takes for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptEmbedding {
    /// `encoder_hidden_states`: tokens × width.
    pub hidden_states: ItemTensor,
    /// SDXL's pooled `text_embeds`.
    pub pooled: Option<ItemTensor>,
}

impl PromptEmbedding {
    /// The same shapes, all zeros: SDXL's unconditional embedding under `force_zeros_for_empty_prompt`.
    pub fn zeros_like(&self) -> Self {
        Self {
            hidden_states: ItemTensor::zeros(self.hidden_states.shape.clone()),
            pooled: self
                .pooled
                .as_ref()
                .map(|p| ItemTensor::zeros(p.shape.clone())),
        }
    }

    /// The U-Net condition, with SDXL's `time_ids` for an image of `height` × `width` pixels when the
    /// embedding is SDXL's (has a pooled part).
    pub fn condition(&self, height: usize, width: usize) -> Condition {
        let time_ids = self.pooled.as_ref().map(|_| {
            let (h, w) = (height as f32, width as f32);
            ItemTensor::new(vec![6], vec![h, w, 0.0, 0.0, h, w])
        });
        Condition {
            hidden_states: Some(self.hidden_states.clone()),
            text_embeds: self.pooled.clone(),
            time_ids,
            ..Condition::default()
        }
    }
}

/// Encodes `prompts` with the pipeline's text encoders: one encoder is SD 1.x/2.x, two are SDXL.
pub fn encode_prompts(
    encoders: &mut [TextEncoder],
    prompts: &[&str],
) -> Result<Vec<PromptEmbedding>, EngineError> {
    match encoders {
        [one] => {
            let outputs = one.encode(prompts)?;
            let hidden = output(&outputs, "last_hidden_state", one)?;
            Ok((0..prompts.len())
                .map(|i| PromptEmbedding {
                    hidden_states: item(hidden, i),
                    pooled: None,
                })
                .collect())
        }
        [first, second] => encode_xl(first, second, prompts),
        _ => Err(EngineError::Options(format!(
            "a pipeline has one text encoder (Stable Diffusion) or two (SDXL), not {}",
            encoders.len()
        ))),
    }
}

fn encode_xl(
    first: &mut TextEncoder,
    second: &mut TextEncoder,
    prompts: &[&str],
) -> Result<Vec<PromptEmbedding>, EngineError> {
    let a = first.encode(prompts)?;
    let b = second.encode(prompts)?;
    let hidden_a = output(&a, &penultimate(&a, first)?, first)?;
    let hidden_b = output(&b, &penultimate(&b, second)?, second)?;
    let pooled = output(&b, "text_embeds", second)?;
    let mut embeddings = Vec::new();
    for i in 0..prompts.len() {
        let (ia, ib) = (item(hidden_a, i), item(hidden_b, i));
        let (tokens, wa, wb) = (ia.shape[0], ia.shape[1], ib.shape[1]);
        let mut data = Vec::with_capacity(tokens * (wa + wb));
        for t in 0..tokens {
            data.extend_from_slice(&ia.data[t * wa..(t + 1) * wa]);
            data.extend_from_slice(&ib.data[t * wb..(t + 1) * wb]);
        }
        embeddings.push(PromptEmbedding {
            hidden_states: ItemTensor::new(vec![tokens, wa + wb], data),
            pooled: Some(item(pooled, i)),
        });
    }
    Ok(embeddings)
}

/// `hidden_states.{N-1}` of an encoder exported with hidden states `hidden_states.0` … `hidden_states.N`:
/// the penultimate layer, as SDXL's pipeline takes `hidden_states[-2]`.
fn penultimate(
    outputs: &BTreeMap<String, EncoderOutput>,
    encoder: &TextEncoder,
) -> Result<String, EngineError> {
    let last = outputs
        .keys()
        .filter_map(|k| k.strip_prefix("hidden_states.")?.parse::<usize>().ok())
        .max()
        .filter(|&n| n >= 1)
        .ok_or_else(|| {
            EngineError::Options(format!(
                "{}: SDXL needs the encoder's hidden states (outputs hidden_states.0 … hidden_states.N, as \
                 `optimum-cli export onnx` writes them); its outputs are {}",
                encoder.model().path().display(),
                names(outputs)
            ))
        })?;
    Ok(format!("hidden_states.{}", last - 1))
}

fn output<'a>(
    outputs: &'a BTreeMap<String, EncoderOutput>,
    name: &str,
    encoder: &TextEncoder,
) -> Result<&'a EncoderOutput, EngineError> {
    outputs.get(name).ok_or_else(|| {
        EngineError::Options(format!(
            "{}: the text encoder has no output `{name}`; its outputs are {}",
            encoder.model().path().display(),
            names(outputs)
        ))
    })
}

fn item(output: &EncoderOutput, i: usize) -> ItemTensor {
    ItemTensor::new(output.shape[1..].to_vec(), output.item(i).to_vec())
}

fn names(outputs: &BTreeMap<String, EncoderOutput>) -> String {
    outputs.keys().cloned().collect::<Vec<_>>().join(", ")
}
