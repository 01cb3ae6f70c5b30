//! Initial noise equal to PyTorch's `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`
//! for float32 tensors of 16 or more values, so a difflab sample reproduces a diffusers run from its seed.
//!
//! PyTorch's CPU generator is MT19937 seeded with the low 32 bits of the seed. `randn` on a contiguous float
//! tensor of n ≥ 16 values fills it with uniforms `(u32 & 0xFFFFFF) / 2^24`, then turns each block of 16
//! into normals by Box–Muller (u1 = 1 − v[j], u2 = v[j + 8], j < 8); when n is not a multiple of 16 the last
//! 16 values are drawn again and transformed as one more block (ATen's `normal_fill`).

use std::f64::consts::PI;

/// The Mersenne Twister MT19937 (32-bit), as `std::mt19937` and PyTorch's `at::mt19937`.
#[derive(Clone)]
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, index: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A float32 uniform in [0, 1): the low 24 bits over 2^24 (ATen's `uniform_real_distribution<float>`).
    fn uniform(&mut self) -> f32 {
        ((self.next_u32() & 0x00ff_ffff) as f64 / f64::from(1u32 << 24)) as f32
    }
}

/// Box–Muller on one block of 16 uniforms, in place, in float32 as ATen computes it.
fn normal_block(v: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - v[j];
        let u2 = v[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = (2.0 * PI * f64::from(u2)) as f32;
        v[j] = radius * theta.cos();
        v[j + 8] = radius * theta.sin();
    }
}

/// `torch.Generator().manual_seed(seed)`: successive `randn` calls continue its stream, as a pipeline's draws
/// from one generator do (img2img: the VAE's sample, then the noise).
#[derive(Clone)]
pub struct TorchGenerator {
    rng: Mt19937,
}

impl std::fmt::Debug for TorchGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchGenerator").finish_non_exhaustive()
    }
}

impl TorchGenerator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Mt19937::new(seed as u32),
        }
    }

    /// The next `torch.randn(n)`, or `None` below 16 values (PyTorch then takes another path).
    pub fn randn(&mut self, n: usize) -> Option<Vec<f32>> {
        if n < 16 {
            return None;
        }
        let rng = &mut self.rng;
        let mut v: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        for block in v.chunks_exact_mut(16) {
            normal_block(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut v[n - 16..];
            for x in tail.iter_mut() {
                *x = rng.uniform();
            }
            normal_block(tail);
        }
        Some(v)
    }
}

/// `torch.randn(n)` under `manual_seed(seed)`, or `None` below 16 values (PyTorch then takes another path).
pub fn torch_randn(seed: u64, n: usize) -> Option<Vec<f32>> {
    TorchGenerator::new(seed).randn(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // std::mt19937 with the default seed 5489: its 10000th output is 4123659995 (C++ standard).
        let mut rng = Mt19937::new(5489);
        let last = (0..10_000).map(|_| rng.next_u32()).last();
        assert_eq!(last, Some(4_123_659_995));
    }

    #[test]
    fn a_generator_continues_its_stream() {
        // 16 values take 16 uniforms: two draws of 16 are one draw of 32.
        let mut g = TorchGenerator::new(3);
        let (a, b) = (g.randn(16).unwrap(), g.randn(16).unwrap());
        assert_eq!([a, b].concat(), torch_randn(3, 32).unwrap());
    }

    #[test]
    fn short_tensors_are_refused() {
        assert_eq!(torch_randn(0, 15), None);
        assert_eq!(torch_randn(0, 16).map(|v| v.len()), Some(16));
    }
}
