//! Gaussian noise for samplers: seeded per batch item so seed k gives the same image in every sampler
//! column and on every run, or injected (recorded noise from a reference implementation).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::torch_noise::TorchGenerator;

/// Where a stochastic step gets its noise from.
pub trait NoiseSource {
    /// Fills `out` (a whole batch) with standard normal noise for step `step` (0-based).
    fn fill(&mut self, step: usize, out: &mut [f32]);

    /// Fills `out` with the normalized Brownian increment `(W(to) − W(from)) / sqrt|to − from|` of each
    /// item's Brownian path, for model call `call` (the SDE samplers, whose noise must be one path:
    /// increments over overlapping intervals are correlated). A source without paths (recorded noise)
    /// gives its noise for `call`.
    fn brownian(&mut self, call: usize, _from: f64, _to: f64, out: &mut [f32]) {
        self.fill(call, out);
    }
}

/// The ChaCha stream of a seed that its Brownian path draws from (streams 0..=steps are the initial
/// and per-step noise).
const BROWNIAN_STREAM: u64 = u64::MAX;

/// The ChaCha stream of a seed that a VAE's sample of a start image draws from (the one below it: of a masked
/// start image).
const ENCODER_STREAM: u64 = u64::MAX - 1;

/// Per-item deterministic noise: item `i` of the batch uses `seeds[i]`.
///
/// Stream 0 of a seed is its initial noise; stream `step + 1` is the noise of that step, so the noise
/// at a step does not depend on how many draws earlier steps made. Each seed also has its own
/// Brownian path, sampled lazily where a sampler queries it: the same queries give the same values
/// in any batch.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    seeds: Vec<u64>,
    /// One path per seed, created at the first Brownian query.
    paths: Vec<BrownianPath>,
    /// `noise = "torch"`: each seed's `torch.Generator`, past its initial noise, which the steps draw from in
    /// call order as a pipeline's one generator does.
    torch: Vec<TorchGenerator>,
}

impl SeededNoise {
    pub fn new(seeds: Vec<u64>) -> Self {
        Self {
            seeds,
            paths: Vec::new(),
            torch: Vec::new(),
        }
    }

    /// The same seeds whose steps draw from each seed's `torch.Generator` after its initial noise of
    /// `item_len` values (`torch.randn`), as a diffusers pipeline draws a batch of one from its generator.
    /// Items of fewer than 16 values keep their own streams (torch takes another path there).
    pub fn with_torch_steps(mut self, item_len: usize) -> Self {
        self.torch = (self.seeds.iter())
            .map(|&seed| {
                let mut generator = TorchGenerator::new(seed);
                let _initial = generator.randn(item_len);
                generator
            })
            .collect();
        self
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

    /// The unit noise of a VAE's sample of an image's latent distribution (img2img), `item_len` values per seed:
    /// a stream of its own, so the initial noise is the same with or without a start image.
    pub fn encoder_noise(&self, item_len: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.seeds.len() * item_len];
        self.fill_stream(ENCODER_STREAM, &mut out);
        out
    }

    /// The unit noise of a VAE's sample of a masked start image (an inpainting U-Net's), a stream of its own.
    pub fn masked_encoder_noise(&self, item_len: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.seeds.len() * item_len];
        self.fill_stream(ENCODER_STREAM - 1, &mut out);
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
        let item_len = out.len() / self.seeds.len().max(1);
        if self.torch.is_empty() || item_len < 16 {
            self.fill_stream(step as u64 + 1, out);
            return;
        }
        for (generator, chunk) in self.torch.iter_mut().zip(out.chunks_mut(item_len)) {
            if let Some(draw) = generator.randn(item_len) {
                chunk.copy_from_slice(&draw);
            }
        }
    }

    fn brownian(&mut self, _call: usize, from: f64, to: f64, out: &mut [f32]) {
        if self.seeds.is_empty() {
            return;
        }
        let item_len = out.len() / self.seeds.len();
        if self.paths.len() != self.seeds.len() || self.paths.iter().any(|p| p.dim() != item_len) {
            self.paths = self
                .seeds
                .iter()
                .map(|&s| BrownianPath::new(s, item_len))
                .collect();
        }
        for (path, chunk) in self.paths.iter_mut().zip(out.chunks_mut(item_len)) {
            path.increment(from, to, chunk);
        }
    }
}

/// A Brownian motion W(t) in `dim` independent coordinates with W(0) = 0, sampled lazily: a new
/// point between two known ones is drawn from the Brownian bridge between them, one beyond them from
/// an independent increment, so every set of queried points has the exact joint law of the path.
#[derive(Debug, Clone)]
pub struct BrownianPath {
    rng: ChaCha8Rng,
    /// The known points (t, W(t)), sorted by t.
    points: Vec<(f64, Vec<f64>)>,
}

impl BrownianPath {
    pub fn new(seed: u64, dim: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(BROWNIAN_STREAM);
        Self {
            rng,
            points: vec![(0.0, vec![0.0; dim])],
        }
    }

    pub fn dim(&self) -> usize {
        self.points[0].1.len()
    }

    /// W(t), drawn now if t was never queried.
    pub fn at(&mut self, t: f64) -> &[f64] {
        let i = self.index_of(t);
        &self.points[i].1
    }

