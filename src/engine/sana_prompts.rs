//! Sana's prompts as diffusers' `SanaPipeline.encode_prompt` frames them for Gemma 2: each prompt lowercased
//! and stripped, the complex human instruction put before it, tokenized to the instruction's token count plus
//! `max_sequence_length - 2` (BOS, no EOS, padded on the right), and of Gemma's states and mask only the BOS
//! and the last `max_sequence_length - 1` positions kept. A negative prompt gets neither the instruction nor
//! the selection: `max_sequence_length` tokens as they are.

use super::condition::ItemTensor;
use super::error::EngineError;
use super::prompts::{PromptEmbedding, PromptSide};
use super::text_encoder::TextEncoder;

/// `SanaPipeline.__call__`'s default `complex_human_instruction`, joined with newlines before each prompt.
pub const DEFAULT_INSTRUCTION: [&str; 8] = [
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:",
    "User Prompt: ",
];

/// `SanaPipeline`'s default `max_sequence_length`.
pub const DEFAULT_MAX_SEQUENCE_LENGTH: usize = 300;

/// How one run frames Sana's prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct SanaFraming {
    /// The instruction text put before each prompt (its lines joined with newlines), if any.
    pub instruction: Option<String>,
    pub max_sequence_length: usize,
}

impl SanaFraming {
    /// The text Gemma reads for `prompt`: `_text_preprocessing` (lowercase, strip), then the instruction in
    /// front of a prompt (never a negative one).
    pub fn text(&self, prompt: &str, side: PromptSide) -> String {
        let plain = prompt.to_lowercase().trim().to_string();
        match (&self.instruction, side) {
            (Some(instruction), PromptSide::Prompt) => format!("{instruction}{plain}"),
            _ => plain,
        }
    }

    /// The padded length: the instruction's own tokens (with its BOS) plus `max_sequence_length - 2`.
    pub fn padded_length(
        &self,
        encoder: &TextEncoder,
        side: PromptSide,
    ) -> Result<usize, EngineError> {
        match (&self.instruction, side) {
            (Some(instruction), PromptSide::Prompt) => {
                let tokens = encoder
                    .tokenizer()
                    .count(instruction)
                    .map_err(EngineError::Options)?;
                Ok(tokens + self.max_sequence_length - 2)
            }
            _ => Ok(self.max_sequence_length),
        }
    }

    /// The positions the transformer gets of `length` tokens: the first and the last `max_sequence_length - 1`
    /// (`select_index = [0] + range(-max_sequence_length + 1, 0)`); a negative prompt keeps all.
    fn selected(&self, length: usize, side: PromptSide) -> Vec<usize> {
        let keep = self.max_sequence_length - 1;
        match side {
            PromptSide::Prompt if length > keep => {
                std::iter::once(0).chain(length - keep..length).collect()
            }
            _ => (0..length).collect(),
        }
    }
}

/// The end of `prompt` that Gemma's tokenizer cuts off, as diffusers warns of it; `None` when it fits.
pub fn sana_cut_off(
    gemma: &TextEncoder,
    prompt: &str,
    framing: &SanaFraming,
    side: PromptSide,
) -> Result<Option<String>, EngineError> {
    let length = framing.padded_length(gemma, side)?;
    let text = framing.text(prompt, side);
    gemma
        .tokenizer()
        .cut_off_at(&text, length)
        .map_err(EngineError::Options)
}

/// Gemma's last hidden state at the selected positions, with their attention mask, for each prompt.
pub fn encode_sana(
    gemma: &mut TextEncoder,
    prompts: &[&str],
    framing: &SanaFraming,
    side: PromptSide,
) -> Result<Vec<PromptEmbedding>, EngineError> {
    let texts: Vec<String> = prompts.iter().map(|p| framing.text(p, side)).collect();
    gemma.set_max_length(framing.padded_length(gemma, side)?);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (outputs, masks) = gemma.encode_masked(&refs)?;
    let states = outputs.get("last_hidden_state").ok_or_else(|| {
        EngineError::Options(format!(
            "{}: Sana's text encoder has no output `last_hidden_state`; its outputs are {}",
            gemma.model().path().display(),
            outputs.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let (length, width) = (states.shape[1], states.shape[2]);
    let positions = framing.selected(length, side);
    let mut embeddings = Vec::with_capacity(texts.len());
    for (i, mask) in masks.chunks(length).enumerate() {
        let item = states.item(i);
        let mut hidden = Vec::with_capacity(positions.len() * width);
        for &p in &positions {
            hidden.extend_from_slice(&item[p * width..(p + 1) * width]);
        }
        let mask: Vec<f32> = positions.iter().map(|&p| mask[p] as f32).collect();
        embeddings.push(PromptEmbedding {
            hidden_states: ItemTensor::new(vec![positions.len(), width], hidden),
            pooled: None,
            time_ids: false,
            text_mask: Some(ItemTensor::new(vec![positions.len()], mask)),
        });
    }
    Ok(embeddings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(instruction: Option<&str>) -> SanaFraming {
        SanaFraming {
            instruction: instruction.map(str::to_string),
            max_sequence_length: 4,
        }
    }

    #[test]
    fn prompts_are_lowercased_stripped_and_prefixed_but_negatives_are_not_prefixed() {
        let f = framing(Some("Do: "));
        assert_eq!(f.text("  A CAT! ", PromptSide::Prompt), "Do: a cat!");
        assert_eq!(f.text("  Blurry ", PromptSide::Negative), "blurry");
        assert_eq!(framing(None).text("A Cat", PromptSide::Prompt), "a cat");
    }

    #[test]
    fn the_bos_and_the_last_tokens_are_selected_for_prompts_only() {
        let f = framing(Some("x"));
        assert_eq!(f.selected(10, PromptSide::Prompt), vec![0, 7, 8, 9]);
        assert_eq!(f.selected(4, PromptSide::Prompt), vec![0, 1, 2, 3]);
        assert_eq!(f.selected(4, PromptSide::Negative), vec![0, 1, 2, 3]);
    }
}
