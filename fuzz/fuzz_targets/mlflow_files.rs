//! Fuzzes the MLflow file store's parsers: a metric file's lines (no panic; in pieces as whole) and a
//! `meta.yaml`.
#![no_main]

use difflab::metrics::mlflow::check_metric_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check_metric_file(data));
