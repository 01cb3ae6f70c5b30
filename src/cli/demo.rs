//! `difflab demo`: samplers side by side on the built-in analytic model, where the exact answer is
//! known: the error against the exact ODE solution and how well the samples match the data.

use std::time::Instant;

use serde_json::Map;

use crate::engine::{AnalyticDenoiser, GaussianMixture};
use crate::lab::denoise;
use crate::sampler::{NoiseSchedule, PredictionType, SamplerConfig, SeededNoise};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Samplers and step counts as NAME:STEPS.
    #[arg(
        long = "sampler",
        value_name = "NAME:STEPS",
        default_values_t = ["ddpm:1000", "ddim:50", "ddim:10", "dpm++2m:20", "dpm++2m-karras:10", "dpm++3m:10", "dpm++2m-sde-karras:20"].map(String::from)
    )]
    pub samplers: Vec<String>,
    /// Number of seeds (samples per sampler): at least 2, for the samples' covariance.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub seeds: u64,
}

const SHAPE: [usize; 3] = [1, 8, 8];

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mixture = GaussianMixture::patterns(SHAPE);
    let d = mixture.dim();
    let seeds = SeededNoise::new((0..args.seeds).collect());
    let initial = seeds.initial(d);
    let batch = args.seeds as usize;
    println!(
        "Analytic model: a mixture of 3 Gaussian patterns on 1x8x8, linear betas, {batch} seeds (the same in every row)."
    );
    println!(
        "{:<22} {:>5} {:>5} {:>10} {:>10} {:>12} {:>11}",
        "sampler", "steps", "NFE", "ms", "us/step", "ODE error", "data error"
    );
    let mean = mixture.mean();
    let cov = mixture.covariance();
    for spec in &args.samplers {
        let (name, steps) = spec
            .rsplit_once(':')
            .and_then(|(n, s)| Some((n, s.parse::<usize>().ok()?)))
            .ok_or_else(|| {
                anyhow::anyhow!("--sampler {spec:?}: expected NAME:STEPS, e.g. ddim:50")
            })?;
        // The analytic data are not confined to [-1, 1]: clipping x0 would bend the trajectories.
        let mut settings = Map::new();
        settings.insert("clip_sample".into(), false.into());
        let resolved = SamplerConfig::resolve(name, None, &settings)?;
        let schedule = NoiseSchedule::new(resolved.config.schedule());
        let mut scheduler = resolved.config.build();
        scheduler.set_steps(steps)?;
        let mut denoiser = AnalyticDenoiser::new(
            mixture.clone(),
            schedule.clone(),
            SHAPE,
            PredictionType::Epsilon,
        );
        let mut x = initial.clone();
        let mut noise = seeds.clone();
        let start = Instant::now();
        let timing = denoise(
            &mut *scheduler,
            &mut denoiser,
            &mut x,
            batch,
            &mut noise,
            |_, _| true,
        )?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        // Deterministic samplers are compared with the exact ODE solution from the same noise.
        let ode_error = if scheduler.is_stochastic() {
            "-".to_string()
        } else {
            let sigma_from = match scheduler.sigmas() {
                Some(s) => s[0] as f64,
                None => {
                    let a = schedule.alpha_bar(scheduler.timesteps()[0] as usize);
                    ((1.0 - a) / a).sqrt()
                }
            };
            // The sigma the last model call steps to (two-stage samplers list more sigmas than steps).
            let sigma_to = scheduler
                .sigmas()
                .map_or(0.0, |s| s[scheduler.timesteps().len()] as f64);
            let mut worst = 0.0f64;
            for (start, got) in initial.chunks(d).zip(x.chunks(d)).take(16) {
                let start: Vec<f64> = start.iter().map(|&v| v as f64).collect();
                let exact = mixture.solve_ode(&start, sigma_from, sigma_to, 2000);
                for (g, e) in got.iter().zip(&exact) {
                    worst = worst.max((*g as f64 - e).abs());
                }
            }
            format!("{worst:.2e}")
        };
        println!(
            "{:<22} {:>5} {:>5} {:>10.1} {:>10.1} {:>12} {:>11.3}",
            name,
            steps,
            timing.model_calls,
            ms,
            timing.sampler_time.as_secs_f64() * 1e6 / steps as f64,
            ode_error,
            moment_error(&x, d, &mean, &cov)
        );
    }
    println!(
        "ODE error: max |x - exact ODE solution| over 16 seeds. data error: relative error of the samples' mean and covariance against the mixture's."
    );
    Ok(())
}

/// ‖mean − μ‖ + ‖cov − Σ‖_F, relative to ‖μ‖ + ‖Σ‖_F.
fn moment_error(x: &[f32], d: usize, mean: &[f64], cov: &[f64]) -> f64 {
    let n = (x.len() / d) as f64;
    let m: Vec<f64> = (0..d)
        .map(|i| x.chunks(d).map(|s| s[i] as f64).sum::<f64>() / n)
        .collect();
    let mut c = vec![0.0; d * d];
    for s in x.chunks(d) {
        for i in 0..d {
            for j in 0..d {
                c[i * d + j] += (s[i] as f64 - m[i]) * (s[j] as f64 - m[j]) / (n - 1.0);
            }
        }
    }
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let dm: Vec<f64> = m.iter().zip(mean).map(|(a, b)| a - b).collect();
    let dc: Vec<f64> = c.iter().zip(cov).map(|(a, b)| a - b).collect();
    (norm(&dm) + norm(&dc)) / (norm(mean) + norm(cov))
}
