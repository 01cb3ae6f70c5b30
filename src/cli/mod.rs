//! The `difflab` subcommands; `main.rs` only parses arguments and dispatches here.

pub mod metrics;
