//! Prompts to denoiser conditioning as each pipeline family computes it. Stable Diffusion 1.x/2.x: the text
//! encoder's last hidden state. SDXL: the penultimate hidden states of both encoders side by side on the
//! feature axis, text_encoder_2's pooled projection as `text_embeds`, and `time_ids` from the image size.
//! SD3: both CLIPs' penultimate states side by side, zero-padded to T5's width, then T5's states after them
//! on the token axis; both CLIPs' pooled projections side by side as `pooled_projections`. FLUX: T5's states,
//! and CLIP's pooled output as `pooled_projections`. Sana: Gemma 2's states and their mask (`sana_prompts`).

use std::collections::BTreeMap;

use super::clip_tokenizer::TokenizerKind;
use super::condition::{Condition, ItemTensor};
use super::error::EngineError;
use super::sana_prompts::{DEFAULT_MAX_SEQUENCE_LENGTH, SanaFraming, encode_sana, sana_cut_off};
use super::text_encoder::{EncoderOutput, TextEncoder};

/// Whether text is a prompt or the negative prompt: Sana frames them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptSide {
    Prompt,
    Negative,
}

/// What the experiment sets about prompts beyond the pipeline's own files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptOptions {
    /// T5's (SD3, Flux) or Gemma's (Sana) tokens per prompt; `None`: the pipeline's default.
    pub max_sequence_length: Option<usize>,
    /// Sana's complex human instruction (its lines joined with newlines); `None`: no instruction.
    pub instruction: Option<String>,
}

/// What the U-Net takes for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptEmbedding {
    /// `encoder_hidden_states`: tokens × width.
    pub hidden_states: ItemTensor,
    /// SDXL's pooled `text_embeds` (SD3's `pooled_projections`).
    pub pooled: Option<ItemTensor>,
    /// Whether the denoiser also takes SDXL's `time_ids`.
    pub time_ids: bool,
    /// Which tokens are real (Sana's `encoder_attention_mask`), for models that take it.
    pub text_mask: Option<ItemTensor>,
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
            time_ids: self.time_ids,
            text_mask: self.text_mask.clone(),
        }
    }

    /// The denoiser's condition, with SDXL's `time_ids` for an image of `height` × `width` pixels when the
    /// embedding is SDXL's.
    pub fn condition(&self, height: usize, width: usize) -> Condition {
        let time_ids = self.time_ids.then(|| {
            let (h, w) = (height as f32, width as f32);
            ItemTensor::new(vec![6], vec![h, w, 0.0, 0.0, h, w])
        });
        Condition {
            hidden_states: Some(self.hidden_states.clone()),
            text_embeds: self.pooled.clone(),
            time_ids,
            text_mask: self.text_mask.clone(),
            ..Condition::default()
        }
    }
}

/// T5's token count when the experiment sets none: each pipeline's default `max_sequence_length`
/// (SD3 256, Flux 512).
fn default_t5_length(encoders: &[TextEncoder]) -> usize {
    if encoders.len() == 3 { 256 } else { 512 }
}

/// Whether the pipeline's text encoder is Sana's Gemma.
pub fn is_sana(encoders: &[TextEncoder]) -> bool {
    matches!(encoders, [one] if one.tokenizer().kind() == TokenizerKind::Gemma)
}

/// Encodes `prompts` with the pipeline's text encoders: one encoder is SD 1.x/2.x (or Sana's Gemma), two are
/// SDXL (or FLUX's CLIP and T5), two CLIPs and a T5 are SD3.
pub fn encode_prompts(
    encoders: &mut [TextEncoder],
    prompts: &[&str],
    options: &PromptOptions,
    side: PromptSide,
) -> Result<Vec<PromptEmbedding>, EngineError> {
    if is_sana(encoders) {
        return encode_sana(&mut encoders[0], prompts, &sana_framing(options), side);
    }
    let t5_length = options
        .max_sequence_length
        .unwrap_or_else(|| default_t5_length(encoders));
    for e in encoders.iter_mut().filter(|e| e.tokenizer().is_t5()) {
        e.set_max_length(t5_length);
    }
    match encoders {
        [one] => {
            let outputs = one.encode(prompts)?;
            let hidden = output(&outputs, "last_hidden_state", one)?;
            Ok((0..prompts.len())
                .map(|i| PromptEmbedding {
                    hidden_states: item(hidden, i),
                    pooled: None,
                    time_ids: false,
                    text_mask: None,
                })
                .collect())
        }
        [clip, t5] if t5.tokenizer().is_t5() => encode_flux(clip, t5, prompts),
        [first, second] => encode_xl(first, second, prompts),
        [first, second, t5] if t5.tokenizer().is_t5() => encode_sd3(first, second, t5, prompts),
        _ => Err(EngineError::Options(format!(
            "a pipeline has one text encoder (Stable Diffusion), two (SDXL, or FLUX's CLIP and T5) or two CLIPs and a \
             T5 (SD3), not {}",
            encoders.len()
        ))),
    }
}

fn sana_framing(options: &PromptOptions) -> SanaFraming {
    SanaFraming {
        instruction: options.instruction.clone(),
        max_sequence_length: options
            .max_sequence_length
            .unwrap_or(DEFAULT_MAX_SEQUENCE_LENGTH),
    }
}

