//! Samples as arrays: the initial noise a user gives (`init_noise`, to reproduce another tool's run on its
//! very latents) and the finished samples `--save-samples` writes.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::write_zeroed_npy;

use super::plan::Cell;
use crate::path_error::{PathError, at};

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
    Ok(array.iter().copied().collect())
}

/// `samples/<cell>.npy` written as the cell's lanes finish: float32 [N, C, H, W] in [0, 1], rows in the
/// cell's output order, each lane's images written at their rows. It is a temporary file until `finish`
/// renames it into place, so readers never see a part and a failed cell leaves none.
pub struct SampleFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    /// Where the array's data starts in the file.
    data_start: u64,
    /// Each sample's row, by its index among the cell's items.
    row_of: Vec<usize>,
    item: usize,
}

impl SampleFile {
    /// Creates the (zeroed) file for `order.len()` samples of `shape`; `order[r]` is the item at row r.
    pub fn create(path: &Path, shape: [usize; 3], order: &[usize]) -> Result<Self, PathError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(at("create", dir))?;
        }
        let tmp = path.with_extension(format!("npy.tmp{}", std::process::id()));
        let file = File::create(&tmp).map_err(at("create", &tmp))?;
        let dims = [order.len(), shape[0], shape[1], shape[2]];
        write_zeroed_npy::<f32, _>(&file, IxDyn(&dims))
            .map_err(|e| PathError::other("write the header of", path, e))?;
        let item: usize = shape.iter().product();
        let len = file.metadata().map_err(at("read the size of", &tmp))?.len();
        let data_start = len - (order.len() * item * 4) as u64;
        let mut row_of = vec![0; order.len()];
        for (row, &i) in order.iter().enumerate() {
            row_of[i] = row;
        }
        Ok(SampleFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            data_start,
            row_of,
            item,
        })
    }

    /// Writes the images (model space [-1, 1]) of items `first..`, each at its row.
    pub fn write(&mut self, first: usize, images: &[f32]) -> Result<(), PathError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut bytes = Vec::with_capacity(self.item * 4);
        for (k, image) in images.chunks_exact(self.item).enumerate() {
            bytes.clear();
            for v in image {
                bytes.extend_from_slice(&(v / 2.0 + 0.5).clamp(0.0, 1.0).to_le_bytes());
            }
            let row = self.row_of[first + k] as u64;
            file.seek(SeekFrom::Start(self.data_start + row * (self.item * 4) as u64))
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
