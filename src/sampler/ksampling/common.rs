//! Sigma-space formulas several samplers share.

/// k-diffusion's `get_ancestral_step`: the sigma to step down to deterministically and the noise to add
/// back, so that a step from `from` to `to` with `eta` = 1 is an ancestral (DDPM-like) step; `(to, 0)` for
/// `eta` = 0.
pub fn ancestral_step(from: f64, to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (to, 0.0);
    }
    let up = (eta * (to * to * (from * from - to * to) / (from * from)).sqrt()).min(to);
    let down = (to * to - up * up).sqrt();
    (down, up)
}

/// `t = −log sigma`, the time the exponential integrators step in.
pub fn t_of(sigma: f64) -> f64 {
    -sigma.ln()
}

/// `sigma = exp(−t)`.
pub fn sigma_of(t: f64) -> f64 {
    (-t).exp()
}
