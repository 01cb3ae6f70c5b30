//! What a run's samples are conditioned on: the experiment's prompts (through the pipeline's text encoders,
//! or precomputed embeddings) or classes, and the unconditional condition classifier-free guidance needs, as
//! rows of the U-Net's condition table.

use std::path::Path;

use super::samples::read_f32_npy;
use super::start_images::{ControlImages, StartImages};
use crate::engine::{
    Condition, DEFAULT_INSTRUCTION, ItemTensor, PromptEmbedding, PromptOptions, PromptSide,
    TextEncoder, cut_off, encode_prompts, is_sana,
};
use crate::experiment::{ConditioningSpec, HumanInstruction};

/// A run's conditions: one per grid row (a prompt or a class), each a row of the condition table (the plan
/// labels them, see `plan::condition_axis`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunConditions {
    /// The prompts (or embedding rows), when the run is text-conditional.
    pub prompts: Vec<String>,
    /// The classes, when the run is class-conditional.
    pub classes: Vec<i64>,
    /// The unconditional row for classifier-free guidance, when there is one.
    pub uncond: Option<usize>,
    /// The empty prompt's row (Perp-Neg's base), when the run is text-conditional: the unconditional row
    /// unless a negative prompt takes that.
    pub empty: Option<usize>,
    /// The encoded start images, for img2img.
    pub start: Option<StartImages>,
    /// A ControlNet's control images.
    pub control: Option<ControlImages>,
}

impl RunConditions {
    /// Whether the run is conditioned at all.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty() && self.classes.is_empty()
    }
}

/// What the model offers to condition on.
pub struct ConditionSources<'a> {
    pub encoders: &'a mut [TextEncoder],
    /// SDXL's `force_zeros_for_empty_prompt`: no negative prompt means zero embeddings.
    pub force_zeros: bool,
    /// The decoded image's height and width in pixels (SDXL's time ids).
    pub image_hw: (usize, usize),
    /// The U-Net's class embeddings, when its config says.
    pub num_class_embeds: Option<usize>,
}

/// The condition table and the run's conditions for `spec`; rows 0.. are the conditions in order, then the
/// unconditional one.
pub fn build(
    spec: Option<&ConditioningSpec>,
    sources: ConditionSources<'_>,
) -> Result<(Vec<Condition>, RunConditions), String> {
    let Some(spec) = spec else {
        return Ok((Vec::new(), RunConditions::default()));
    };
    if !spec.classes.is_empty() {
        return classes(spec, sources.num_class_embeds);
    }
    if spec.prompts.is_empty() && spec.embeddings.is_none() {
        return Ok((Vec::new(), RunConditions::default()));
    }
    prompts(spec, sources)
}

fn classes(
    spec: &ConditioningSpec,
    num_class_embeds: Option<usize>,
) -> Result<(Vec<Condition>, RunConditions), String> {
    let null = spec.null_class.or(num_class_embeds.map(|n| n as i64 - 1));
    if let Some(n) = num_class_embeds {
        let bad = spec
            .classes
            .iter()
            .chain(null.iter())
            .find(|&&c| c < 0 || c >= n as i64);
        if let Some(c) = bad {
            return Err(format!(
                "[conditioning] class {c} is out of range: the U-Net has {n} class embeddings (0–{})",
                n - 1
            ));
        }
    }
    let label = |c: i64| Condition {
        class_label: Some(c),
        ..Condition::default()
    };
    let mut table: Vec<Condition> = spec.classes.iter().map(|&c| label(c)).collect();
    let uncond = null.map(|c| {
        table.push(label(c));
        table.len() - 1
    });
    let conditions = RunConditions {
        prompts: Vec::new(),
        classes: spec.classes.clone(),
        uncond,
        empty: None,
        start: None,
        control: None,
    };
    Ok((table, conditions))
}

