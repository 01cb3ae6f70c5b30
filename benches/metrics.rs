//! Reader and plotting throughput: 1 million JSON lines and event records, and drawing a
//! 10-million-point series against a 1,000-point one.
//!
//! `cargo bench --bench metrics`; the comparison with TensorBoard's own loader is
//! `benches/metrics_vs_tensorboard.py`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use difflab::metrics::series::{DisplaySeries, Point, XAxis, downsample_minmax};
use difflab::metrics::tail::SeriesBuilder;
use difflab::metrics::tfevents::proto;
use difflab::metrics::tfevents::record::encode_record;
use difflab::metrics::{Format, LogSink};
use difflab::plot::{Curve, Panel, PlotOptions, plot_to_rgb};
use prost::Message;
use std::hint::black_box;

const N: usize = 1_000_000;

fn jsonl(n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n * 80);
    for i in 0..n {
        s.push_str(&format!(
            "{{\"step\": {i}, \"time\": {}, \"loss\": {}, \"lr\": 0.0001}}\n",
            1.7e9 + i as f64 * 0.01,
            1.0 / (1.0 + i as f64)
        ));
    }
    s.into_bytes()
}

fn events(n: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(n * 50);
    for i in 0..n {
        let e = proto::Event {
            wall_time: 1.7e9 + i as f64 * 0.01,
            step: i as i64,
            file_version: None,
            summary: Some(proto::Summary {
                value: vec![proto::SummaryValue {
                    tag: "train/loss".into(),
                    simple_value: Some(1.0 / (1.0 + i as f32)),
                    tensor: None,
                    image: None,
                    metadata: None,
                }],
            }),
        };
        encode_record(&e.encode_to_vec(), &mut buf);
    }
    buf
}

struct Count(usize);
impl LogSink for Count {
    fn scalar(&mut self, _: &str, _: Point) {
        self.0 += 1;
    }
}

fn readers(c: &mut Criterion) {
    let mut g = c.benchmark_group("read 1M");
    g.sample_size(10);
    let text = jsonl(N);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("jsonl lines", |b| {
        b.iter(|| {
            let mut d = Format::JsonLines.decoder().expect("a byte-stream format");
            let mut n = Count(0);
            d.decode(black_box(&text), true, &mut n);
            assert_eq!(n.0, 2 * N);
        })
    });
    let ev = events(N);
    g.bench_function("tfevents records", |b| {
        b.iter(|| {
            let mut d = Format::TfEvents.decoder().expect("a byte-stream format");
            let mut n = Count(0);
            d.decode(black_box(&ev), true, &mut n);
            assert_eq!(n.0, N);
        })
    });
    g.bench_function("tfevents records into series", |b| {
        b.iter(|| {
            let mut d = Format::TfEvents.decoder().expect("a byte-stream format");
            let mut series = SeriesBuilder::new();
            d.decode(black_box(&ev), true, &mut series);
            series.finish()
        })
    });
    g.finish();
}

fn series(n: usize) -> Vec<Point> {
    (0..n)
        .map(|i| {
            let x = i as f64;
            Point::new(
                i as i64,
                f64::NAN,
                (x * 1e-4).sin() + ((i * 7919) % 1000) as f64 * 1e-4,
            )
        })
        .collect()
}

fn drawing(c: &mut Criterion) {
    let mut g = c.benchmark_group("draw");
    g.sample_size(10);
    let options = PlotOptions {
        size: Some((800, 480)),
        smoothing: 0.9,
        ..Default::default()
    };
    for n in [1_000, 10_000_000] {
        let panel = Panel {
            title: "loss".into(),
            curves: vec![Curve::new("run", series(n))],
        };
        g.bench_function(format!("plot {n} points"), |b| {
            b.iter(|| plot_to_rgb(std::slice::from_ref(&panel), &options).unwrap())
        });
    }
    // A dashboard keeps a DisplaySeries per line and redraws from it.
    let points = series(10_000_000);
    let display = DisplaySeries::from_points(&points, XAxis::Step, 0.9);
    let panel = Panel {
        title: "loss".into(),
        curves: vec![Curve {
            prepared: Some(&display),
            ..Curve::new("run", &points[..])
        }],
    };
    g.bench_function("plot 10000000 points from a DisplaySeries", |b| {
        b.iter(|| plot_to_rgb(std::slice::from_ref(&panel), &options).unwrap())
    });
    g.bench_function("DisplaySeries::from_points 10M", |b| {
        b.iter(|| DisplaySeries::from_points(black_box(&points), XAxis::Step, 0.9))
    });
    let pts = series(10_000_000);
    let x: Vec<f64> = pts.iter().map(|p| p.step as f64).collect();
    let y: Vec<f64> = pts.iter().map(|p| p.value).collect();
    g.bench_function("downsample_minmax 10M to 800 columns", |b| {
        b.iter(|| downsample_minmax(black_box(&x), black_box(&y), 800))
    });
    g.finish();
}

criterion_group!(benches, readers, drawing);
criterion_main!(benches);
