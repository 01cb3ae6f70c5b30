use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Mean and covariance of a set of feature vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    pub mean: DVector<f64>,
    pub covariance: DMatrix<f64>,
    pub count: usize,
}

impl FeatureStats {
    /// Statistics of `count` feature vectors of length `dim`, stored row by row in `features`.
    /// The covariance is the unbiased one (divided by count − 1), as numpy's `np.cov`.
    pub fn from_features(features: &[f32], dim: usize) -> Self {
        let count = features.len() / dim.max(1);
        let rows = DMatrix::from_fn(count, dim, |i, j| features[i * dim + j] as f64);
        let mean = DVector::from_fn(dim, |j, _| rows.column(j).mean());
        let centred = DMatrix::from_fn(count, dim, |i, j| rows[(i, j)] - mean[j]);
        let covariance = centred.transpose() * &centred / (count.max(2) - 1) as f64;
        Self {
            mean,
            covariance,
            count,
        }
    }
}

/// ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁ Σ₂).
///
/// The trace of the matrix square root is taken as tr √(√Σ₁ Σ₂ √Σ₁), whose argument is symmetric
/// positive semi-definite, so two symmetric eigendecompositions give it exactly (no complex parts, no
/// iterative sqrtm); tiny negative eigenvalues from rounding count as zero.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> f64 {
    let diff = &a.mean - &b.mean;
    let sqrt_a = psd_sqrt(&a.covariance);
    let middle = &sqrt_a * &b.covariance * &sqrt_a;
    let middle = (&middle + middle.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(middle)
        .eigenvalues
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum();
    diff.dot(&diff) + a.covariance.trace() + b.covariance.trace() - 2.0 * tr_sqrt
}

/// The square root of a symmetric positive semi-definite matrix.
fn psd_sqrt(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let eig = SymmetricEigen::new(sym);
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_statistics_are_at_distance_zero() {
        let f: Vec<f32> = (0..300).map(|i| ((i * 37 % 101) as f32) / 50.0).collect();
        let s = FeatureStats::from_features(&f, 3);
        assert!(frechet_distance(&s, &s).abs() < 1e-9);
    }

    #[test]
    fn gaussians_with_diagonal_covariances_have_the_closed_form_distance() {
        // For diagonal covariances: |μ1−μ2|² + Σ (σ1 − σ2)².
        let a = FeatureStats {
            mean: DVector::from_vec(vec![0.0, 1.0]),
            covariance: DMatrix::from_diagonal(&DVector::from_vec(vec![4.0, 1.0])),
            count: 10,
        };
        let b = FeatureStats {
            mean: DVector::from_vec(vec![1.0, 1.0]),
            covariance: DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 9.0])),
            count: 10,
        };
        let want = 1.0 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2);
        assert!((frechet_distance(&a, &b) - want).abs() < 1e-9);
    }
}
