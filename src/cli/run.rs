//! `difflab run`: an experiment headless — grids, results and plots under the output folder.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::experiment::Experiment;
use crate::lab::display::{display_shape, for_display};
use crate::lab::merge::{MergedCell, merge, shard_counts};
use crate::lab::plots::{Column, comparison_grid, write_plots};
use crate::lab::shard::{Shard, shard_folder};
use crate::lab::{CellResult, LabEvent, RunOptions, start};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (TOML).
    pub experiment: PathBuf,
    /// Write results here instead of the experiment's output folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run only one cell ("ddim 50") or the samplers whose label starts with this ("dpm++").
    #[arg(long)]
    pub only: Option<String>,
    /// Print the results as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Rerun cells even when an earlier result with the same inputs exists.
    #[arg(long)]
    pub force: bool,
    /// Also write each cell's finished samples as samples/<cell>.npy: float32 [N, C, H, W] images in [0, 1]
    /// (decoded for latent models), in seed order, prompt-major when there are prompts.
    #[arg(long)]
    pub save_samples: bool,
    /// Run shard I of N (I from 0) of every cell into <out>/shards/I-of-N; without it, a job-array task
    /// reads its shard from SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or RANK. Merge with `difflab merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Load the networks and stop: TensorRT builds and caches its engines for the experiment's shapes, so
    /// the tasks of a job array that follow load them instead of each building them.
    #[arg(long, conflicts_with_all = ["only", "json", "force", "save_samples", "shard"])]
    pub load_only: bool,
}

