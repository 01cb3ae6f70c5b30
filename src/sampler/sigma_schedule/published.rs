//! Schedules published as tables of σ: Align Your Steps (Sabour et al. 2024; SD 1.x, SDXL, SVD), GITS (Chen
//! et al. 2024; a row per step count and coefficient) and OptimalSteps (FLUX, Wan, Chroma). Another step count
//! interpolates the table log-linearly; the last value becomes 0.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::{ScheduleParams, SigmaSchedule};

#[derive(Deserialize)]
struct Tables {
    align_your_steps: BTreeMap<String, Vec<f64>>,
    /// Coefficient ("1.20") → one row per step count from 2 to 20.
    gits: BTreeMap<String, Vec<Vec<f64>>>,
    optimal_steps: BTreeMap<String, Vec<f64>>,
}

/// The bundled tables, parsed once.
fn tables() -> Result<&'static Tables, String> {
    static TABLES: OnceLock<Result<Tables, String>> = OnceLock::new();
    TABLES
        .get_or_init(|| {
            serde_json::from_str(include_str!("tables.json"))
                .map_err(|e| format!("the bundled schedule tables do not parse: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `steps + 1` sigmas of the table the parameters name, the last set to 0.
pub fn sigmas(
    schedule: SigmaSchedule,
    steps: usize,
    params: &ScheduleParams,
) -> Result<Vec<f32>, String> {
    let t = tables()?;
    let mut sigmas = match schedule {
        SigmaSchedule::Gits => gits(t, steps, params.coeff.unwrap_or(1.2))?,
        SigmaSchedule::OptimalSteps => {
            let table = named(
                &t.optimal_steps,
                params.model_type.as_deref().unwrap_or("FLUX"),
            )?;
            resized(table, steps + 1)
        }
        _ => {
            let table = named(
                &t.align_your_steps,
                params.model_type.as_deref().unwrap_or("SD1"),
            )?;
            resized(table, steps + 1)
        }
    };
    if let Some(last) = sigmas.last_mut() {
        *last = 0.0;
    }
    Ok(sigmas.iter().map(|&s| s as f32).collect())
}

fn named<'a>(tables: &'a BTreeMap<String, Vec<f64>>, model: &str) -> Result<&'a [f64], String> {
    tables.get(model).map(Vec::as_slice).ok_or_else(|| {
        let known: Vec<&str> = tables.keys().map(String::as_str).collect();
        format!(
            "no table for model_type {model:?}; the tables are {}",
            known.join(", ")
        )
    })
}

/// GITS' row for `steps` (2 to 20) as published, or its 20-step row interpolated.
fn gits(t: &Tables, steps: usize, coeff: f64) -> Result<Vec<f64>, String> {
    let key = format!("{coeff:.2}");
    let rows = t.gits.get(&key).ok_or_else(|| {
        format!("GITS has no coefficient {key}; it has 0.80 to 1.50 in steps of 0.05")
    })?;
    match steps {
        0 | 1 => Err("GITS has tables from 2 steps".into()),
        2..=20 => Ok(rows[steps - 2].clone()),
        _ => Ok(resized(rows.last().map_or(&[], Vec::as_slice), steps + 1)),
    }
}

/// The table as is when it has `len` values, else interpolated linearly in log σ over an even grid.
fn resized(table: &[f64], len: usize) -> Vec<f64> {
    if table.len() == len {
        return table.to_vec();
    }
    let logs: Vec<f64> = table.iter().rev().map(|s| s.ln()).collect();
    let grid = crate::sampler::spacing::linspace(0.0, 1.0, table.len());
    let mut out: Vec<f64> = crate::sampler::spacing::linspace(0.0, 1.0, len)
        .iter()
        .map(|&x| np_interp(x, &grid, &logs).exp())
        .collect();
    out.reverse();
    out
}

/// numpy's `interp` for x inside [xp[0], xp[n-1]].
fn np_interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let n = xp.len();
    if x >= xp[n - 1] {
        return fp[n - 1];
    }
    if x <= xp[0] {
        return fp[0];
    }
    let j = xp.partition_point(|&v| v <= x) - 1;
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    slope * (x - xp[j]) + fp[j]
}