fn prompts(
    spec: &ConditioningSpec,
    sources: ConditionSources<'_>,
) -> Result<(Vec<Condition>, RunConditions), String> {
    let ConditionSources {
        encoders,
        force_zeros,
        image_hw: (h, w),
        ..
    } = sources;
    let options = prompt_options(spec, is_sana(encoders))?;
    let embeddings = match &spec.embeddings {
        Some(path) => read_embeddings(path, spec.prompts.len())?,
        None if encoders.is_empty() => {
            return Err(
                "[conditioning] prompts need a text encoder, and the model has none: give \
                 `embeddings = \"prompts.npy\"` ([P, tokens, width]) or [model] text_encoder and tokenizer"
                    .into(),
            );
        }
        None => {
            let texts: Vec<&str> = spec.prompts.iter().map(String::as_str).collect();
            encode_prompts(encoders, &texts, &options, PromptSide::Prompt)
                .map_err(|e| e.to_string())?
        }
    };
    let uncond = match spec.negative_prompt.as_deref() {
        None if force_zeros || encoders.is_empty() => embeddings[0].zeros_like(),
        _ if encoders.is_empty() => {
            return Err(
                "[conditioning] negative_prompt needs a text encoder; with precomputed embeddings \
                 the unconditional embedding is zeros (remove negative_prompt)"
                    .into(),
            );
        }
        negative => encode_prompts(
            encoders,
            &[negative.unwrap_or("")],
            &options,
            PromptSide::Negative,
        )
        .map_err(|e| e.to_string())?
        .remove(0),
    };
    let mut table: Vec<Condition> = embeddings.iter().map(|e| e.condition(h, w)).collect();
    table.push(uncond.condition(h, w));
    let uncond_row = table.len() - 1;
    let empty = match spec.negative_prompt.as_deref() {
        Some(negative) if !negative.is_empty() && !encoders.is_empty() => {
            let empty = encode_prompts(encoders, &[""], &options, PromptSide::Prompt)
                .map_err(|e| e.to_string())?
                .remove(0);
            table.push(empty.condition(h, w));
            table.len() - 1
        }
        _ => uncond_row,
    };
    let prompts = match spec.prompts.is_empty() {
        true => (0..embeddings.len())
            .map(|i| format!("embedding {i}"))
            .collect(),
        false => spec.prompts.clone(),
    };
    let conditions = RunConditions {
        prompts,
        classes: Vec::new(),
        uncond: Some(uncond_row),
        empty: Some(empty),
        start: None,
        control: None,
    };
    Ok((table, conditions))
}

/// The experiment's settings for the encoders: Sana's instruction is the pipeline's own unless the experiment
/// turns it off or gives its lines, and no other pipeline takes one.
pub fn prompt_options(spec: &ConditioningSpec, sana: bool) -> Result<PromptOptions, String> {
    let lines: Option<Vec<String>> = match &spec.complex_human_instruction {
        Some(_) if !sana => {
            return Err(
                "[conditioning] complex_human_instruction is Sana's (a Gemma text encoder); this pipeline's \
                 prompts take none: remove it"
                    .into(),
            );
        }
        None | Some(HumanInstruction::PipelineDefault) if sana => {
            Some(DEFAULT_INSTRUCTION.iter().map(|l| l.to_string()).collect())
        }
        Some(HumanInstruction::Lines(lines)) => Some(lines.clone()),
        _ => None,
    };
    Ok(PromptOptions {
        max_sequence_length: spec.max_sequence_length,
        instruction: lines.map(|l| l.join("\n")),
    })
}

/// A prompt longer than a tokenizer's max length is cut, as diffusers cuts it; like diffusers, say which
/// part, once per prompt (for SDXL's two tokenizers too).
pub fn truncation_notes(encoders: &[TextEncoder], spec: Option<&ConditioningSpec>) -> Vec<String> {
    let Some(spec) = spec else {
        return Vec::new();
    };
    let Ok(options) = prompt_options(spec, is_sana(encoders)) else {
        return Vec::new();
    };
    // Precomputed embeddings stand for the prompts, which are then only labels.
    let prompts: &[String] = match spec.embeddings {
        None => &spec.prompts,
        Some(_) => &[],
    };
    let named = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("prompts[{i}]"), p, PromptSide::Prompt))
        .chain(
            spec.negative_prompt
                .iter()
                .map(|p| ("negative_prompt".into(), p, PromptSide::Negative)),
        );
    let mut notes = Vec::new();
    for (key, prompt, side) in named {
        if let Some((max, cut)) = cut_off(encoders, prompt, &options, side) {
            notes.push(format!(
                "warning: [conditioning] {key} is longer than the tokenizer's {max} tokens; this part was cut \
                 off, as diffusers cuts it: {cut:?}"
            ));
        }
    }
    notes
}

/// Precomputed prompt embeddings: float32 [P, tokens, width], one per prompt when prompts are given too.
fn read_embeddings(path: &Path, prompts: usize) -> Result<Vec<PromptEmbedding>, String> {
    let array = read_f32_npy(path, "the embeddings file", "[prompts, tokens, width]")?;
    let shape = array.shape().to_vec();
    if shape.len() != 3 || shape[0] == 0 || (prompts > 0 && shape[0] != prompts) {
        return Err(format!(
            "{}: the embeddings are {shape:?}; they must be [prompts, tokens, width]{}",
            path.display(),
            if prompts > 0 {
                format!(" with one per prompt ({prompts})")
            } else {
                String::new()
            }
        ));
    }
    let data: Vec<f32> = array.iter().copied().collect();
    let per = shape[1] * shape[2];
    Ok(data
        .chunks(per)
        .map(|d| PromptEmbedding {
            hidden_states: ItemTensor::new(shape[1..].to_vec(), d.to_vec()),
            pooled: None,
            time_ids: false,
            text_mask: None,
        })
        .collect())
}
