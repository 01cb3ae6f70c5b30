//! A variance-exploding score model (the analytic Gaussian mixture in VE form: it takes x = x0 + σ·eps and σ,
//! and returns the exact score) under the samplers that run on one: Euler, Heun and DPM++ 2M step on the model's
//! own σ table (a ScoreSdeVeScheduler config's range, even in log σ) and their errors against the exact
//! probability-flow ODE shrink at their orders; the predictor-corrector sampler's samples land on the data.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use difflab::engine::{AnalyticDenoiser, Denoiser, GaussianMixture};
use difflab::lab::{LabError, denoise};
use difflab::sampler::{NoiseSchedule, PredictionType, SamplerConfig, SeededNoise};
use serde_json::{Map, Value, json};

const SHAPE: [usize; 3] = [1, 4, 4];

/// The model's scheduler_config.json: diffusers' ScoreSdeVeScheduler with a small σ range.
fn ve_model() -> Map<String, Value> {
    json!({"_class_name": "ScoreSdeVeScheduler", "sigma_min": 0.01, "sigma_max": 20.0, "num_train_timesteps": 2000})
        .as_object()
        .unwrap()
        .clone()
}

/// Broad, overlapping components keep the ODE smooth enough for the asymptotic order to show.
fn mixture() -> GaussianMixture {
    let sharp = GaussianMixture::patterns(SHAPE);
    let means = (sharp.means.iter())
        .map(|m| m.iter().map(|v| 0.5 * v).collect())
        .collect();
    GaussianMixture::new(sharp.weights.clone(), means, vec![0.6, 0.5, 0.7]).in_unit_range()
}

fn denoiser(config: &SamplerConfig) -> AnalyticDenoiser {
    let schedule = NoiseSchedule::new(config.schedule());
    AnalyticDenoiser::new(mixture(), schedule, SHAPE, PredictionType::Score)
}

/// Max abs error of the sampler's result against the exact ODE solution, for each step count.
fn errors(name: &str, settings: Value, steps: &[usize]) -> Vec<f64> {
    let overrides = settings.as_object().unwrap().clone();
    let resolved = SamplerConfig::resolve(name, Some(&ve_model()), &overrides).unwrap();
    assert_eq!(resolved.config.prediction_type(), PredictionType::Score);
    let m = mixture();
    let d = m.dim();
    let seeds = SeededNoise::new((0..6).collect());
    let initial = seeds.initial(d);
    let mut errors = Vec::new();
    for &n in steps {
        let mut scheduler = resolved.config.build();
        scheduler.set_steps(n).unwrap();
        let sigmas = scheduler.sigmas().unwrap().to_vec();
        let (sigma_from, sigma_to) = (sigmas[0] as f64, *sigmas.last().unwrap() as f64);
        // σ-space samplers hold x_VE (they start from σ_max-scaled noise); the others x_VP.
        let ins = scheduler.init_noise_sigma();
        let to_vp = |s: f64| match ins > 1.0 {
            true => 1.0 / s.hypot(1.0),
            false => 1.0,
        };
        let mut x: Vec<f32> = initial.iter().map(|&v| v * ins).collect();
        let mut noise = seeds.clone();
        let mut model = denoiser(&resolved.config);
        match denoise(
            &mut *scheduler,
            &mut model,
            &mut x,
            6,
            &mut noise,
            |_, _| true,
        ) {
            Ok(_) | Err(LabError::Cancelled) => {}
            Err(e) => panic!("{e}"),
        }
        let mut worst = 0.0f64;
        for (item, got) in initial.chunks(d).zip(x.chunks(d)) {
            let start: Vec<f64> = (item.iter())
                .map(|&v| f64::from(v * ins) * to_vp(sigma_from))
                .collect();
            let exact = m.solve_ode(&start, sigma_from, sigma_to, 4000);
            for (g, e) in got.iter().zip(&exact) {
                worst = worst.max((f64::from(*g) * to_vp(sigma_to) - e).abs());
            }
        }
        errors.push(worst);
    }
    errors
}

