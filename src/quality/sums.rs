//! Feature statistics that add across machines: the count, Σf and Σffᵀ in f64, as EDM's fid.py
//! all-reduces them. A cell's FID comes from these sums whether it ran on one machine or on many, so
//! merged shards give the unsharded result.

use nalgebra::{DMatrix, DVector};

use super::FeatureStats;

/// n, Σf and Σffᵀ of a set of feature vectors of length `dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSums {
    pub dim: usize,
    pub count: usize,
    pub sum: Vec<f64>,
    /// Row-major `dim × dim`.
    pub sum_outer: Vec<f64>,
}

impl FeatureSums {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            count: 0,
            sum: vec![0.0; dim],
            sum_outer: vec![0.0; dim * dim],
        }
    }

    /// The sums of `features`, row by row.
    pub fn of(features: &[f32], dim: usize) -> Self {
        let mut sums = Self::new(dim);
        for row in features.chunks_exact(dim.max(1)) {
            sums.add_row(row);
        }
        sums
    }

    fn add_row(&mut self, row: &[f32]) {
        let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        for (i, &a) in row.iter().enumerate() {
            self.sum[i] += a;
            let outer = &mut self.sum_outer[i * self.dim..(i + 1) * self.dim];
            for (o, &b) in outer.iter_mut().zip(&row) {
                *o += a * b;
            }
        }
        self.count += 1;
    }

    /// Adds another set's sums (of the same dimension) to these.
    pub fn merge(&mut self, other: &FeatureSums) -> Result<(), String> {
        if other.dim != self.dim {
            return Err(format!(
                "{} features cannot be added to {}",
                other.dim, self.dim
            ));
        }
        self.count += other.count;
        self.sum
            .iter_mut()
            .zip(&other.sum)
            .for_each(|(a, b)| *a += b);
        (self.sum_outer.iter_mut())
            .zip(&other.sum_outer)
            .for_each(|(a, b)| *a += b);
        Ok(())
    }

    /// Mean and unbiased covariance: (Σffᵀ − n μμᵀ) / (n − 1).
    pub fn stats(&self) -> FeatureStats {
        let n = self.count as f64;
        let mean = DVector::from_iterator(self.dim, self.sum.iter().map(|s| s / n.max(1.0)));
        let outer = DMatrix::from_row_slice(self.dim, self.dim, &self.sum_outer);
        let covariance = (outer - &mean * mean.transpose() * n) / (n - 1.0).max(1.0);
        FeatureStats {
            mean,
            covariance,
            count: self.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(n: usize, dim: usize, salt: usize) -> Vec<f32> {
        (0..n * dim)
            .map(|i| (((i + salt) * 7919 % 1009) as f32 / 1009.0 - 0.3) * 4.0)
            .collect()
    }

    #[test]
    fn sums_give_the_two_pass_mean_and_covariance() {
        let f = features(200, 5, 3);
        let direct = FeatureStats::from_features(&f, 5);
        let summed = FeatureSums::of(&f, 5).stats();
        assert_eq!(summed.count, 200);
        for (a, b) in direct.mean.iter().zip(summed.mean.iter()) {
            assert!((a - b).abs() < 1e-12, "{a} {b}");
        }
        for (a, b) in direct.covariance.iter().zip(summed.covariance.iter()) {
            assert!((a - b).abs() < 1e-10 * a.abs().max(1.0), "{a} {b}");
        }
    }

    #[test]
    fn merged_parts_equal_the_whole() {
        let f = features(90, 4, 11);
        let whole = FeatureSums::of(&f, 4);
        let mut merged = FeatureSums::new(4);
        for part in [&f[..40 * 4], &f[40 * 4..41 * 4], &f[41 * 4..]] {
            merged.merge(&FeatureSums::of(part, 4)).expect("same dim");
        }
        assert_eq!(merged.count, whole.count);
        for (a, b) in merged.sum_outer.iter().zip(&whole.sum_outer) {
            assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} {b}");
        }
        assert!(merged.merge(&FeatureSums::new(3)).is_err());
    }
}
