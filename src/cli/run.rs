//! `difflab run`: an experiment headless — grids, results and plots under the output folder.

use crate::lab::scores::frame_change::FRAME_CHANGE;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::experiment::Experiment;
use crate::lab::display::{display_shape, for_display};
use crate::lab::merge::{MergedCell, merge, shard_counts};
use crate::lab::plots::{Column, comparison_grid, difference_grid, write_plots};
use crate::lab::progress::{CellView, Change, Outcome, Progress};
use crate::lab::scores::METRICS;
use crate::lab::scores::{Metric, baseline::Baseline};
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
    /// (decoded for latent models), in seed order, prompt-major when there are prompts; and a latent model's
    /// final latents, undecoded, as latents/<cell>.npy in the same order.
    #[arg(long)]
    pub save_samples: bool,
    /// Also write each cell's preview samples at every step as steps/<cell>.png: a row per preview
    /// sample, a column per step (the x0 prediction), thumbnails at most 64 px.
    #[arg(long)]
    pub save_steps: bool,
    /// Run shard I of N (I from 0) of every cell into <out>/shards/I-of-N; without it, a job-array task
    /// reads its shard from SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or RANK. Merge with `difflab merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Load the networks and stop: TensorRT builds and caches its engines for the experiment's shapes, so
    /// the tasks of a job array that follow load them instead of each building them.
    #[arg(long, conflicts_with_all = ["only", "json", "force", "save_samples", "save_steps", "shard"])]
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
    let progress = follow(&lab.events, &experiment.path, args.save_steps);
    lab.join();
    let Some(outcome) = progress.outcome.clone() else {
        anyhow::bail!("the lab stopped without a result");
    };
    closing_line(&outcome, &out_dir)?;
    let results = progress.cells.iter().filter_map(|c| c.result.as_ref());
    if let Some(shard) = shard {
        return shard_done(shard, &out_dir, &results.cloned().collect::<Vec<_>>());
    }
    // The figures: every finished cell of this experiment side by side, and the plots.
    let (failed, mut done): (Vec<CellResult>, Vec<CellResult>) =
        results.cloned().partition(|r| r.failed());
    let images: Vec<Option<&Vec<f32>>> = (progress.cells.iter())
        .filter(|c| c.result.as_ref().is_some_and(|r| !r.failed()))
        .map(|c| Some(&c.images))
        .collect();
    let row_labels = (progress.cells.first())
        .map(|c| c.cell.preview_labels())
        .unwrap_or_default();
    let starts = (progress.starts.as_ref()).map(|s| (s.kind.title(), s.images.as_ref()));
    figures(
        &out_dir,
        (&done, &images),
        starts,
        progress.sample_shape,
        &row_labels,
    )?;
    if let Some(name) = experiment
        .quality
        .as_ref()
        .and_then(|q| q.baseline.as_deref())
    {
        let finished: Vec<Column> = (progress.cells.iter())
            .filter(|c| c.result.as_ref().is_some_and(|r| !r.failed()) && !c.images.is_empty())
            .map(|c| Column {
                name: &c.cell.name,
                images: &c.images,
            })
            .collect();
        difference_figure(
            &out_dir,
            &finished,
            progress.sample_shape,
            name,
            &row_labels,
        )?;
    }
    if args.save_steps {
        save_steps(&out_dir, &progress)?;
    }
    let total = done.len() + failed.len();
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

/// difference.png from the finished cells' preview images, when the baseline is among them.
fn difference_figure(
    out_dir: &Path,
    finished: &[Column],
    shape: [usize; 3],
    baseline: &str,
    row_labels: &[String],
) -> anyhow::Result<()> {
    let path = out_dir.join("difference.png");
    match difference_grid(finished, shape, baseline, row_labels, &path)? {
        true => eprintln!("difference from {baseline}: {}", path.display()),
        false => eprintln!(
            "difference.png: the baseline {baseline} did not finish in this run; not written"
        ),
    }
    Ok(())
}

