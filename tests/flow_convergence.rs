//! The flow samplers on the analytic Gaussian mixture in rectified-flow form, whose exact ODE solution is
//! known: as the step count doubles the error must fall at the method's order (flow Euler 1, flow Heun 2,
//! DPM++ 2M with flow sigmas 2, 3M, UniPC and DEIS at least 2), each named as users name them on a flow model.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use difflab::engine::{AnalyticDenoiser, Denoiser, GaussianMixture};
use difflab::sampler::{NoiseSchedule, PredictionType, SamplerConfig, SeededNoise};
use serde_json::{Map, Value, json};

const SHAPE: [usize; 3] = [1, 4, 4];

/// SD3's scheduler config without its shift: the model is a flow-matching one.
fn flow_base(shift: f64) -> Map<String, Value> {
    json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": shift})
        .as_object()
        .cloned()
        .unwrap()
}

/// Broad, overlapping components keep the flow smooth, so the asymptotic order shows at these step counts.
fn mixture() -> GaussianMixture {
    let sharp = GaussianMixture::patterns(SHAPE);
    let means = sharp
        .means
        .iter()
        .map(|m| m.iter().map(|v| 0.5 * v).collect())
        .collect();
    GaussianMixture::new(sharp.weights.clone(), means, vec![0.6, 0.5, 0.7])
}

/// Max abs error against the exact flow for each step count. The model is called at each call's own
/// sigma (σ·1000, unrounded), so what is measured is the solver: DPM-Solver and UniPC hand a real model the
/// truncated integer timestep, which would add an error of its own.
fn errors(name: &str, shift: f64, steps: &[usize]) -> Vec<f64> {
    let resolved = SamplerConfig::resolve(name, Some(&flow_base(shift)), &Map::new()).unwrap();
    assert_eq!(
        resolved.config.prediction_type(),
        PredictionType::FlowPrediction,
        "{name} on a flow model"
    );
    let schedule = NoiseSchedule::new(resolved.config.schedule());
    let mixture = mixture();
    let d = mixture.dim();
    let seeds = SeededNoise::new((0..6).collect());
    let batch = seeds.seeds().len();
    let initial = seeds.initial(d);
    steps
        .iter()
        .map(|&n| {
            let mut scheduler = resolved.config.build();
            scheduler.set_steps(n).unwrap();
            let sigmas: Vec<f64> = scheduler
                .sigmas()
                .unwrap()
                .iter()
                .map(|&s| s as f64)
                .collect();
            let mut denoiser = AnalyticDenoiser::new(
                mixture.clone(),
                schedule.clone(),
                SHAPE,
                PredictionType::FlowPrediction,
            );
            let mut x = initial.clone();
            let (mut out, mut x0) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            let mut noise = seeds.clone();
            for &sigma in &sigmas[..scheduler.timesteps().len()] {
                denoiser
                    .predict(&x, &vec![sigma * 1000.0; batch], &mut out)
                    .unwrap();
                scheduler
                    .step(&out, &mut x, &mut x0, batch, &mut noise)
                    .unwrap();
            }
            let (from, to) = (sigmas[0], sigmas[sigmas.len() - 1]);
            let mut worst = 0.0f64;
            for (item, got) in initial.chunks(d).zip(x.chunks(d)) {
                let start: Vec<f64> = item.iter().map(|&v| v as f64).collect();
                let exact = mixture.solve_flow_ode(&start, from, to, 2000);
                for (g, e) in got.iter().zip(&exact) {
                    worst = worst.max((*g as f64 - e).abs());
                }
            }
            worst
        })
        .collect()
}

/// The observed order between consecutive step counts: log(e_k / e_{k+1}) / log(n_{k+1} / n_k).
fn orders(label: &str, steps: &[usize], errors: &[f64]) -> Vec<f64> {
    let orders: Vec<f64> = errors
        .windows(2)
        .zip(steps.windows(2))
        .map(|(e, n)| (e[0] / e[1]).ln() / (n[1] as f64 / n[0] as f64).ln())
        .collect();
    println!("{label}: errors {errors:?}, observed orders {orders:?}");
    orders
}

fn assert_order(name: &str, shift: f64, steps: &[usize], lo: f64, hi: f64) {
    let e = errors(name, shift, steps);
    let o = orders(&format!("{name} (shift {shift})"), steps, &e);
    let last = o[o.len() - 1];
    assert!(
        (lo..=hi).contains(&last),
        "{name}: observed order {last:.2} outside [{lo}, {hi}] (errors {e:?})"
    );
}

#[test]
fn flow_euler_is_first_order() {
    assert_order("euler", 1.0, &[10, 20, 40, 80], 0.8, 1.2);
    assert_order("euler", 3.0, &[10, 20, 40, 80], 0.8, 1.2);
}

#[test]
fn flow_heun_is_second_order() {
    assert_order("heun", 1.0, &[5, 10, 20, 40], 1.7, 2.4);
}

/// DPM-Solver++ 2M lands on σ = 0 with a first-order step from σ ≈ shift/n (the flow grid's last sigma),
/// whose error shrinks only as the data prediction settles: the order approaches 2 slowly, and with SD3's
/// shift of 3 (larger last steps) is still rising at 320 steps.
#[test]
fn dpm_solver_with_flow_sigmas_is_second_order() {
    assert_order("dpm++2m", 1.0, &[40, 80, 160, 320], 1.7, 2.5);
    assert_order("dpm++2m", 3.0, &[40, 80, 160, 320], 1.3, 2.5);
}

#[test]
fn higher_order_multistep_flow_solvers_are_at_least_second_order() {
    assert_order("dpm++3m", 1.0, &[10, 20, 40, 80], 1.8, 4.0);
    assert_order("unipc", 1.0, &[10, 20, 40, 80], 1.8, 4.0);
    assert_order("deis", 1.0, &[10, 20, 40, 80], 1.8, 4.0);
}
