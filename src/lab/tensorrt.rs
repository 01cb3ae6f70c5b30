//! TensorRT shape profiles for the experiment's networks: the largest call the lab will make (every cell's
//! lane at once, guided lanes twice), the latent size and the prompt length, so one engine serves the sweep.

use std::path::Path;

use super::conditioning::prompt_options;
use crate::engine::clip_tokenizer::{ClipTokenizer, TokenizerKind};
use crate::engine::graph_io::declared_io;
use crate::engine::pipeline_folder::Family;
use crate::engine::providers::ProviderKind;
use crate::engine::trt_profile::{ShapeHints, ShapeProfile};
use crate::engine::{DEFAULT_MAX_SEQUENCE_LENGTH, OnnxOptions, PromptOptions};
use crate::experiment::Experiment;

/// The batch range of one U-Net call, as the runner makes it: `batch` split among the cells (at least one
/// sample each, at most the cell's samples), a guided cell's samples twice (unconditional, then conditional).
pub fn unet_batch(experiment: &Experiment) -> [usize; 3] {
    let prompts = experiment
        .conditioning
        .as_ref()
        .map_or(1, |c| c.prompts.len().max(1));
    let cells: Vec<(usize, usize)> = experiment
        .samplers
        .iter()
        .flat_map(|s| {
            let samples = s
                .samples
                .or(experiment.quality.as_ref().map(|q| q.samples))
                .unwrap_or(0)
                .max(experiment.seeds.len() * prompts);
            let steps = s.steps.len();
            s.guidance.iter().flat_map(move |&g| {
                std::iter::repeat_n((samples, if g == 1.0 { 1 } else { 2 }), steps)
            })
        })
        .collect();
    let per_lane = (experiment.batch / cells.len().max(1)).max(1);
    let largest = cells
        .iter()
        .map(|&(samples, lanes)| per_lane.min(samples) * lanes)
        .sum::<usize>()
        .max(1);
    [1, largest, largest]
}

/// The text lengths (shortest, usual, longest) each network of a run takes: each text encoder's, and the
/// denoiser's text conditioning.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextLengths {
    /// One per text encoder, in the pipeline's order.
    pub encoders: Vec<Option<[usize; 3]>>,
    pub denoiser: Option<[usize; 3]>,
}

/// What the lab will feed: CLIP at its tokenizer's length; T5 at `max_sequence_length` (SD3 256, FLUX 512 by
/// default); Gemma at Sana's padded lengths (the negative prompt's `max_sequence_length`, the prompts' with the
/// instruction's tokens); the denoiser CLIP's tokens (SD, SDXL), CLIP's and T5's (SD3), Sana's kept ones, or
/// the precomputed embeddings'. FLUX's transformer is left to TensorRT: its ids are not batch-first.
pub fn text_lengths(experiment: &Experiment, family: Family, tokenizers: &[&Path]) -> TextLengths {
    let Some(spec) = experiment.conditioning.as_ref() else {
        return TextLengths::default();
    };
    if let Some(path) = &spec.embeddings {
        let array: Option<ndarray::ArrayD<f32>> = ndarray_npy::read_npy(path).ok();
        let tokens = array.and_then(|a| a.shape().get(1).copied());
        return TextLengths {
            encoders: Vec::new(),
            denoiser: tokens.map(|n| [n; 3]),
        };
    }
    let loaded: Vec<Option<ClipTokenizer>> = tokenizers
        .iter()
        .map(|t| ClipTokenizer::from_folder(t).ok())
        .collect();
    let t5 = spec.max_sequence_length.unwrap_or(match family {
        Family::Flux => 512,
        _ => 256,
    });
    let options = prompt_options(spec, family == Family::Sana).unwrap_or_default();
    let encoders: Vec<Option<[usize; 3]>> = loaded
        .iter()
        .map(|t| {
            let t = t.as_ref()?;
            match t.kind() {
                TokenizerKind::Clip => Some([t.max_length(); 3]),
                TokenizerKind::T5 => Some([t5; 3]),
                TokenizerKind::Gemma => Some(gemma_lengths(t, &options)),
            }
        })
        .collect();
    let clip = encoders.first().copied().flatten();
    let denoiser = match family {
        Family::StableDiffusion3 => clip.map(|c| [c[0] + t5; 3]),
        Family::Flux => None,
        Family::Sana => Some(
            [options
                .max_sequence_length
                .unwrap_or(DEFAULT_MAX_SEQUENCE_LENGTH); 3],
        ),
        _ => clip,
    };
    TextLengths { encoders, denoiser }
}

/// Sana's Gemma: the negative prompt at `max_sequence_length`, the prompts at the instruction's tokens plus
/// `max_sequence_length - 2`.
fn gemma_lengths(tokenizer: &ClipTokenizer, options: &PromptOptions) -> [usize; 3] {
    let max = options
        .max_sequence_length
        .unwrap_or(DEFAULT_MAX_SEQUENCE_LENGTH);
    let prompt = options
        .instruction
        .as_ref()
        .and_then(|i| tokenizer.count(i).ok())
        .map_or(max, |n| n + max - 2);
    [max.min(prompt), prompt, max.max(prompt)]
}

/// `options` with the profile for `model` set when TensorRT is among the providers, and a line for the log
/// saying what it is (or why there is none; TensorRT then sizes engines by the shapes it meets), to show
/// when TensorRT really runs the model.
pub fn with_profile(
    options: &OnnxOptions,
    model: &Path,
    hints: ShapeHints,
) -> (OnnxOptions, Option<String>) {
    let mut options = options.clone();
    if !options
        .providers
        .preference
        .contains(&ProviderKind::TensorRt)
    {
        return (options, None);
    }
    let derived = declared_io(model).and_then(|(inputs, _)| ShapeProfile::derive(&inputs, &hints));
    let file = model.display();
    let note = match derived {
        Ok(Some(profile)) => {
            let note = format!(
                "TensorRT profile for {file}: min {}; opt {}; max {} (engines cached per profile, under \
                 profile-{})",
                profile.min,
                profile.opt,
                profile.max,
                profile.key()
            );
            options.providers.trt_profile = Some(profile);
            Some(note)
        }
        Ok(None) => None,
        Err(e) => Some(format!(
            "no TensorRT shape profile for {file}: {e}; TensorRT rebuilds its engine for new shapes"
        )),
    };
    (options, note)
}

/// The note, for the log, when TensorRT runs the model.
pub fn note_if_tensorrt(provider: ProviderKind, note: Option<String>, notes: &mut Vec<String>) {
    if provider == ProviderKind::TensorRt {
        notes.extend(note);
    }
}
