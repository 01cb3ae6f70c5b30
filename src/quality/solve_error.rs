//! How far a sampler's samples are from a reference solve of the same seeds (a long run of an accurate
//! sampler): the error sampler papers plot against NFE.

/// RMSE over every value of every sample, and the PSNR it means for data in [-1, 1] (the range
/// diffusion models work in; the same as PSNR of images in [0, 1]). No PSNR when the samples equal the
/// reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolveError {
    pub rmse: f64,
    pub psnr: Option<f64>,
}

/// Peak-to-peak of the data range [-1, 1].
const PEAK_TO_PEAK: f64 = 2.0;

/// Σ(x − r)² over `count` values: what adds across the shards of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SquaredError {
    pub count: usize,
    pub sum: f64,
}

impl SquaredError {
    /// Σ(x − r)² of `samples` against `reference` (the same samples in the same order); `None` when they
    /// differ in length.
    pub fn of(samples: &[f32], reference: &[f32]) -> Option<Self> {
        if samples.len() != reference.len() {
            return None;
        }
        let sum = (samples.iter().zip(reference))
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        Some(Self {
            count: samples.len(),
            sum,
        })
    }

    pub fn merge(&mut self, other: &SquaredError) {
        self.count += other.count;
        self.sum += other.sum;
    }

    /// RMSE and PSNR; `None` over no values.
    pub fn error(&self) -> Option<SolveError> {
        if self.count == 0 {
            return None;
        }
        let rmse = (self.sum / self.count as f64).sqrt();
        let psnr = (rmse > 0.0).then(|| 20.0 * (PEAK_TO_PEAK / rmse).log10());
        Some(SolveError { rmse, psnr })
    }
}

/// The error of `samples` against `reference` (the same samples in the same order); `None` when they
/// differ in length or are empty.
pub fn solve_error(samples: &[f32], reference: &[f32]) -> Option<SolveError> {
    SquaredError::of(samples, reference)?.error()
}

#[cfg(test)]
mod tests {
    use super::solve_error;

    #[test]
    fn rmse_and_psnr_of_a_known_difference() {
        let reference = [0.0f32; 8];
        let samples = [0.2f32, -0.2, 0.2, -0.2, 0.2, -0.2, 0.2, -0.2];
        let e = solve_error(&samples, &reference).expect("same length");
        assert!((e.rmse - 0.2).abs() < 1e-7, "{e:?}");
        // 20·log10(2 / 0.2) = 20 dB; as images in [0, 1] the error is 0.1: 20 dB too.
        assert!(
            (e.psnr.expect("nonzero error") - 20.0).abs() < 1e-5,
            "{e:?}"
        );
    }

    #[test]
    fn equal_samples_have_no_psnr_and_mismatched_ones_no_error() {
        let a = [0.5f32, -0.25];
        assert_eq!(
            solve_error(&a, &a).map(|e| (e.rmse, e.psnr)),
            Some((0.0, None))
        );
        assert!(solve_error(&a, &a[..1]).is_none());
        assert!(solve_error(&[], &[]).is_none());
    }
}
