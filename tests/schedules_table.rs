//! The alphas_cumprod tables match torch's float32 tables bit for bit (recorded in schedules.json).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use difflab::sampler::schedule::{BetaSchedule, NoiseSchedule, ScheduleConfig};
use serde_json::Value;

#[test]
fn alphas_cumprod_equal_diffusers_tables() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/schedulers/schedules.json"
    );
    let tables: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (name, schedule, start, end) in [
        ("linear", BetaSchedule::Linear, 0.0001, 0.02),
        ("scaled_linear", BetaSchedule::ScaledLinear, 0.00085, 0.012),
        (
            "squaredcos_cap_v2",
            BetaSchedule::SquaredcosCapV2,
            0.0001,
            0.02,
        ),
    ] {
        let config = ScheduleConfig {
            beta_schedule: schedule,
            beta_start: start,
            beta_end: end,
            ..ScheduleConfig::default()
        };
        let got = NoiseSchedule::new(&config);
        let want: Vec<f32> = tables["alphas_cumprod"][name]["full_float32"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.alphas_cumprod(), want.as_slice(), "{name}");
    }
}
