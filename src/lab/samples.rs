//! Samples as arrays: the initial noise a user gives (`init_noise`, to reproduce another tool's run on its
//! very latents) and the finished samples `--save-samples` writes.

use std::path::Path;

use ndarray::{ArrayD, Dimension, IxDyn};
use ndarray_npy::{ReadNpyError, WriteNpyExt};

use super::plan::Cell;
use crate::atomic_file::write_atomic;
use crate::engine::NonFinite;
use crate::path_error::PathError;

/// `init_noise`: float32 [N, C, H, W] unit-variance noise, row k for the k-th seed; every cell's seeds must
/// have a row. Returned flat, row after row.
pub fn read_init_noise(path: &Path, shape: [usize; 3], cells: &[Cell]) -> Result<Vec<f32>, String> {
    let array = read_f32_npy(path, "init_noise", "[N, C, H, W]")?;
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

/// A float32 .npy the user gives (`what`, laid out as `layout`). Another float type is the usual slip
/// (numpy saves float64 by default), so it is named with the line that converts it.
pub fn read_f32_npy(path: &Path, what: &str, layout: &str) -> Result<ArrayD<f32>, String> {
    ndarray_npy::read_npy(path).map_err(|e| match e {
        ReadNpyError::WrongDescriptor(desc) => format!(
            "{}: {what} is {} ({desc}); it must be a float32 .npy {layout}: convert it with \
             np.save(path, a.astype(np.float32))",
            path.display(),
            dtype_name(&desc.to_string()),
        ),
        e => format!(
            "{}: cannot read {what} ({e}); it must be a float32 .npy {layout}",
            path.display()
        ),
    })
}

/// numpy's name for a type descriptor such as '<f8'.
fn dtype_name(desc: &str) -> &'static str {
    match desc
        .trim_matches('\'')
        .trim_start_matches(['<', '>', '|', '='])
    {
        "f8" => "float64",
        "f4" => "float32 of the other byte order",
        "f2" => "float16",
        "i8" => "int64",
        "i4" => "int32",
        "i2" => "int16",
        "i1" => "int8",
        "u1" => "uint8",
        "b1" => "bool",
        _ => "not float32",
    }
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
