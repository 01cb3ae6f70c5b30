//! The W&B offline-run reader (`difflab::metrics::wandb`) on the real runs wandb 0.31 wrote
//! (`tests/data/runs/wandb_offline`): whole, in pieces, damaged, and the paths it names runs by.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

mod chunked;
mod common;
mod damage;
mod fixtures;
mod paths;