    /// Writes `(W(to) − W(from)) / sqrt|to − from|` (zeros for an empty interval).
    pub fn increment(&mut self, from: f64, to: f64, out: &mut [f32]) {
        if from == to || !from.is_finite() || !to.is_finite() {
            out.fill(0.0);
            return;
        }
        // Inserting `to` may shift `from`'s index, so `from` is looked up again after it.
        self.index_of(from);
        let b = self.index_of(to);
        let a = self.index_of(from);
        let scale = 1.0 / (to - from).abs().sqrt();
        let (wa, wb) = (&self.points[a].1, &self.points[b].1);
        for ((o, &x), &y) in out.iter_mut().zip(wa).zip(wb) {
            *o = ((y - x) * scale) as f32;
        }
    }

    /// The index of the point at `t`, inserting it if new.
    fn index_of(&mut self, t: f64) -> usize {
        let i = match self.points.binary_search_by(|p| p.0.total_cmp(&t)) {
            Ok(i) => return i,
            Err(i) => i,
        };
        let w = match (
            i.checked_sub(1).map(|k| &self.points[k]),
            self.points.get(i),
        ) {
            (Some((a, wa)), Some((b, wb))) => {
                // The bridge: mean on the chord, variance (t − a)(b − t)/(b − a).
                let f = (t - a) / (b - a);
                let sd = ((t - a) * (b - t) / (b - a)).sqrt();
                let (wa, wb) = (wa.clone(), wb.clone());
                self.draw(|k, z| wa[k] + f * (wb[k] - wa[k]) + sd * z, wa.len())
            }
            (Some((a, wa)), None) => {
                let (sd, wa) = ((t - a).sqrt(), wa.clone());
                self.draw(|k, z| wa[k] + sd * z, wa.len())
            }
            (None, Some((b, wb))) => {
                let (sd, wb) = ((b - t).sqrt(), wb.clone());
                self.draw(|k, z| wb[k] + sd * z, wb.len())
            }
            (None, None) => unreachable!("the path always holds W(0)"),
        };
        self.points.insert(i, (t, w));
        i
    }

    /// `dim` values `value(k, z_k)` with fresh standard normal z.
    fn draw(&mut self, value: impl Fn(usize, f64) -> f64, dim: usize) -> Vec<f64> {
        (0..dim)
            .map(|k| {
                let z: f64 = self.rng.sample(StandardNormal);
                value(k, z)
            })
            .collect()
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

    /// The queries a DPM++ SDE run of a few steps makes: (sigma, midpoint) then (sigma, next).
    fn sde_queries() -> Vec<(f64, f64)> {
        let s = [14.6f64, 7.1, 3.2, 1.3, 0.45];
        s.windows(2)
            .flat_map(|w| [(w[0], (w[0] * w[1]).sqrt()), (w[0], w[1])])
            .collect()
    }

    #[test]
    fn brownian_noise_of_a_seed_is_the_same_in_any_batch() {
        let (mut one, mut three) = (SeededNoise::new(vec![7]), SeededNoise::new(vec![3, 7, 9]));
        for (call, (from, to)) in sde_queries().into_iter().enumerate() {
            let (mut a, mut b) = (vec![0.0; 4], vec![0.0; 12]);
            one.brownian(call, from, to, &mut a);
            three.brownian(call, from, to, &mut b);
            assert_eq!(&a[..], &b[4..8], "call {call}");
        }
    }

    #[test]
    fn brownian_increments_have_variance_dt_and_are_independent() {
        let n = 4000;
        let (mut var_a, mut var_b, mut cov) = (0.0, 0.0, 0.0);
        for seed in 0..n {
            let mut p = BrownianPath::new(seed, 1);
            // Query out of order: the far end first, then a point inside, then beyond.
            let w3 = p.at(3.0)[0];
            let w1 = p.at(1.0)[0];
            let w5 = p.at(5.0)[0];
            let (a, b) = (w3 - w1, w5 - w3);
            var_a += a * a;
            var_b += b * b;
            cov += a * b;
            assert_eq!(p.at(3.0)[0], w3, "a known point is not redrawn");
        }
        let n = n as f64;
        // Standard errors: sqrt(2/n)·variance for a variance, sqrt(1/n)·sqrt(va·vb) for a covariance.
        assert!(
            (var_a / n - 2.0).abs() < 5.0 * 2.0 * (2.0 / n).sqrt(),
            "{}",
            var_a / n
        );
        assert!(
            (var_b / n - 2.0).abs() < 5.0 * 2.0 * (2.0 / n).sqrt(),
            "{}",
            var_b / n
        );
        assert!((cov / n).abs() < 5.0 * 2.0 / n.sqrt(), "{}", cov / n);
    }

    #[test]
    fn brownian_increment_over_a_union_is_the_sum() {
        let mut p = BrownianPath::new(11, 3);
        let (mut ab, mut bc, mut ac) = (vec![0.0; 3], vec![0.0; 3], vec![0.0; 3]);
        p.increment(2.0, 0.5, &mut ab);
        p.increment(0.5, 0.1, &mut bc);
        p.increment(2.0, 0.1, &mut ac);
        for k in 0..3 {
            let sum = ab[k] as f64 * 1.5f64.sqrt() + bc[k] as f64 * 0.4f64.sqrt();
            assert!((sum - ac[k] as f64 * 1.9f64.sqrt()).abs() < 1e-5, "{k}");
        }
    }
}
