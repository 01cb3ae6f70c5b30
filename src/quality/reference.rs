use std::fs::File;
use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector};
use ndarray::{Array1, Array2};
use ndarray_npy::NpzReader;

use super::FeatureStats;

/// Reference statistics of real data: the FID mean and covariance and the raw features for KID,
/// read from an `.npz` with arrays `mu` [D], `sigma` [D, D] and `features` [N, D].
#[derive(Debug, Clone)]
pub struct ReferenceStats {
    pub stats: FeatureStats,
    /// Row-major `count × dim` features.
    pub features: Vec<f32>,
    pub dim: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("cannot open reference statistics {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error(
        "reference statistics {path}: array `{name}` {message} (expected mu [D], sigma [D, D] and features [N, D] as float64 or float32)"
    )]
    Array {
        path: PathBuf,
        name: &'static str,
        message: String,
    },
}

impl ReferenceStats {
    pub fn load(path: &Path) -> Result<Self, ReferenceError> {
        let open_err = |message: String| ReferenceError::Open {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| open_err(e.to_string()))?;
        let mut npz = NpzReader::new(file).map_err(|e| open_err(e.to_string()))?;
        let array_err = |name: &'static str, message: String| ReferenceError::Array {
            path: path.to_path_buf(),
            name,
            message,
        };
        let mu: Array1<f64> = read_f64(&mut npz, "mu").map_err(|e| array_err("mu", e))?;
        let sigma: Array2<f64> = read_f64(&mut npz, "sigma").map_err(|e| array_err("sigma", e))?;
        let features: Array2<f32> =
            read_f32(&mut npz, "features").map_err(|e| array_err("features", e))?;
        let dim = mu.len();
        if sigma.dim() != (dim, dim) {
            return Err(array_err(
                "sigma",
                format!("has shape {:?}, mu has {dim} values", sigma.dim()),
            ));
        }
        if features.ncols() != dim {
            return Err(array_err(
                "features",
                format!("has {} columns, mu has {dim} values", features.ncols()),
            ));
        }
        Ok(Self {
            stats: FeatureStats {
                mean: DVector::from_iterator(dim, mu.iter().copied()),
                covariance: DMatrix::from_fn(dim, dim, |i, j| sigma[(i, j)]),
                count: features.nrows(),
            },
            features: features.iter().copied().collect(),
            dim,
        })
    }
}

fn read_f64<D: ndarray::Dimension>(
    npz: &mut NpzReader<File>,
    name: &str,
) -> Result<ndarray::Array<f64, D>, String> {
    match npz.by_name::<ndarray::OwnedRepr<f64>, D>(&format!("{name}.npy")) {
        Ok(a) => Ok(a),
        Err(_) => npz
            .by_name::<ndarray::OwnedRepr<f32>, D>(&format!("{name}.npy"))
            .map(|a| a.mapv(f64::from))
            .map_err(|e| e.to_string()),
    }
}

fn read_f32<D: ndarray::Dimension>(
    npz: &mut NpzReader<File>,
    name: &str,
) -> Result<ndarray::Array<f32, D>, String> {
    match npz.by_name::<ndarray::OwnedRepr<f32>, D>(&format!("{name}.npy")) {
        Ok(a) => Ok(a),
        Err(_) => npz
            .by_name::<ndarray::OwnedRepr<f64>, D>(&format!("{name}.npy"))
            .map(|a| a.mapv(|v| v as f32))
            .map_err(|e| e.to_string()),
    }
}
