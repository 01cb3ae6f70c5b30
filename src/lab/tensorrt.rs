//! TensorRT shape profiles for the experiment's networks: the largest call the lab will make (every cell's
//! lane at once, guided lanes twice), the latent size and the prompt length, so one engine serves the sweep.

use std::path::Path;

use crate::engine::OnnxOptions;
use crate::engine::clip_tokenizer::ClipTokenizer;
use crate::engine::graph_io::declared_io;
use crate::engine::providers::ProviderKind;
use crate::engine::trt_profile::{ShapeHints, ShapeProfile};
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

/// The token length the U-Net's text conditioning has: the tokenizer's, or the precomputed embeddings'.
pub fn sequence_length(experiment: &Experiment, tokenizer: Option<&Path>) -> Option<usize> {
    let embeddings = experiment.conditioning.as_ref()?.embeddings.as_ref();
    if let Some(path) = embeddings {
        let array: ndarray::ArrayD<f32> = ndarray_npy::read_npy(path).ok()?;
        return array.shape().get(1).copied();
    }
    ClipTokenizer::from_folder(tokenizer?)
        .ok()
        .map(|t| t.max_length())
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
