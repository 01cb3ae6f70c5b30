//! Reference solves on disk: each is the reference sampler's final samples of the preview seeds (model
//! space, before decoding), saved once under `reference/` and reused while its key matches.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::WriteNpyExt;

use super::plan::Cell;
use crate::atomic_file::write_atomic;
use crate::path_error::PathError;
use crate::quality::SquaredError;

/// A finished reference solve: its samples in item order, and their decoded images for latent models.
#[derive(Debug, Clone)]
pub struct Solution {
    /// The reference cell's name.
    pub name: String,
    pub samples: Vec<f32>,
    pub images: Option<Vec<f32>>,
}

/// Where reference `cell` is kept: its name and key, so a changed reference never reads an old file.
pub fn cache_path(out: &Path, cell: &Cell) -> PathBuf {
    out.join(format!("reference/{}-{}.npy", cell.file_stem(), cell.key))
}

/// The saved samples of a reference, when the file holds exactly `count` samples of `shape`.
pub fn load(path: &Path, shape: [usize; 3], count: usize) -> Option<Vec<f32>> {
    let array: ArrayD<f32> = ndarray_npy::read_npy(path).ok()?;
    let expected = [count, shape[0], shape[1], shape[2]];
    (array.shape() == expected).then(|| array.iter().copied().collect())
}

/// Saves a reference's samples as float32 [N, C, H, W], atomically.
pub fn save(path: &Path, samples: &[f32], shape: [usize; 3]) -> Result<(), PathError> {
    let item = shape.iter().product::<usize>().max(1);
    let dims = IxDyn(&[samples.len() / item, shape[0], shape[1], shape[2]]);
    let array = ArrayD::from_shape_vec(dims, samples.to_vec())
        .map_err(|e| PathError::other("shape the reference solve for", path, e))?;
    let mut bytes = Vec::new();
    array
        .write_npy(&mut bytes)
        .map_err(|e| PathError::other("encode the reference solve for", path, e))?;
    write_atomic(path, &bytes)
}

/// A cell's squared errors against the reference: in model space, and in image space for latent models
/// (both clamped to [-1, 1] as the images are). `samples` and `images` start with the cell's previews.
pub fn compare(
    solution: &Solution,
    samples: &[f32],
    images: &[f32],
) -> (Option<SquaredError>, Option<SquaredError>) {
    let data = SquaredError::of(
        &samples[..solution.samples.len().min(samples.len())],
        &solution.samples,
    );
    let decoded = solution.images.as_ref().and_then(|reference| {
        let clamp = |v: &[f32]| v.iter().map(|x| x.clamp(-1.0, 1.0)).collect::<Vec<_>>();
        let own = &images[..reference.len().min(images.len())];
        SquaredError::of(&clamp(own), &clamp(reference))
    });
    (data, decoded)
}
