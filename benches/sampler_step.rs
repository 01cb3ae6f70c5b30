//! One step of each sampler on a 64×3×32×32 batch, beside a plain copy of the same bytes: the ratio
//! to the copy shows how far each step is from the memory floor.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use difflab::sampler::{SamplerConfig, SeededNoise};
use serde_json::Map;

const LEN: usize = 64 * 3 * 32 * 32;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("step_64x3x32x32");
    let model_output: Vec<f32> = (0..LEN).map(|i| ((i % 97) as f32 - 48.0) / 50.0).collect();
    let start: Vec<f32> = (0..LEN).map(|i| ((i % 89) as f32 - 44.0) / 40.0).collect();

    let mut dst = vec![0.0f32; LEN];
    group.bench_function("copy (memory floor)", |b| {
        b.iter(|| dst.copy_from_slice(std::hint::black_box(&start)))
    });

    for name in ["ddpm", "ddim", "dpm++2m", "dpm++3m", "dpm++2m-sde"] {
        let resolved = SamplerConfig::resolve(name, None, &Map::new()).unwrap();
        // Step 5 of 20: the multistep solvers run at full order there.
        let steps = 20;
        let noise = SeededNoise::new((0..64).collect());
        group.bench_function(BenchmarkId::new("step", name), |b| {
            b.iter_batched_ref(
                || {
                    let mut s = resolved.config.build();
                    s.set_steps(steps).unwrap();
                    let (mut x, mut x0, mut noise) = (start.clone(), vec![0.0; LEN], noise.clone());
                    for _ in 0..5 {
                        s.step(&model_output, &mut x, &mut x0, 64, &mut noise)
                            .unwrap();
                    }
                    (s, x, x0, noise)
                },
                |(s, x, x0, noise)| {
                    s.step(&model_output, x, x0, 64, noise).unwrap();
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