/// `--save-steps`: each cell's trajectory as steps/<cell>.png, a row per preview sample, a column per
/// step kept.
fn save_steps(out_dir: &Path, progress: &Progress) -> anyhow::Result<()> {
    let mut written = 0;
    for c in &progress.cells {
        let t = &c.trajectory;
        if t.frames.is_empty() || c.result.as_ref().is_none_or(|r| r.failed()) {
            continue;
        }
        let images: Vec<Vec<f32>> = (0..t.frames.len())
            .map(|k| {
                (0..c.cell.preview)
                    .flat_map(|i| t.sample(k, i).unwrap_or_default())
                    .collect()
            })
            .collect();
        let names: Vec<String> = t
            .frames
            .iter()
            .map(|f| format!("step {}", f.step))
            .collect();
        let columns: Vec<Column> = (names.iter().zip(&images))
            .map(|(name, images)| Column { name, images })
            .collect();
        let path = out_dir.join(format!("steps/{}.png", c.cell.file_stem()));
        std::fs::create_dir_all(out_dir.join("steps"))?;
        comparison_grid(&columns, t.shape, &c.cell.preview_labels(), &path)?;
        written += 1;
    }
    eprintln!(
        "{written} step strips in {}",
        out_dir.join("steps").display()
    );
    Ok(())
}

/// Prints the run as it goes (see [`Printer`]) and returns it folded.
fn follow(events: &Receiver<LabEvent>, experiment: &Path, trajectories: bool) -> Progress {
    let mut progress = Progress {
        trajectories,
        ..Progress::default()
    };
    let mut printer = Printer::new(std::io::stderr().is_terminal());
    for event in events.iter() {
        let change = progress.apply(event);
        printer.show(&progress, change, experiment);
    }
    progress
}

/// An error or a cancel as the run's error; otherwise how many model calls batching saved.
fn closing_line(outcome: &Outcome, out_dir: &Path) -> anyhow::Result<()> {
    if let Some(e) = &outcome.error {
        anyhow::bail!("{e}");
    }
    if outcome.cancelled {
        anyhow::bail!(
            "cancelled; finished cells are kept in {}",
            out_dir.display()
        );
    }
    let (calls, unbatched) = (outcome.model_calls, outcome.unbatched_model_calls);
    if calls > 0 {
        eprintln!(
            "{calls} model calls for {unbatched} cell steps ({:.1}x fewer by batching across samplers), {:.1} s",
            unbatched as f64 / calls as f64,
            outcome.wall_s
        );
    }
    Ok(())
}

/// A run's progress on stderr: a bar per cell on a terminal, else a line per quarter of a cell's
/// samples; a line per finished cell.
struct Printer {
    fancy: bool,
    bars: MultiProgress,
    cell_bars: BTreeMap<usize, ProgressBar>,
    quarters: BTreeMap<usize, usize>,
}

impl Printer {
    fn new(fancy: bool) -> Self {
        Printer {
            fancy,
            bars: MultiProgress::new(),
            cell_bars: BTreeMap::new(),
            quarters: BTreeMap::new(),
        }
    }

    fn show(&mut self, run: &Progress, change: Change, experiment: &Path) {
        match change {
            Change::Loading => eprintln!("{}", run.loading.as_deref().unwrap_or_default()),
            Change::Starts => {}
            Change::Log(line) => eprintln!("{line}"),
            Change::Planned { .. } => {
                eprintln!(
                    "{}: {} cells, model on {} ({})",
                    experiment.display(),
                    run.cells.len(),
                    run.provider,
                    run.providers_note
                );
                if self.fancy {
                    self.add_bars(run);
                }
            }
            Change::Stepped(i) => self.stepped(i, &run.cells[i]),
            Change::Done(i) => {
                let c = &run.cells[i];
                let Some(result) = &c.result else { return };
                let line = cell_line(result, c.cached);
                match self.cell_bars.get(&i) {
                    Some(bar) => bar.finish_with_message(line),
                    None => eprintln!("{line}"),
                }
            }
            Change::Rescored(i) => {
                let c = &run.cells[i];
                let summary = (c.result.as_ref()).and_then(|r| Baseline.summary(&r.scores));
                if let Some(summary) = summary {
                    eprintln!("{}: {summary}", c.cell.name);
                }
            }
            Change::Finished | Change::Nothing => {}
        }
    }

