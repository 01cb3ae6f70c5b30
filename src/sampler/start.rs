//! Starting part-way through a schedule, as diffusers' img2img and inpainting pipelines do: the first steps are
//! dropped (`get_timesteps` with `strength`) and the clean sample is noised to the first remaining one
//! (`add_noise`, or a flow scheduler's `scale_noise`).

use super::sigmas::SigmaSpace;

/// How a sampler's sample at a point of its schedule is made from a clean sample and unit noise:
/// `signal · clean + noise · ε` (√ᾱ and √(1 − ᾱ) in x_t space, 1 and σ in σ space, 1 − σ and σ for flows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noising {
    pub signal: f64,
    pub noise: f64,
}

impl Noising {
    /// The variance-preserving form at ᾱ, computed in float32 as diffusers' `add_noise` does.
    pub fn alpha_bar(alpha_bar: f32) -> Self {
        Self {
            signal: alpha_bar.sqrt() as f64,
            noise: (1.0 - alpha_bar).sqrt() as f64,
        }
    }

    /// The σ-space form: the clean sample plus σ times the noise.
    pub fn sigma(sigma: f32) -> Self {
        Self {
            signal: 1.0,
            noise: sigma as f64,
        }
    }

    /// A flow's interpolation: σ of noise, 1 − σ of the clean sample.
    pub fn flow(sigma: f32) -> Self {
        Self {
            signal: (1.0 - sigma) as f64,
            noise: sigma as f64,
        }
    }

    /// A multistep solver's form at its sigma: α and σ of `_sigma_to_alpha_sigma_t` (VP or flow).
    pub fn solver(space: SigmaSpace, sigma: f32) -> Self {
        let (signal, noise, _) = space.alpha_sigma_lambda(sigma as f64);
        Self { signal, noise }
    }

    /// Writes the noised sample of `clean` with `noise` into `out`, in float32 as diffusers computes it.
    pub fn apply(&self, clean: &[f32], noise: &[f32], out: &mut [f32]) {
        let (a, s) = (self.signal as f32, self.noise as f32);
        for ((o, &c), &n) in out.iter_mut().zip(clean).zip(noise) {
            *o = a * c + s * n;
        }
    }
}

/// The model call a run of `steps` steps starts at with img2img's `strength` (diffusers' `get_timesteps`:
/// `int(steps · strength)` steps run, the first `steps − that` are skipped, each of `calls_per_step` calls);
/// `None` when no step would run.
pub fn begin_call(steps: usize, strength: f64, calls_per_step: usize) -> Option<usize> {
    // Python's int() of the float product, which truncates: 10 × 0.29 is 2.8999999999999995, so 2 steps.
    let run = ((steps as f64 * strength).floor().max(0.0) as usize).min(steps);
    (run > 0).then(|| (steps - run) * calls_per_step)
}

/// The sigma of model call `call` in a table of one sigma per call (and a final one after the last call); `None`
/// past the last call.
pub(super) fn call_sigma(sigmas: &[f32], calls: usize, call: usize) -> Option<f32> {
    sigmas.get(call).copied().filter(|_| call < calls)
}

/// Whether a sampler that calls the model twice a step can start at `call`: a step's first call, inside the
/// schedule (a step's two calls go together).
pub(super) fn starts_a_step(call: usize, calls: usize) -> bool {
    call.is_multiple_of(2) && call < calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_truncates_as_python_int_does() {
        assert_eq!(begin_call(10, 0.3, 1), Some(7));
        assert_eq!(begin_call(10, 0.75, 2), Some(6));
        assert_eq!(begin_call(10, 1.0, 1), Some(0));
        assert_eq!(begin_call(100, 0.29, 1), Some(72));
        assert_eq!(begin_call(4, 0.2, 1), None);
    }

    #[test]
    fn noising_is_float32_arithmetic() {
        let mut out = [0.0; 2];
        Noising::flow(0.25).apply(&[1.0, 2.0], &[4.0, -4.0], &mut out);
        assert_eq!(out, [1.75, 0.5]);
        let n = Noising::alpha_bar(0.36);
        assert!((n.signal - 0.6).abs() < 1e-7 && (n.noise - 0.8).abs() < 1e-7);
    }
}
