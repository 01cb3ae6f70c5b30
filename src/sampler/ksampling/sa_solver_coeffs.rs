//! SA-Solver's (ComfyUI `sa_solver`, `sa_solver_pece`) step coefficients: the weights of the last denoised
//! samples in a stochastic Adams predictor or corrector step, from integrating their Lagrange interpolant in
//! `lambda = −log sigma` against the SDE's exponential kernel (Xue et al., arXiv 2309.05019, eqs. 15 and 18),
//! and the small dense solve that takes.

/// One step's integration interval and the interpolation points.
pub struct Interval<'a> {
    /// The sigma at the step's end.
    pub sigma_next: f64,
    /// The lambdas of the denoised samples used, oldest first.
    pub lambdas: &'a [f64],
    /// The lambdas at the step's start and end.
    pub lambda_s: f64,
    pub lambda_t: f64,
    /// The SDE's stochasticity on the step.
    pub tau: f64,
}

/// The weights of the denoised samples at `iv.lambdas` (same order). `simple_order_2`: with two samples, the
/// paper's simplified order-2 weights (appendix D) instead of the exact ones; `corrector`: those of the
/// corrector step.
pub fn b_coeffs(iv: &Interval, simple_order_2: bool, corrector: bool) -> Vec<f64> {
    let alpha_t = iv.sigma_next * iv.lambda_t.exp();
    if simple_order_2 && iv.lambdas.len() == 2 {
        return simple_b_coeffs(iv, alpha_t, corrector);
    }
    let moments = exponential_moments(iv);
    let n = iv.lambdas.len();
    // Row p of the transposed Vandermonde matrix: the points to the power p.
    let rows: Vec<Vec<f64>> = (0..n)
        .scan(vec![1.0; n], |power, _| {
            let row = power.clone();
            power.iter_mut().zip(iv.lambdas).for_each(|(v, l)| *v *= l);
            Some(row)
        })
        .collect();
    match solve(rows, moments) {
        Some(integrals) => integrals.iter().map(|v| alpha_t * v).collect(),
        // Coinciding points (repeated sigmas) leave no interpolant: fall back to the first-order step on the
        // newest sample.
        None => {
            let mut b = vec![0.0; n];
            if let Some(last) = b.last_mut() {
                *last =
                    alpha_t * -(-(1.0 + iv.tau * iv.tau) * (iv.lambda_t - iv.lambda_s)).exp_m1();
            }
            b
        }
    }
}

/// The paper's simplified order-2 weights `[older, newer]`.
fn simple_b_coeffs(iv: &Interval, alpha_t: f64, corrector: bool) -> Vec<f64> {
    let tau_mul = 1.0 + iv.tau * iv.tau;
    let h = iv.lambda_t - iv.lambda_s;
    let total = alpha_t * -(-h * tau_mul).exp_m1();
    let older = iv.lambdas.first().copied().unwrap_or(iv.lambda_s);
    let (b_older, b_newer) = match corrector {
        true => {
            let b_1 = alpha_t * (0.5 * tau_mul * h);
            (total - b_1, b_1)
        }
        false => {
            let b_2 = alpha_t * (0.5 * tau_mul * h * h) / (older - iv.lambda_s);
            (b_2, total - b_2)
        }
    };
    vec![b_older, b_newer]
}

/// `(1 + tau²)·∫ₛᵗ e^((1 + tau²)(λ − t))·λ^p dλ` for `p = 0 .. n−1` (the kernel's factor `e^((1 + tau²)t)`
/// taken out), by integrating by parts: with `P_q = t^q − s^q·e^(−(1 + tau²)h)`, the p-th moment is
/// `Σ_{q ≤ p} (−1)^(p−q)·p!/q!·P_q/(1 + tau²)^(p−q)`.
fn exponential_moments(iv: &Interval) -> Vec<f64> {
    let n = iv.lambdas.len();
    let tau_mul = 1.0 + iv.tau * iv.tau;
    let (s, t) = (iv.lambda_s, iv.lambda_t);
    let decay = (-tau_mul * (t - s)).exp();
    let products: Vec<f64> = (0..n)
        .map(|q| t.powf(q as f64) - s.powf(q as f64) * decay)
        .collect();
    (0..n)
        .map(|p| {
            products
                .iter()
                .enumerate()
                .take(p + 1)
                .map(|(q, product)| {
                    let falling: f64 = (q + 1..=p).map(|k| k as f64).product();
                    let sign = if (p - q) % 2 == 0 { 1.0 } else { -1.0 };
                    sign * falling / tau_mul.powi((p - q) as i32) * product
                })
                .sum()
        })
        .collect()
}

