//! The order rule the multistep solvers share (DPM-Solver++ multistep and EDM's DPM-Solver).

/// The order DPM-Solver multistep (and EDM's) uses at step `i` of `n` when the run started at step `begin`:
/// lower while the history fills, first order at a final step to 0 or with `euler_at_final`, and lower at the last
/// two steps of short runs (< 15) with `lower_order_final`.
pub(super) fn multistep_order(
    i: usize,
    begin: usize,
    n: usize,
    solver_order: usize,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
) -> usize {
    let warm = (i - begin).min(solver_order);
    let last = i + 1 == n && (euler_at_final || (lower_order_final && n < 15) || final_zero);
    let second = i + 2 == n && lower_order_final && n < 15;
    if solver_order == 1 || warm < 1 || last {
        1
    } else if solver_order == 2 || warm < 2 || second {
        2
    } else {
        3
    }
}
