//! One step of every sampler family in the registry (every loop of the web UIs' family, and the multistep
//! solvers in flow mode) on a 64×3×32×32 batch, and each guidance method's guided prediction, against a plain
//! copy of the same bytes measured in the same round: the ratio shows how far a step is from the memory floor.
//!
//! This machine's speed drifts from minute to minute, so each round times the copy and then every
//! sampler, and the report is the median ratio over the rounds with its min–max.
//! `cargo bench --bench sampler_step` (`-- --rounds N`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::time::Instant;

use difflab::guidance::{GuidanceMethod, MethodName};
use difflab::lab::guidance::{MethodCall, guide, guide_method};
use difflab::sampler::registry::FAMILIES;
use difflab::sampler::{PredictionType, SamplerConfig, SeededNoise};
use serde_json::Map;

const LEN: usize = 64 * 3 * 32 * 32;
const BATCH: usize = 64;
/// Model calls before the timed one: the multistep solvers run at full order there.
const WARM_CALLS: usize = 5;
const REPEATS: usize = 15;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of one `copy_from_slice` of the batch.
fn copy_seconds(start: &[f32]) -> f64 {
    let mut dst = vec![0.0f32; LEN];
    let mut times: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(start));
            std::hint::black_box(&dst);
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut times)
}

/// Median seconds of model call `WARM_CALLS` of a 20-step run of `config`.
fn step_seconds(config: &SamplerConfig, model_output: &[f32], start: &[f32]) -> f64 {
    let noise = SeededNoise::new((0..BATCH as u64).collect());
    let mut times: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let mut s = config.build();
            s.set_steps(20).unwrap();
            let (mut x, mut x0, mut noise) = (start.to_vec(), vec![0.0; LEN], noise.clone());
            s.prepare(&mut x, &mut noise);
            for _ in 0..WARM_CALLS {
                s.step(model_output, &mut x, &mut x0, BATCH, &mut noise)
                    .unwrap();
            }
            let t = Instant::now();
            s.step(model_output, &mut x, &mut x0, BATCH, &mut noise)
                .unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut times)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(7usize);
    let model_output: Vec<f32> = (0..LEN).map(|i| ((i % 97) as f32 - 48.0) / 50.0).collect();
    // Inside the range every sampler accepts (the EDM classes precondition by sigma).
    let start: Vec<f32> = (0..LEN).map(|i| ((i % 89) as f32 - 44.0) / 40.0).collect();
    let mut samplers: Vec<(String, SamplerConfig)> = FAMILIES
        .iter()
        // One name a family, but every loop of the web UIs' family.
        .flat_map(|f| match f.class {
            "KDiffusionSampler" => f
                .names
                .iter()
                .filter(|n| n.ui.contains(&difflab::sampler::registry::Ui::Difflab))
                .collect(),
            _ => f.names.first().into_iter().collect::<Vec<_>>(),
        })
        .map(|n| {
            let resolved = SamplerConfig::resolve(n.name, None, &Map::new()).unwrap();
            (n.name.to_string(), resolved.config)
        })
        .collect();
    // The multistep solvers in their flow mode, as on SD3's scheduler config.
    let sd3 = serde_json::json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0});
    for name in ["dpm++2m", "unipc", "deis"] {
        let resolved = SamplerConfig::resolve(name, sd3.as_object(), &Map::new()).unwrap();
        samplers.push((format!("{name} (flow)"), resolved.config));
    }
    let methods: Vec<MethodName> = MethodName::NAMES
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    let mut ratios = vec![Vec::new(); samplers.len()];
    let mut guide_ratios = vec![Vec::new(); methods.len() + 1];
    let mut copies = Vec::new();
    for _ in 0..rounds {
        let copy = copy_seconds(&start);
        copies.push(copy);
        for (i, (_, config)) in samplers.iter().enumerate() {
            ratios[i].push(step_seconds(config, &model_output, &start) / copy);
        }
        guide_ratios[0].push(plain_cfg_seconds(&model_output, &start) / copy);
        for (i, &m) in methods.iter().enumerate() {
            guide_ratios[i + 1].push(method_seconds(m, &model_output, &start) / copy);
        }
    }
    println!(
        "one step on 64×3×32×32 (f32, {:.2} MB), {rounds} rounds; copy {:.3} ms (median)",
        (LEN * 4) as f64 / 1e6,
        1e3 * median(&mut copies)
    );
    println!(
        "{:<16} {:>14} {:>16}",
        "sampler", "step / copy", "min – max"
    );
    for ((name, _), r) in samplers.iter().zip(ratios.iter_mut()) {
        report(name, r);
    }
    println!("\nguided prediction of 64 items (uncond and cond given), per method");
    report("cfg (the lab's)", &mut guide_ratios[0]);
    for (m, r) in methods.iter().zip(&mut guide_ratios[1..]) {
        report(m.name(), r);
    }
}

fn report(name: &str, r: &mut [f64]) {
    let (lo, hi) = (
        r.iter().copied().fold(f64::INFINITY, f64::min),
        r.iter().copied().fold(0.0, f64::max),
    );
    println!("{name:<26} {:>13.2}× {lo:>7.2} – {hi:.2}", median(r));
}

/// Median seconds of the lab's plain classifier-free guidance of the batch.
fn plain_cfg_seconds(cond: &[f32], uncond: &[f32]) -> f64 {
    let mut out = vec![0.0f32; LEN];
    let mut times: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            guide(uncond, cond, 4.0, 0.0, LEN / BATCH, &mut out);
            std::hint::black_box(&out);
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut times)
}

/// Median seconds of `method`'s guided prediction of the batch, as a lane makes it (f64, through the
/// denoised prediction for ComfyUI's nodes).
fn method_seconds(method: MethodName, cond: &[f32], uncond: &[f32]) -> f64 {
    let spec = GuidanceMethod::new(method, &Map::new(), None).unwrap();
    let mut guide = spec.build();
    let mut out = vec![0.0f32; LEN];
    // Perp-Neg's empty-prompt prediction: any third batch.
    let empty: Vec<f32> = cond.iter().map(|v| 0.5 * v).collect();
    let call = MethodCall {
        uncond,
        cond,
        empty: method.needs_empty().then_some(&empty[..]),
        input: uncond,
        sigma: 3.0,
        prediction: PredictionType::Epsilon,
        step: 3,
        steps: 20,
        item_shape: [3, 32, 32],
    };
    let mut times: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            guide_method(
                guide.as_mut(),
                method.on_denoised(),
                4.0,
                0.0,
                &call,
                &mut out,
            );
            std::hint::black_box(&out);
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut times)
}
