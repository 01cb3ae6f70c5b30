//! Samples as arrays: the initial noise a user gives (`init_noise`, to reproduce another tool's run on its
//! very latents) and the finished samples `--save-samples` writes.

use std::path::Path;

use ndarray::{ArrayD, Dimension, IxDyn};
use ndarray_npy::WriteNpyExt;

use super::plan::Cell;
use crate::atomic_file::write_atomic;
use crate::engine::NonFinite;
use crate::path_error::PathError;

/// `init_noise`: float32 [N, C, H, W] unit-variance noise, row k for the k-th seed; every cell's seeds must
/// have a row. Returned flat, row after row.
pub fn read_init_noise(path: &Path, shape: [usize; 3], cells: &[Cell]) -> Result<Vec<f32>, String> {
    let array: ArrayD<f32> = ndarray_npy::read_npy(path).map_err(|e| {
        format!(
            "{}: cannot read init_noise ({e}); it must be a float32 .npy [N, C, H, W]",
            path.display()
        )
    })?;
    let dims = array.shape().to_vec();
    let needed = cells
        .iter()
        .flat_map(|c| c.items.iter().map(|i| i.seed_index + 1))
        .max()
        .unwrap_or(0);
    if dims.len() != 4 || dims[1..] != shape {
        return Err(format!(
            "{}: init_noise is {dims:?}; the model's samples need [N, {}, {}, {}]",
            path.display(),
            shape[0],
            shape[1],
            shape[2]
        ));
    }
    if dims[0] < needed {
        return Err(format!(
            "{}: init_noise has {} rows, but the cells draw {needed} seeds (one row per seed); \
             give more rows or fewer seeds/samples",
            path.display(),
            dims[0]
        ));
    }
    let values: Vec<f32> = array.iter().copied().collect();
    if let Some(bad) = NonFinite::count(&values) {
        // Found here rather than blamed on the model at the first step it reaches.
        let first = array
            .indexed_iter()
            .find(|(_, v)| !v.is_finite())
            .map(|(i, _)| i.slice().to_vec())
            .unwrap_or_default();
        return Err(format!(
            "{}: init_noise is not finite: {bad}, the first at {first:?}; the initial noise must be finite",
            path.display()
        ));
    }
    Ok(values)
}

/// Writes images (model space [-1, 1], items of `shape`) as float32 [N, C, H, W] in [0, 1], in `order`,
/// atomically.
pub fn write_samples(
    path: &Path,
    images: &[f32],
    shape: [usize; 3],
    order: &[usize],
) -> Result<(), PathError> {
    let item: usize = shape.iter().product();
    let mut data = Vec::with_capacity(order.len() * item);
    for &i in order {
        let sample = &images[i * item..(i + 1) * item];
        data.extend(sample.iter().map(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0)));
    }
    let dims = IxDyn(&[order.len(), shape[0], shape[1], shape[2]]);
    let array = ArrayD::from_shape_vec(dims, data)
        .map_err(|e| PathError::other("shape the samples for", path, e))?;
    let mut bytes = Vec::new();
    array
        .write_npy(&mut bytes)
        .map_err(|e| PathError::other("encode the samples for", path, e))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(crate::path_error::at("create", dir))?;
    }
    write_atomic(path, &bytes)
}
