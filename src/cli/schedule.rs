//! `difflab schedule`: the timesteps, sigmas and solver orders a sampler uses, step by step.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::experiment::{schedule_names, schedule_setting};
use crate::sampler::SamplerConfig;
use crate::sampler::config::read_training_schedule;
use crate::sampler::step_table::step_rows;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A sampler name — difflab's, AUTOMATIC1111's or ComfyUI's, e.g. ddim, dpm++2m-karras,
    /// "Euler a", "DPM++ SDE Karras", uni_pc_bh2 (README.md lists them all) — or the path of a
    /// diffusers scheduler_config.json.
    pub sampler: String,
    /// Number of inference steps.
    #[arg(long, short = 'n')]
    pub steps: usize,
    /// The model's scheduler_config.json: its training schedule is used under a short name.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Override a setting with diffusers' key name, e.g. --set timestep_spacing=trailing.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// The sigma schedule, as an experiment's `schedule` names it: karras, exponential, beta, sgm_uniform, or a
    /// web UI's (simple, normal, kl_optimal, ays, gits, ...).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let base = args
        .base
        .as_deref()
        .map(read_training_schedule)
        .transpose()?;
    let mut overrides = super::parse_overrides(&args.overrides)?;
    let schedule = match &args.schedule {
        Some(name) => Some(schedule_setting(name).with_context(|| {
            format!("unknown schedule {name:?}; use one of {}", schedule_names())
        })?),
        None => None,
    };
    if let Some((key, value)) = &schedule {
        overrides.insert((*key).into(), value.clone());
    }
    let resolved = SamplerConfig::resolve(&args.sampler, base.as_ref(), &overrides)?;
    if let Some((key, value)) = &schedule
        && resolved.settings.get(*key) != Some(value)
    {
        anyhow::bail!(
            "{} ({}) has no {:?} schedule",
            args.sampler,
            resolved.config.class_name(),
            args.schedule.as_deref().unwrap_or_default()
        );
    }
    let rows = step_rows(&resolved.config, args.steps)
        .with_context(|| format!("{} with {} steps", args.sampler, args.steps))?;
    if args.json {
        let steps: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"step": r.step, "timestep": timestep_json(r.timestep),
                       "next_timestep": r.next_timestep.map(timestep_json), "sigma": r.sigma,
                       "next_sigma": r.next_sigma, "order": r.order, "noise": r.noise})
            })
            .collect();
        let out =
            json!({"config": resolved.settings, "warnings": resolved.warnings, "steps": steps});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} ({}), {} steps, prediction {}",
        resolved.config.class_name(),
        args.sampler,
        args.steps,
        resolved.config.prediction_type()
    );
    for w in &resolved.warnings {
        println!("warning: {w}");
    }
    println!(
        "{:>5} {:>9} {:>9} {:>12} {:>12} {:>6} {:>6}",
        "step", "timestep", "next t", "sigma", "next sigma", "order", "noise"
    );
    for r in rows {
        let (t, prev) = (
            timestep_text(r.timestep),
            r.next_timestep.map_or("-".to_string(), timestep_text),
        );
        let noise = if r.noise { "yes" } else { "" };
        let (i, from, to, order) = (r.step, r.sigma, r.next_sigma, r.order);
        println!("{i:>5} {t:>9} {prev:>9} {from:>12.6} {to:>12.6} {order:>6} {noise:>6}");
    }
    Ok(())
}

/// A timestep for the table: whole ones as integers, fractional ones to 3 decimals (`--json` has them all).
fn timestep_text(t: f64) -> String {
    if t.fract() == 0.0 {
        format!("{t:.0}")
    } else {
        format!("{t:.3}")
    }
}

/// A timestep as JSON: whole ones as integers (as diffusers stores int64 timesteps), others as floats.
fn timestep_json(t: f64) -> serde_json::Value {
    if t.fract() == 0.0 && t.abs() < 1e15 {
        json!(t as i64)
    } else {
        json!(t)
    }
}
