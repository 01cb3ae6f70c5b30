//! Per-call overhead of `OnnxDenoiser::predict` against a plain `Session::run` on the same tiny model
//! (tests/data/onnx/tiny_f32.onnx, out = 0.5 * sample + t, 4×8×8), one intra-op thread, CPU, batches 1 and 16.
//!
//! The tiny model makes the call overhead the whole cost: for a real U-Net the model's own time dwarfs it.
//! Three variants per batch:
//! - `difflab`: `Denoiser::predict` (role mapping, timestep conversion, output shape check, copy into `out`);
//! - `plain_run_copy`: what a caller writes by hand with `ort`: views over the slices, `run`, copy the output;
//! - `plain_run_prebuilt`: inputs built once, `run` only, output left in ONNX Runtime's buffer.
//!
//! `benches/engine_overhead.py` times Python onnxruntime on the same model with the same thread settings.
//! Run: `cargo bench --bench engine_overhead` (ratios: divide the medians).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use difflab::engine::{Denoiser, OnnxDenoiser, OnnxOptions, ProviderOptions, runtime};
use ort::session::Session;
use ort::value::{Tensor, TensorRef};

const PER_ITEM: usize = 4 * 8 * 8;

fn model_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/tiny_f32.onnx")
}

fn overhead(c: &mut Criterion) {
    let options = OnnxOptions {
        providers: ProviderOptions::cpu(),
        intra_threads: Some(1),
        ..OnnxOptions::default()
    };
    let mut model = OnnxDenoiser::load(model_path(), &options).expect("tiny model loads");
    let rt = runtime(None).expect("runtime loaded");
    let mut session = Session::builder(rt.environment())
        .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
        .and_then(|mut b| b.commit_from_file(model_path()))
        .expect("plain session");

    let mut group = c.benchmark_group("engine_overhead");
    for batch in [1usize, 16] {
        let sample: Vec<f32> = (0..batch * PER_ITEM)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let timesteps = vec![500.0f64; batch];
        let t_i64 = vec![500i64; batch];
        let mut out = vec![0.0f32; sample.len()];

        group.bench_function(BenchmarkId::new("difflab", batch), |b| {
            b.iter(|| {
                model
                    .predict(black_box(&sample), black_box(&timesteps), &mut out)
                    .unwrap()
            })
        });

        group.bench_function(BenchmarkId::new("plain_run_copy", batch), |b| {
            b.iter(|| {
                let x =
                    TensorRef::from_array_view(([batch, 4, 8, 8], black_box(&sample[..]))).unwrap();
                let t = TensorRef::from_array_view(([batch], black_box(&t_i64[..]))).unwrap();
                let outputs = session
                    .run(ort::inputs!["sample" => x, "timestep" => t])
                    .unwrap();
                let (_, data) = outputs["out_sample"].try_extract_tensor::<f32>().unwrap();
                out.copy_from_slice(data);
            })
        });

        let x = Tensor::from_array(([batch, 4, 8, 8], sample.clone())).unwrap();
        let t = Tensor::from_array(([batch], t_i64.clone())).unwrap();
        group.bench_function(BenchmarkId::new("plain_run_prebuilt", batch), |b| {
            b.iter(|| {
                let outputs = session
                    .run(ort::inputs!["sample" => &x, "timestep" => &t])
                    .unwrap();
                black_box(outputs.len());
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = overhead
}
criterion_main!(benches);
