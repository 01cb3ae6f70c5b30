//! TensorRT shape profiles for the experiment's networks: the largest call the lab will make (every cell's
//! lane at once, guided lanes twice), the latent size and the prompt length, so one engine serves the sweep.

use std::path::Path;

use crate::engine::OnnxOptions;
use crate::engine::clip_tokenizer::ClipTokenizer;
use crate::engine::graph_io::declared_io;
use crate::engine::providers::ProviderKind;
use crate::engine::trt_profile::{ShapeHints, ShapeProfile};
use crate::experiment::Experiment;

/// The batch range of one U-Net call: the runner splits `batch` among the pending cells (at least one sample
/// each), and a guided lane runs twice (unconditional, then conditional).
pub fn unet_batch(experiment: &Experiment) -> [usize; 3] {
    let cells: usize = experiment
        .samplers
        .iter()
        .map(|s| s.steps.len() * s.guidance.len())
        .sum();
    let guided = experiment
        .samplers
        .iter()
        .any(|s| s.guidance.iter().any(|&g| g != 1.0));
    let largest = experiment.batch.max(cells) * if guided { 2 } else { 1 };
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

/// `options` with the profile for `model` set when TensorRT is among the providers; what was decided goes to
/// `notes`. A profile that cannot be made leaves TensorRT to size engines by the shapes it meets.
pub fn with_profile(
    options: &OnnxOptions,
    model: &Path,
    hints: ShapeHints,
    notes: &mut Vec<String>,
) -> OnnxOptions {
    let mut options = options.clone();
    if !options
        .providers
        .preference
        .contains(&ProviderKind::TensorRt)
    {
        return options;
    }
    let derived = declared_io(model).and_then(|(inputs, _)| ShapeProfile::derive(&inputs, &hints));
    let file = model.display();
    match derived {
        Ok(Some(profile)) => {
            notes.push(format!(
                "TensorRT profile for {file}: min {}; opt {}; max {} (engines cached per profile, under \
                 profile-{})",
                profile.min,
                profile.opt,
                profile.max,
                profile.key()
            ));
            options.providers.trt_profile = Some(profile);
        }
        Ok(None) => {}
        Err(e) => notes.push(format!(
            "no TensorRT shape profile for {file}: {e}; TensorRT will rebuild its engine for new shapes"
        )),
    }
    options
}
