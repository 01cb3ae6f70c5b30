//! Fuzzes the W&B transaction-log reader: no panic on any input, and reading in pieces equals reading whole.
#![no_main]

use difflab::metrics::{Format, check_decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check_decoder(Format::Wandb, data));