    fn add_bars(&mut self, run: &Progress) {
        let style = ProgressStyle::with_template("{prefix:>22} {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        for (i, c) in run.cells.iter().enumerate() {
            let bar = self.bars.add(ProgressBar::new(c.steps as u64));
            bar.set_style(style.clone());
            bar.set_prefix(c.cell.name.clone());
            self.cell_bars.insert(i, bar);
        }
    }

    fn stepped(&mut self, i: usize, c: &CellView) {
        let (done, total) = (c.samples_done, c.samples_total);
        if let Some(bar) = self.cell_bars.get(&i) {
            bar.set_position(c.step as u64);
            bar.set_message(format!("steps, samples from {done} of {total}"));
        } else if c.step == c.steps {
            // Without a terminal: a line per quarter of a cell's samples, not one per batch.
            let quarter = 4 * done / total.max(1);
            if self.quarters.get(&i).is_none_or(|&q| quarter > q) {
                self.quarters.insert(i, quarter);
                eprintln!(
                    "{}: samples {done}.. of {total} done ({} steps)",
                    c.cell.name, c.steps
                );
            }
        }
    }
}

/// Writes comparison.png (the finished cells side by side, `images` each one's display previews, after the
/// start or control images where the run has them) and the plots, and says where they are.
pub fn figures(
    out_dir: &Path,
    (done, images): (&[CellResult], &[Option<&Vec<f32>>]),
    starts: Option<(&str, &Vec<f32>)>,
    shape: [usize; 3],
    row_labels: &[String],
) -> anyhow::Result<()> {
    let cells = (done.iter().zip(images)).filter_map(|(r, images)| {
        Some(Column {
            name: &r.name,
            images: images.as_ref()?,
        })
    });
    let first = usize::from(starts.is_some());
    let starts = starts.map(|(name, images)| Column { name, images });
    let columns: Vec<Column> = starts.into_iter().chain(cells).collect();
    if columns.len() > first {
        comparison_grid(&columns, shape, row_labels, &out_dir.join("comparison.png"))?;
    }
    let plots = write_plots(done, out_dir)?;
    let video = done.iter().any(|r| r.score(FRAME_CHANGE).is_some());
    eprintln!(
        "results in {}: results.json, results.csv, comparison.png, cells/*.png, {}{}",
        out_dir.display(),
        if video { "cells/*.gif, " } else { "" },
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
    if args.save_samples || args.save_steps {
        let flag = if args.save_samples {
            "--save-samples"
        } else {
            "--save-steps"
        };
        anyhow::bail!(
            "{flag} and a shard ({source}) together: a shard keeps its tallies, not its samples"
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
        .map_or([1, 1, 1], |m| display_shape(m.image_shape, m.frames));
    let finished: Vec<&MergedCell> = merged.iter().filter(|m| !m.result.failed()).collect();
    let display: Vec<Vec<f32>> = (finished.iter())
        .map(|m| for_display(m.images.clone(), m.image_shape, m.frames))
        .collect();
    let done_ok: Vec<CellResult> = finished.iter().map(|m| m.result.clone()).collect();
    let images: Vec<Option<&Vec<f32>>> = display.iter().map(Some).collect();
    let done: Vec<CellResult> = merged.iter().map(|m| m.result.clone()).collect();
    let row_labels = merged
        .first()
        .map(|m| m.cell.preview_labels())
        .unwrap_or_default();
    figures(out_dir, (&done_ok, &images), None, shape, &row_labels)?;
    if let Some(name) = experiment
        .quality
        .as_ref()
        .and_then(|q| q.baseline.as_deref())
    {
        let finished: Vec<Column> = (finished.iter().zip(&display))
            .map(|(m, images)| Column {
                name: &m.cell.name,
                images,
            })
            .collect();
        difference_figure(out_dir, &finished, shape, name, &row_labels)?;
    }
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
    let quality: Vec<String> = METRICS
        .iter()
        .filter_map(|m| m.summary(&result.scores))
        .collect();
    let quality = quality.join(", ");
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
