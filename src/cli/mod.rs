//! The command-line face of difflab: each subcommand is a thin shell over the library; `main.rs`
//! only parses and dispatches.

pub mod demo;
pub mod info;
pub mod merge;
pub mod metrics;
pub mod metrics_images;
pub mod run;
pub mod schedule;
pub mod slurm;
pub mod ui;

use serde_json::{Map, Value};

/// Parses `KEY=VALUE` overrides; the value is read as JSON (`3`, `true`, `"x"`) or else as a string.
pub fn parse_overrides(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            anyhow::bail!("--set {pair:?}: expected KEY=VALUE, e.g. --set use_karras_sigmas=true");
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        map.insert(key.trim().to_string(), value);
    }
    Ok(map)
}
