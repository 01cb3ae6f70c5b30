//! The subcommands, one module each; `main.rs` only parses and dispatches.

pub mod info;
