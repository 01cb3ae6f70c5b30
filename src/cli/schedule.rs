//! `difflab schedule`: the timesteps, sigmas and solver orders a sampler uses, step by step.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::sampler::config::read_training_schedule;
use crate::sampler::{NoiseSchedule, SamplerConfig};

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
    let overrides = super::parse_overrides(&args.overrides)?;
    let resolved = SamplerConfig::resolve(&args.sampler, base.as_ref(), &overrides)?;
    let mut scheduler = resolved.config.build();
    scheduler
        .set_steps(args.steps)
        .with_context(|| format!("{} with {} steps", args.sampler, args.steps))?;
    let schedule = NoiseSchedule::new(resolved.config.schedule());
    let sigma_of = |t: Option<f64>| match t {
        Some(t) => {
            let a = schedule.alpha_bar(t as usize);
            ((1.0 - a) / a).sqrt()
        }
        None => 0.0,
    };
    let rows: Vec<_> = (0..scheduler.timesteps().len())
        .map(|i| {
            let t = scheduler.timesteps()[i];
            let (from, to) = match scheduler.sigmas() {
                Some(s) => (s[i] as f64, s[i + 1] as f64),
                None => (sigma_of(Some(t)), sigma_of(scheduler.previous_timestep(i))),
            };
            (
                i,
                t,
                scheduler.previous_timestep(i),
                from,
                to,
                scheduler.order_at(i),
                scheduler.draws_noise_at(i),
            )
        })
        .collect();
    if args.json {
        let steps: Vec<_> = rows
            .iter()
            .map(|&(i, t, prev, from, to, order, noise)| {
                json!({"step": i, "timestep": timestep_json(t), "next_timestep": prev.map(timestep_json), "sigma": from,
                       "next_sigma": to, "order": order, "noise": noise})
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
    for (i, t, prev, from, to, order, noise) in rows {
        let (t, prev) = (
            timestep_text(t),
            prev.map_or("-".to_string(), timestep_text),
        );
        let noise = if noise { "yes" } else { "" };
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