/// `--load-only`: every network loaded as a run would load it, where it runs, and what loading said.
fn load_only(experiment: &Experiment) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let model = crate::lab::model::load_model(experiment, &|line| eprintln!("{line}…"))?;
    for note in &model.notes {
        eprintln!("{note}");
    }
    eprintln!(
        "loaded in {:.1} s; the model runs on {} ({})",
        started.elapsed().as_secs_f64(),
        model.provider,
        model.providers_note
    );
    Ok(())
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut experiment = Experiment::load(&args.experiment)?;
    if let Some(out) = &args.out {
        experiment.output_dir = out.clone();
    }
    for w in &experiment.warnings {
        eprintln!("warning: {w}");
    }
    if args.load_only {
        return load_only(&experiment);
    }
    let out_dir = experiment.output_dir.clone();
    let shard = which_shard(args)?;
    if shard.is_none()
        && args.only.is_none()
        && !args.force
        && merge_complete_shards(&experiment, args.json)?
    {
        return Ok(());
    }
    let lab = start(
        experiment.clone(),
        RunOptions {
            only: args.only.clone(),
            force: args.force,
            save_samples: args.save_samples,
            shard,
            watch_shards: false,
            models: None,
        },
    );
    let fancy = std::io::stderr().is_terminal();
    let bars = MultiProgress::new();
    let mut cell_bars: BTreeMap<usize, ProgressBar> = BTreeMap::new();
    let mut names = Vec::new();
    let mut row_labels = Vec::new();
    let mut done = Vec::new();
    let mut images: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
    let mut shape = [1, 1, 1];
    let mut outcome = None;
    let mut quarters: BTreeMap<usize, usize> = BTreeMap::new();
    for event in lab.events.iter() {
        match event {
            LabEvent::Loading(what) => eprintln!("{what}"),
            LabEvent::Planned {
                cells,
                provider,
                providers_note,
                sample_shape,
                ..
            } => {
                shape = sample_shape;
                eprintln!(
                    "{}: {} cells, model on {provider} ({providers_note})",
                    experiment.path.display(),
                    cells.len()
                );
                row_labels = cells
                    .first()
                    .map(|c| c.preview_labels())
                    .unwrap_or_default();
                for (i, c) in cells.iter().enumerate() {
                    names.push(c.name.clone());
                    if fancy {
                        let bar = bars.add(ProgressBar::new(c.steps as u64));
                        bar.set_style(
                            ProgressStyle::with_template("{prefix:>22} {bar:30} {pos}/{len} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                        );
                        bar.set_prefix(c.name.clone());
                        cell_bars.insert(i, bar);
                    }
                }
            }
            LabEvent::Progress {
                cell,
                step,
                steps,
                samples_done,
                samples_total,
                ..
            } => {
                if let Some(bar) = cell_bars.get(&cell) {
                    bar.set_position(step as u64);
                    bar.set_message(format!(
                        "steps, samples from {samples_done} of {samples_total}"
                    ));
                } else if step == steps {
                    // Without a terminal: a line per quarter of a cell's samples, not one per batch.
                    let quarter = 4 * samples_done / samples_total.max(1);
                    if quarters.get(&cell).is_none_or(|&q| quarter > q) {
                        quarters.insert(cell, quarter);
                        eprintln!(
                            "{}: samples {samples_done}.. of {samples_total} done ({steps} steps)",
                            names[cell]
                        );
                    }
                }
            }
            LabEvent::CellDone {
                cell,
                result,
                cached,
                images: cell_images,
            } => {
                images.insert(cell, cell_images);
                let line = cell_line(&result, cached);
                match cell_bars.get(&cell) {
                    Some(bar) => bar.finish_with_message(line.clone()),
                    None => eprintln!("{line}"),
                }
                done.push(*result);
            }
            LabEvent::Log(line) => eprintln!("{line}"),
            LabEvent::ShardProgress { .. } => {}
            LabEvent::Finished {
                cancelled,
                error,
                model_calls,
                unbatched_model_calls,
                wall_s,
            } => {
                outcome = Some((cancelled, error, model_calls, unbatched_model_calls, wall_s));
            }
        }
    }
    lab.join();
    let Some((cancelled, error, calls, unbatched, wall)) = outcome else {
        anyhow::bail!("the lab stopped without a result");
    };
    if let Some(e) = error {
        anyhow::bail!("{e}");
    }
    if cancelled {
        anyhow::bail!(
            "cancelled; finished cells are kept in {}",
            out_dir.display()
        );
    }
    if calls > 0 {
        eprintln!(
            "{calls} model calls for {unbatched} cell steps ({:.1}x fewer by batching across samplers), {wall:.1} s",
            unbatched as f64 / calls as f64
        );
    }
    if let Some(shard) = shard {
        return shard_done(shard, &out_dir, &done);
    }
    // The figures: every finished cell of this experiment side by side, and the plots.
    let failed: Vec<CellResult> = done.iter().filter(|r| r.failed()).cloned().collect();
    done.retain(|r| !r.failed());
    let total = done.len() + failed.len();
    done.sort_by_key(|r| names.iter().position(|n| *n == r.name));
    let images: Vec<Option<&Vec<f32>>> = (done.iter())
        .map(|r| {
            names
                .iter()
                .position(|n| *n == r.name)
                .and_then(|i| images.get(&i))
        })
        .collect();
    figures(&out_dir, &done, &images, shape, &row_labels)?;
    if args.json {
        done.extend(failed.iter().cloned());
        println!("{}", serde_json::to_string_pretty(&done)?);
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!(
            "{} of {} cells failed ({}); the others are written; results.json and results.csv say why",
            failed.len(),
            total,
            names.join(", ")
        );
    }
    Ok(())
}

/// Writes comparison.png (the finished cells side by side, `images` each one's display previews) and
/// the plots, and says where they are.
pub fn figures(
    out_dir: &Path,
    done: &[CellResult],
    images: &[Option<&Vec<f32>>],
    shape: [usize; 3],
    row_labels: &[String],
) -> anyhow::Result<()> {
    let columns: Vec<Column> = (done.iter().zip(images))
        .filter_map(|(r, images)| {
            Some(Column {
                name: &r.name,
                images: images.as_ref()?,
            })
        })
        .collect();
    if !columns.is_empty() {
        comparison_grid(&columns, shape, row_labels, &out_dir.join("comparison.png"))?;
    }
    let plots = write_plots(done, out_dir)?;
    eprintln!(
        "results in {}: results.json, results.csv, comparison.png, cells/*.png, {}",
        out_dir.display(),
        plots
            .iter()
            .filter_map(|p| Path::new(p).file_name()?.to_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// `--shard I/N`, or the job-array task's shard from its environment.
fn which_shard(args: &Args) -> anyhow::Result<Option<Shard>> {
    let shard = match &args.shard {
        Some(text) => Some((
            Shard::parse(text).map_err(anyhow::Error::msg)?,
            "--shard".to_string(),
        )),
        None => Shard::from_env(|k| std::env::var(k).ok()).map_err(anyhow::Error::msg)?,
    };
    let Some((shard, source)) = shard else {
        return Ok(None);
    };
    if args.only.is_some() {
        anyhow::bail!("--only and a shard ({source}) together: a sharded run runs every cell");
    }
    if args.save_samples {
        anyhow::bail!(
            "--save-samples and a shard ({source}) together: a shard keeps its tallies, not its samples"
        );
    }
    eprintln!("shard {shard} (from {source})");
    Ok(Some(shard))
}

/// A shard's closing line: where its part is and how to merge.
fn shard_done(shard: Shard, out_dir: &Path, done: &[CellResult]) -> anyhow::Result<()> {
    let failed: Vec<&str> = (done.iter().filter(|r| r.failed()))
        .map(|r| r.name.as_str())
        .collect();
    let folder = shard_folder(out_dir, shard);
    eprintln!(
        "shard {shard}: {} cells in {}; once every shard is done: difflab merge {}",
        done.len(),
        folder.display(),
        out_dir.display()
    );
    if !failed.is_empty() {
        anyhow::bail!(
            "shard {shard}: {} failed; {}/results.json says why",
            failed.join(", "),
            folder.display()
        );
    }
    Ok(())
}

/// When every shard of a run under the output folder is done, merges them instead of running; says
/// why not when shards are there but not complete.
fn merge_complete_shards(experiment: &Experiment, json: bool) -> anyhow::Result<bool> {
    for count in shard_counts(&experiment.output_dir) {
        match merge(experiment, count) {
            Ok(merged) => {
                report_merged(experiment, &merged, json)?;
                return Ok(true);
            }
            Err(why) => eprintln!("not merging the {count} shards there: {why}"),
        }
    }
    Ok(false)
}

/// Prints merged cells like finished ones and writes the figures.
pub fn report_merged(
    experiment: &Experiment,
    merged: &[MergedCell],
    json: bool,
) -> anyhow::Result<()> {
    let out_dir = &experiment.output_dir;
    for m in merged {
        eprintln!("{}", cell_line(&m.result, false));
    }
    let shape = merged
        .first()
        .map_or([1, 1, 1], |m| display_shape(m.image_shape));
    let finished: Vec<&MergedCell> = merged.iter().filter(|m| !m.result.failed()).collect();
    let display: Vec<Vec<f32>> = (finished.iter())
        .map(|m| for_display(m.images.clone(), m.image_shape))
        .collect();
    let done_ok: Vec<CellResult> = finished.iter().map(|m| m.result.clone()).collect();
    let images: Vec<Option<&Vec<f32>>> = display.iter().map(Some).collect();
    let done: Vec<CellResult> = merged.iter().map(|m| m.result.clone()).collect();
    let row_labels = merged
        .first()
        .map(|m| m.cell.preview_labels())
        .unwrap_or_default();
    figures(out_dir, &done_ok, &images, shape, &row_labels)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    }
    let failed: Vec<&str> = done
        .iter()
        .filter(|r| r.failed())
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} cells failed ({}); results.json says why",
            failed.len(),
            done.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// A finished cell in one line: its samples, time and scores, or why it failed.
fn cell_line(result: &CellResult, cached: bool) -> String {
    let mut quality = match (result.fid, result.kid) {
        (Some(f), Some(k)) => format!(
            "FID {f:.2}, KID {k:.4} ± {:.4}",
            result.kid_std.unwrap_or(0.0)
        ),
        _ => String::new(),
    };
    if let Some(rmse) = result.against_reference.ref_rmse {
        let sep = if quality.is_empty() { "" } else { ", " };
        quality.push_str(&format!("{sep}RMSE to reference {rmse:.3e}"));
    }
    match &result.error {
        Some(e) => format!("{}: failed: {e}", result.name),
        None => format!(
            "{}: {} samples, {:.1} ms/sample{}{quality}{}",
            result.name,
            result.samples,
            result.ms_per_sample,
            if quality.is_empty() { "" } else { ", " },
            if cached { " (unchanged, reused)" } else { "" }
        ),
    }
}