/// The end of `text` a tokenizer cuts off, as diffusers warns of it, with the token count it is cut at (for
/// SDXL, the first of its tokenizers that cuts); `None` when it fits. Run after `encode_prompts`, which sets T5's
/// length.
pub fn cut_off(
    encoders: &[TextEncoder],
    text: &str,
    options: &PromptOptions,
    side: PromptSide,
) -> Option<(usize, String)> {
    if is_sana(encoders) {
        let framing = sana_framing(options);
        let cut = sana_cut_off(&encoders[0], text, &framing, side)
            .ok()
            .flatten()?;
        return Some((framing.max_sequence_length, cut));
    }
    encoders.iter().find_map(|e| {
        let tokenizer = e.tokenizer();
        let cut = tokenizer.cut_off(text).ok().flatten()?;
        Some((tokenizer.max_length(), cut))
    })
}

/// Every output of a text encoder by name.
type Outputs = BTreeMap<String, EncoderOutput>;

/// Both CLIPs' penultimate states side by side on the feature axis (each item tokens × width), and both
/// encoders' outputs.
fn clip_pair(
    first: &mut TextEncoder,
    second: &mut TextEncoder,
    prompts: &[&str],
) -> Result<(Vec<ItemTensor>, Outputs, Outputs), EngineError> {
    let a = first.encode(prompts)?;
    let b = second.encode(prompts)?;
    let hidden_a = output(&a, &penultimate(&a, first)?, first)?;
    let hidden_b = output(&b, &penultimate(&b, second)?, second)?;
    let side_by_side = (0..prompts.len())
        .map(|i| {
            let (ia, ib) = (item(hidden_a, i), item(hidden_b, i));
            let (tokens, wa, wb) = (ia.shape[0], ia.shape[1], ib.shape[1]);
            let mut data = Vec::with_capacity(tokens * (wa + wb));
            for t in 0..tokens {
                data.extend_from_slice(&ia.data[t * wa..(t + 1) * wa]);
                data.extend_from_slice(&ib.data[t * wb..(t + 1) * wb]);
            }
            ItemTensor::new(vec![tokens, wa + wb], data)
        })
        .collect();
    Ok((side_by_side, a, b))
}

/// diffusers' `FluxPipeline.encode_prompt`: T5's states, and CLIP's pooled output (its states are unused).
fn encode_flux(
    clip: &mut TextEncoder,
    t5: &mut TextEncoder,
    prompts: &[&str],
) -> Result<Vec<PromptEmbedding>, EngineError> {
    let c = clip.encode(prompts)?;
    let pooled = output(&c, "pooler_output", clip)?;
    let t = t5.encode(prompts)?;
    let states = output(&t, "last_hidden_state", t5)?;
    Ok((0..prompts.len())
        .map(|i| PromptEmbedding {
            hidden_states: item(states, i),
            pooled: Some(item(pooled, i)),
            time_ids: false,
            text_mask: None,
        })
        .collect())
}

/// diffusers' `StableDiffusion3Pipeline.encode_prompt`.
fn encode_sd3(
    first: &mut TextEncoder,
    second: &mut TextEncoder,
    t5: &mut TextEncoder,
    prompts: &[&str],
) -> Result<Vec<PromptEmbedding>, EngineError> {
    let (clip, a, b) = clip_pair(first, second, prompts)?;
    let pooled_a = output(&a, "text_embeds", first)?;
    let pooled_b = output(&b, "text_embeds", second)?;
    let t5_out = t5.encode(prompts)?;
    let t5_states = output(&t5_out, "last_hidden_state", t5)?;
    let mut embeddings = Vec::new();
    for (i, clip) in clip.into_iter().enumerate() {
        let t5_item = item(t5_states, i);
        let (width, clip_width) = (t5_item.shape[1], clip.shape[1]);
        if clip_width > width {
            return Err(EngineError::Options(format!(
                "{}: T5's states are {width} wide, narrower than the two CLIPs' {clip_width}; SD3 pads the CLIP states                  to T5's width, so these encoders do not belong together",
                t5.model().path().display()
            )));
        }
        let tokens = clip.shape[0] + t5_item.shape[0];
        let mut data = Vec::with_capacity(tokens * width);
        for row in clip.data.chunks(clip_width) {
            data.extend_from_slice(row);
            data.resize(data.len() + width - clip_width, 0.0);
        }
        data.extend_from_slice(&t5_item.data);
        let (pa, pb) = (pooled_a.item(i), pooled_b.item(i));
        embeddings.push(PromptEmbedding {
            hidden_states: ItemTensor::new(vec![tokens, width], data),
            pooled: Some(ItemTensor::new(
                vec![pa.len() + pb.len()],
                [pa, pb].concat(),
            )),
            time_ids: false,
            text_mask: None,
        });
    }
    Ok(embeddings)
}

fn encode_xl(
    first: &mut TextEncoder,
    second: &mut TextEncoder,
    prompts: &[&str],
) -> Result<Vec<PromptEmbedding>, EngineError> {
    let (clip, _, b) = clip_pair(first, second, prompts)?;
    let pooled = output(&b, "text_embeds", second)?;
    Ok(clip
        .into_iter()
        .enumerate()
        .map(|(i, hidden_states)| PromptEmbedding {
            hidden_states,
            pooled: Some(item(pooled, i)),
            time_ids: true,
            text_mask: None,
        })
        .collect())
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