/// Asserts that `name` with `settings` converges at an order within `orders`, observed between the last two of
/// `steps` (the errors are printed).
fn assert_order(name: &str, settings: Value, steps: &[usize], orders: std::ops::Range<f64>) {
    let errors = errors(name, settings, steps);
    println!("{name} on the VE model");
    for (n, e) in steps.iter().zip(&errors) {
        println!("  {n:>4} steps  error {e:.3e}");
    }
    let k = steps.len() - 1;
    let order = (errors[k - 1] / errors[k]).ln() / (steps[k] as f64 / steps[k - 1] as f64).ln();
    assert!(orders.contains(&order), "{name}: order {order:.2}");
}

#[test]
fn euler_on_a_ve_model_converges_with_order_one() {
    let karras = json!({"use_karras_sigmas": true});
    assert_order("euler", karras, &[25, 50, 100, 200], 0.8..1.3);
}

#[test]
fn heun_on_a_ve_model_converges_with_order_two() {
    // Still pre-asymptotic at 80 steps (2.3, 2.2, 2.6 between the counts).
    let karras = json!({"use_karras_sigmas": true});
    assert_order("heun", karras, &[10, 20, 40, 80], 1.7..3.0);
}

#[test]
fn dpm_solver_2m_on_a_ve_model_converges_with_order_two() {
    let settings = json!({"use_karras_sigmas": true, "final_sigmas_type": "sigma_min", "lower_order_final": false});
    assert_order("dpm++2m", settings, &[10, 20, 40, 80], 1.7..2.6);
}

#[test]
fn ddim_on_a_ve_model_converges_with_order_one() {
    let settings =
        json!({"timestep_spacing": "trailing", "clip_sample": false, "set_alpha_to_one": true});
    assert_order("ddim", settings, &[25, 50, 100, 200], 0.8..1.3);
}

/// The predictor-corrector sampler draws noise at every call; with enough steps its samples are the data's:
/// each lands near one of the mixture's means, and the model is called with σ from σ_max down.
#[test]
fn the_predictor_corrector_sampler_lands_on_the_data() {
    let resolved = SamplerConfig::resolve("score_sde_ve", Some(&ve_model()), &Map::new()).unwrap();
    let mut scheduler = resolved.config.build();
    scheduler.set_steps(200).unwrap();
    assert_eq!(
        scheduler.timesteps().len(),
        400,
        "one corrector and one predictor call a step"
    );
    assert!((scheduler.timesteps()[0] - 20.0).abs() < 1e-4);
    let m = mixture();
    let d = m.dim();
    let seeds = SeededNoise::new((0..32).collect());
    let mut x: Vec<f32> = (seeds.initial(d).iter())
        .map(|&v| v * scheduler.init_noise_sigma())
        .collect();
    let mut noise = seeds.clone();
    let mut model = denoiser(&resolved.config);
    assert_eq!(model.info().prediction_type, PredictionType::Score);
    denoise(
        &mut *scheduler,
        &mut model,
        &mut x,
        32,
        &mut noise,
        |_, _| true,
    )
    .unwrap();
    for item in x.chunks(d) {
        let nearest = (m.means.iter())
            .map(|mean| {
                let d2: f64 = (mean.iter().zip(item))
                    .map(|(a, &b)| (a - f64::from(b)).powi(2))
                    .sum();
                (d2 / d as f64).sqrt()
            })
            .fold(f64::INFINITY, f64::min);
        // The components' spread is 0.25–0.35 per value: a sample is within a few of them of a mean.
        assert!(nearest < 1.0, "a sample {nearest:.2} from every mean");
    }
}

/// A sampler with no VE form is refused by name, and so are training-schedule keys on a VE model.
#[test]
fn samplers_without_a_ve_form_and_schedule_keys_are_refused() {
    let err = SamplerConfig::resolve("edm-euler", Some(&ve_model()), &Map::new()).unwrap_err();
    assert!(err.to_string().contains("variance-exploding"), "{err}");
    let betas = json!({"beta_schedule": "scaled_linear"});
    let err =
        SamplerConfig::resolve("euler", Some(&ve_model()), betas.as_object().unwrap()).unwrap_err();
    assert!(err.to_string().contains("σ range"), "{err}");
    let err = SamplerConfig::resolve("score_sde_ve", None, &Map::new()).unwrap_err();
    assert!(err.to_string().contains("ScoreSdeVeScheduler"), "{err}");
}
