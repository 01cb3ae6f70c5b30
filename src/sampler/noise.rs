//! Gaussian noise for samplers: seeded per batch item so seed k gives the same image in every sampler
//! column and on every run, or injected (recorded noise from a reference implementation).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Where a stochastic step gets its noise from.
pub trait NoiseSource {
    /// Fills `out` (a whole batch) with standard normal noise for step `step` (0-based).
    fn fill(&mut self, step: usize, out: &mut [f32]);
}

/// Per-item deterministic noise: item `i` of the batch uses `seeds[i]`.
///
/// Stream 0 of a seed is its initial noise; stream `step + 1` is the noise of that step, so the noise
/// at a step does not depend on how many draws earlier steps made.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    seeds: Vec<u64>,
}

impl SeededNoise {
    pub fn new(seeds: Vec<u64>) -> Self {
        Self { seeds }
    }

    pub fn seeds(&self) -> &[u64] {
        &self.seeds
    }

    /// The initial noise x_T for every seed, `item_len` values each.
    pub fn initial(&self, item_len: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.seeds.len() * item_len];
        self.fill_stream(0, &mut out);
        out
    }

    fn fill_stream(&self, stream: u64, out: &mut [f32]) {
        if self.seeds.is_empty() {
            return;
        }
        let item_len = out.len() / self.seeds.len();
        for (seed, chunk) in self.seeds.iter().zip(out.chunks_mut(item_len)) {
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            rng.set_stream(stream);
            for v in chunk {
                *v = rng.sample(StandardNormal);
            }
        }
    }
}

impl NoiseSource for SeededNoise {
    fn fill(&mut self, step: usize, out: &mut [f32]) {
        self.fill_stream(step as u64 + 1, out);
    }
}

/// Noise given in advance, one tensor per step (`None` where none is expected).
/// Records every step it was asked for, so a test can check that draws happened where expected.
#[derive(Debug, Clone, Default)]
pub struct InjectedNoise {
    per_step: Vec<Option<Vec<f32>>>,
    /// Steps at which noise was asked for but none was given (filled with zeros).
    pub missing: Vec<usize>,
    /// Steps at which noise was drawn.
    pub drawn: Vec<usize>,
}

impl InjectedNoise {
    pub fn new(per_step: Vec<Option<Vec<f32>>>) -> Self {
        Self {
            per_step,
            ..Self::default()
        }
    }
}

impl NoiseSource for InjectedNoise {
    fn fill(&mut self, step: usize, out: &mut [f32]) {
        self.drawn.push(step);
        match self.per_step.get(step) {
            Some(Some(noise)) if noise.len() == out.len() => out.copy_from_slice(noise),
            _ => {
                self.missing.push(step);
                out.fill(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_gives_the_same_noise_in_any_batch() {
        let a = SeededNoise::new(vec![3, 7]).initial(5);
        let b = SeededNoise::new(vec![7]).initial(5);
        assert_eq!(&a[5..], &b[..]);
        let mut s1 = vec![0.0; 10];
        let mut s2 = vec![0.0; 5];
        SeededNoise::new(vec![3, 7]).fill(4, &mut s1);
        SeededNoise::new(vec![7]).fill(4, &mut s2);
        assert_eq!(&s1[5..], &s2[..]);
        assert_ne!(
            &s1[5..],
            &a[5..],
            "step noise differs from the initial noise"
        );
    }
}
