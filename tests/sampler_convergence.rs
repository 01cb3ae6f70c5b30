//! On the analytic Gaussian-mixture denoiser the exact probability-flow ODE solution is known, so the
//! error of each deterministic sampler can be measured as the step count doubles: its observed order
//! must match the method's (DDIM 1, DPM-Solver++ 2M 2, 3M at least 2).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use difflab::engine::{AnalyticDenoiser, GaussianMixture};
use difflab::lab::denoise;
use difflab::sampler::{NoiseSchedule, PredictionType, SamplerConfig, SeededNoise};
use serde_json::{Map, Value, json};

const SHAPE: [usize; 3] = [1, 4, 4];

fn overrides(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Max abs error of the sampler's result against the exact ODE solution, for each step count.
fn errors(name: &str, settings: Value, steps: &[usize]) -> Vec<f64> {
    let resolved = SamplerConfig::resolve(name, None, &overrides(settings)).unwrap();
    let schedule = NoiseSchedule::new(resolved.config.schedule());
    // Broad, overlapping components keep the ODE smooth, so the asymptotic order shows at these
    // step counts (sharply separated components make the flow switch abruptly between them).
    let sharp = GaussianMixture::patterns(SHAPE);
    let means = sharp
        .means
        .iter()
        .map(|m| m.iter().map(|v| 0.5 * v).collect())
        .collect();
    let mixture = GaussianMixture::new(sharp.weights.clone(), means, vec![0.6, 0.5, 0.7]);
    let d = mixture.dim();
    let seeds = SeededNoise::new((0..6).collect());
    let initial = seeds.initial(d);
    let mut errors = Vec::new();
    for &n in steps {
        let mut scheduler = resolved.config.build();
        scheduler.set_steps(n).unwrap();
        // The exact solution runs between the same noise levels the sampler starts and ends at.
        let sigma = |t: f64| {
            let a = schedule.alpha_bar(t as usize);
            ((1.0 - a) / a).sqrt()
        };
        let sigma_from = match scheduler.sigmas() {
            Some(s) => s[0] as f64,
            None => sigma(scheduler.timesteps()[0]),
        };
        let sigma_to = scheduler.sigmas().map_or(0.0, |s| s[n] as f64);
        let mut denoiser = AnalyticDenoiser::new(
            mixture.clone(),
            schedule.clone(),
            SHAPE,
            PredictionType::Epsilon,
        );
        let mut x = initial.clone();
        let batch = seeds.seeds().len();
        let mut noise = seeds.clone();
        denoise(
            &mut *scheduler,
            &mut denoiser,
            &mut x,
            batch,
            &mut noise,
            |_, _| true,
        )
        .unwrap();
        let mut worst = 0.0f64;
        for (item, got) in initial.chunks(d).zip(x.chunks(d)) {
            let start: Vec<f64> = item.iter().map(|&v| v as f64).collect();
            let exact = mixture.solve_ode(&start, sigma_from, sigma_to, 4000);
            for (g, e) in got.iter().zip(&exact) {
                worst = worst.max((*g as f64 - e).abs());
            }
        }
        errors.push(worst);
    }
    errors
}

fn observed_orders(errors: &[f64]) -> Vec<f64> {
    errors.windows(2).map(|w| (w[0] / w[1]).log2()).collect()
}

fn report(label: &str, steps: &[usize], errors: &[f64]) -> Vec<f64> {
    let orders = observed_orders(errors);
    println!("{label}");
    for (i, n) in steps.iter().enumerate() {
        let order = if i == 0 {
            String::new()
        } else {
            format!("  observed order {:.2}", orders[i - 1])
        };
        println!("  {n:>4} steps  error {:.3e}{order}", errors[i]);
    }
    orders
}

#[test]
fn ddim_converges_with_order_one() {
    // Step counts that divide the 1000 training steps: DDIM always steps back by N // n, so with
    // trailing spacing and a fractional stride (80, 160) it is no longer consistent with the ODE.
    let steps = [25, 50, 100, 200];
    let e = errors(
        "ddim",
        json!({"timestep_spacing": "trailing", "clip_sample": false, "set_alpha_to_one": true}),
        &steps,
    );
    let orders = report("DDIM (eta 0, trailing)", &steps, &e);
    let last = orders[orders.len() - 1];
    assert!(
        (0.8..1.3).contains(&last),
        "DDIM order {last:.2}, expected ~1"
    );
}

#[test]
fn dpm_solver_2m_converges_with_order_two() {
    let steps = [10, 20, 40, 80, 160];
    let e = errors(
        "dpm++2m",
        json!({"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min", "lower_order_final": false}),
        &steps,
    );
    let orders = report("DPM++ 2M (midpoint, trailing, to sigma_min)", &steps, &e);
    let last = orders[orders.len() - 1];
    assert!(
        (1.7..2.5).contains(&last),
        "DPM++ 2M order {last:.2}, expected ~2"
    );
}

#[test]
fn dpm_solver_3m_converges_at_least_with_order_two() {
    let steps = [10, 20, 40, 80, 160];
    let e = errors(
        "dpm++3m",
        json!({"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min", "lower_order_final": false}),
        &steps,
    );
    let orders = report("DPM++ 3M (trailing, to sigma_min)", &steps, &e);
    let last = orders[orders.len() - 1];
    assert!(last > 1.8, "DPM++ 3M order {last:.2}, expected at least ~2");
}