/// Solves `rows·x = rhs` by Gaussian elimination with partial pivoting (the systems here are at most 6×6);
/// `None` if the matrix is not square to `rhs` or singular to rounding (a pivot within `n·ε` of the largest
/// entry: coinciding points leave such a remnant rather than an exact 0).
pub fn solve(mut rows: Vec<Vec<f64>>, mut rhs: Vec<f64>) -> Option<Vec<f64>> {
    let n = rhs.len();
    if rows.len() != n || rows.iter().any(|row| row.len() != n) {
        return None;
    }
    let largest = rows.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    let negligible = largest * f64::EPSILON * n as f64;
    for col in 0..n {
        // The first row of largest magnitude in this column, as LAPACK picks it.
        let pivot = (col..n).fold(col, |best, r| {
            match rows[r][col].abs() > rows[best][col].abs() {
                true => r,
                false => best,
            }
        });
        rows.swap(col, pivot);
        rhs.swap(col, pivot);
        let (done, below) = rows.split_at_mut(col + 1);
        let top = done.last()?;
        let p = top[col];
        if p.abs() <= negligible || !p.is_finite() {
            return None;
        }
        let (rhs_done, rhs_below) = rhs.split_at_mut(col + 1);
        let b_top = rhs_done.last().copied()?;
        for (row, b) in below.iter_mut().zip(rhs_below.iter_mut()) {
            let factor = row[col] * (1.0 / p);
            row.iter_mut()
                .zip(top)
                .skip(col)
                .for_each(|(v, t)| *v -= factor * t);
            *b -= factor * b_top;
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let known: f64 = (i + 1..n).map(|k| rows[i][k] * x[k]).sum();
        x[i] = (rhs[i] - known) / rows[i][i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_pivoting_system() {
        let rows = vec![
            vec![0.0, 2.0, 1.0],
            vec![1.0, 1.0, 1.0],
            vec![4.0, -1.0, 2.0],
        ];
        let x = solve(rows, vec![5.0, 6.0, 8.0]).unwrap_or_default();
        let want = [7.0, 6.0, -7.0];
        assert!(
            x.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12),
            "{x:?}"
        );
    }

    #[test]
    fn refuses_singular_and_ragged_systems() {
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
        assert!(solve(vec![vec![1.0]], vec![1.0, 2.0]).is_none());
        assert_eq!(solve(Vec::new(), Vec::new()), Some(Vec::new()));
    }

    /// Coinciding points (a repeated sigma) get the first-order weight on the newest sample.
    #[test]
    fn coinciding_points_fall_back_to_first_order() {
        let l = -(6.0f64.ln());
        let iv = Interval {
            sigma_next: 6.0,
            lambdas: &[-(14.6f64.ln()), l, l],
            lambda_s: l,
            lambda_t: l,
            tau: 0.0,
        };
        assert_eq!(b_coeffs(&iv, false, true), vec![0.0, 0.0, 0.0]);
        let iv = Interval {
            lambda_t: -(2.0f64.ln()),
            sigma_next: 2.0,
            ..iv
        };
        let b = b_coeffs(&iv, false, false);
        let want = 2.0 * iv.lambda_t.exp() * -(-(iv.lambda_t - l)).exp_m1();
        assert!(b[..2] == [0.0, 0.0] && (b[2] - want).abs() < 1e-14, "{b:?}");
    }

    /// With one point the weight is the exact first-order one, `alpha_t·(1 − e^(−(1 + tau²)h))`.
    #[test]
    fn first_order_weight() {
        let iv = Interval {
            sigma_next: 0.5,
            lambdas: &[0.1],
            lambda_s: 0.1,
            lambda_t: 0.7,
            tau: 0.8,
        };
        let b = b_coeffs(&iv, false, false);
        let want = 0.5 * 0.7f64.exp() * -(-(1.0 + 0.64) * 0.6f64).exp_m1();
        assert!(b.len() == 1 && (b[0] - want).abs() < 1e-14, "{b:?}");
    }
}
