//! Samples as arrays: the initial noise a user gives (`init_noise`, to reproduce another tool's run on its
//! very latents) and the finished samples `--save-samples` writes.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, Dimension, IxDyn};
use ndarray_npy::{ReadNpyError, write_zeroed_npy};

use super::plan::Cell;
use crate::atomic_file::temp_path;
use crate::engine::NonFinite;
use crate::engine::frames::item_dims;
use crate::path_error::{PathError, at};

/// `init_noise`: float32 [N, C, H, W] unit-variance noise, row k for the k-th seed; every cell's seeds must
/// have a row. Returned flat, row after row.
pub fn read_init_noise(
    path: &Path,
    (shape, frames): ([usize; 3], usize),
    cells: &[Cell],
) -> Result<Vec<f32>, String> {
    let item = item_dims(shape, frames);
    let layout = match frames {
        1 => "[N, C, H, W]",
        _ => "[N, C, F, H, W]",
    };
    let array = read_f32_npy(path, "init_noise", layout)?;
    let dims = array.shape().to_vec();
    let needed = cells
        .iter()
        .flat_map(|c| c.items.iter().map(|i| i.seed_index + 1))
        .max()
        .unwrap_or(0);
    if dims.len() != item.len() + 1 || dims[1..] != item {
        let need: Vec<String> = item.iter().map(usize::to_string).collect();
        return Err(format!(
            "{}: init_noise is {dims:?}; the model's samples need [N, {}]",
            path.display(),
            need.join(", ")
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

/// `samples/<cell>.npy` written as the cell's lanes finish: float32 [N, C, H, W] (a video model's clips
/// [N, C, F, H, W]) in [0, 1], rows in the
/// cell's output order, each lane's images written at their rows (or, for `latents/<cell>.npy`, a latent
/// model's final latents as they are). It is a temporary file until `finish` renames it into place, so
/// readers never see a part and a failed cell leaves none.
pub struct SampleFile {
    path: PathBuf,
    /// Images in model space [-1, 1] are written in [0, 1]; latents as they are.
    images: bool,
    tmp: PathBuf,
    file: Option<File>,
    /// Where the array's data starts in the file.
    data_start: u64,
    /// Each sample's row, by its index among the cell's items.
    row_of: Vec<usize>,
    item: usize,
}

impl SampleFile {
    /// Creates the (zeroed) file for `order.len()` images of dims `item` (C, H, W or C, F, H, W); `order[r]`
    /// is the item at row r.
    pub fn create(path: &Path, item: &[usize], order: &[usize]) -> Result<Self, PathError> {
        Self::create_as(path, item, order, true)
    }

    /// As [`Self::create`], for latents written as they are.
    pub fn create_latents(path: &Path, item: &[usize], order: &[usize]) -> Result<Self, PathError> {
        Self::create_as(path, item, order, false)
    }

    fn create_as(
        path: &Path,
        item_dims: &[usize],
        order: &[usize],
        images: bool,
    ) -> Result<Self, PathError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(at("create", dir))?;
        }
        let tmp = temp_path(path);
        let file = File::create(&tmp).map_err(at("create", &tmp))?;
        let dims: Vec<usize> = std::iter::once(order.len())
            .chain(item_dims.iter().copied())
            .collect();
        write_zeroed_npy::<f32, _>(&file, IxDyn(&dims))
            .map_err(|e| PathError::other("write the header of", path, e))?;
        let item: usize = item_dims.iter().product();
        let len = file.metadata().map_err(at("read the size of", &tmp))?.len();
        let data_start = len - (order.len() * item * 4) as u64;
        let mut row_of = vec![0; order.len()];
        for (row, &i) in order.iter().enumerate() {
            row_of[i] = row;
        }
        Ok(SampleFile {
            path: path.to_path_buf(),
            images,
            tmp,
            file: Some(file),
            data_start,
            row_of,
            item,
        })
    }

    /// Writes the images (model space [-1, 1]) or latents of items `first..`, each at its row.
    pub fn write(&mut self, first: usize, images: &[f32]) -> Result<(), PathError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut bytes = Vec::with_capacity(self.item * 4);
        for (k, image) in images.chunks_exact(self.item).enumerate() {
            bytes.clear();
            for &v in image {
                let v = if self.images {
                    (v / 2.0 + 0.5).clamp(0.0, 1.0)
                } else {
                    v
                };
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            let row = self.row_of[first + k] as u64;
            file.seek(SeekFrom::Start(
                self.data_start + row * (self.item * 4) as u64,
            ))
            .and_then(|_| file.write_all(&bytes))
            .map_err(at("write", &self.tmp))?;
        }
        Ok(())
    }

    /// Puts the complete file in place.
    pub fn finish(mut self) -> Result<(), PathError> {
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(at("write", &self.tmp))?;
        }
        std::fs::rename(&self.tmp, &self.path).map_err(at("write", &self.path))
    }
}

impl Drop for SampleFile {
    /// A cell that fails or is cancelled leaves no partial file behind.
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
