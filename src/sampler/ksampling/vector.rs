//! The few vector operations the samplers' updates are made of, on f64 slices of one length.

/// `Σ cᵢ·vᵢ` over the `terms` (at least one).
pub fn lin(terms: &[(f64, &[f64])]) -> Vec<f64> {
    let len = terms.first().map_or(0, |(_, v)| v.len());
    let mut out = vec![0.0; len];
    for (c, v) in terms {
        for (o, x) in out.iter_mut().zip(v.iter()) {
            *o += c * x;
        }
    }
    out
}

/// `x += c·v`.
pub fn add(x: &mut [f64], c: f64, v: &[f64]) {
    for (a, b) in x.iter_mut().zip(v) {
        *a += c * b;
    }
}

/// `a − b`.
pub fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// k-diffusion's `to_d`: the ODE's derivative `(x − denoised)/sigma`.
pub fn to_d(x: &[f64], sigma: f64, denoised: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(denoised)
        .map(|(a, d)| (a - d) / sigma)
        .collect()
}
