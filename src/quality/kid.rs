use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

/// KID: the mean and standard deviation of the unbiased MMD² over random subsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
    pub subsets: usize,
    pub subset_size: usize,
}

/// Kernel inception distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel
/// k(x, y) = (x·y / d + 1)³, averaged over `subsets` random subsets of `subset_size` vectors from each
/// set (capped at the smaller set). Features are rows of length `dim`; `seed` fixes the subsets.
pub fn kernel_inception_distance(
    a: &[f32],
    b: &[f32],
    dim: usize,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Kid {
    let (na, nb) = (a.len() / dim, b.len() / dim);
    let m = subset_size.min(na).min(nb);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let row = |set: &[f32], i: usize| -> Vec<f64> {
        set[i * dim..(i + 1) * dim]
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let kernel = |x: &[f64], y: &[f64]| -> f64 {
        let dot: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
        (dot / dim as f64 + 1.0).powi(3)
    };
    let mut values = Vec::with_capacity(subsets);
    for _ in 0..subsets {
        let xs: Vec<Vec<f64>> = sample(&mut rng, na, m).iter().map(|i| row(a, i)).collect();
        let ys: Vec<Vec<f64>> = sample(&mut rng, nb, m).iter().map(|i| row(b, i)).collect();
        let (mut kxx, mut kyy, mut kxy) = (0.0, 0.0, 0.0);
        for i in 0..m {
            for j in 0..m {
                if i != j {
                    kxx += kernel(&xs[i], &xs[j]);
                    kyy += kernel(&ys[i], &ys[j]);
                }
                kxy += kernel(&xs[i], &ys[j]);
            }
        }
        let mf = m as f64;
        values.push((kxx + kyy) / (mf * (mf - 1.0)) - 2.0 * kxy / (mf * mf));
    }
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len().max(1) as f64;
    Kid {
        mean,
        std: var.sqrt(),
        subsets,
        subset_size: m,
    }
}
