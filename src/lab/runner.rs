//! Runs an experiment's cells off the calling thread: all cells step in lockstep so their model calls
//! share one batched call per step, progress and x0 previews are sent as events, a cancel takes effect
//! before the next model call, and each finished cell is written at once.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use super::conditioning::RunConditions;
use super::display::{display_shape, for_display};
use super::cell_output::CellOutput;
use super::finish::{CellState, Finish, Pictures, grid_columns, tally_path};
use super::guidance::guide;
use super::images::{GAP, upscale_factor};
use super::merge::merge;
use super::model::{LoadedModel, load_features, load_model};
use super::plan::{Cell, Item, Plan, plan, plan_run};
use super::reference::{self, Solution};
use super::results::{CellResult, Results};
use super::samples::read_init_noise;
use super::scoring::Quality;
use super::shard::{Shard, ShardPlan, shard_plan};
use super::shard_watch::{ProgressWriter, shards_of, watch};
use super::tally::Tally;
use crate::engine::{Denoiser, NonFinite};
use crate::experiment::{Experiment, NoiseKind, Preview};
use crate::path_error::at;
use crate::quality::ReferenceStats;
use crate::sampler::torch_noise::torch_randn;
use crate::sampler::{Scheduler, SeededNoise};

/// What the lab tells its caller, in order.
#[derive(Debug, Clone)]
pub enum LabEvent {
    /// The cells about to run (or be reused), and where the model runs.
    Planned {
        cells: Vec<Cell>,
        /// One image's C, H, W as previews and finished samples come (decoded, for latent models).
        sample_shape: [usize; 3],
        provider: String,
        /// Every provider tried and what happened to it.
        providers_note: String,
        /// The providers that did not run, in a few words.
        providers_summary: String,
    },
    /// Cell `cell` took step `step` (1-based) of `steps` for samples `done..done+batch` of `total`;
    /// `preview` holds the x0 prediction of its preview seeds while they are in the batch.
    Progress {
        cell: usize,
        step: usize,
        steps: usize,
        samples_done: usize,
        samples_total: usize,
        preview: Option<Vec<f32>>,
    },
    /// A cell finished (or was reused from an earlier run): its result and final preview images.
    CellDone {
        cell: usize,
        result: Box<CellResult>,
        images: Vec<f32>,
        cached: bool,
    },
    /// Cell `cell` of a sharded run being watched: samples done over every shard, and the shards done.
    ShardProgress {
        cell: usize,
        samples_done: usize,
        samples_total: usize,
        shards_done: usize,
        shards: usize,
    },
    /// Something worth a line in the log.
    Log(String),
    /// The run ended (`error` when it stopped on one).
    Finished {
        cancelled: bool,
        error: Option<String>,
        model_calls: usize,
        unbatched_model_calls: usize,
        wall_s: f64,
    },
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only cells whose name or label contains this.
    pub only: Option<String>,
    /// Rerun cells even when an earlier result matches.
    pub force: bool,
    /// Also write every cell's finished samples as `samples/<cell>.npy`.
    pub save_samples: bool,
    /// Run only this shard's part of every cell, into its own folder under `shards/`.
    pub shard: Option<Shard>,
    /// Where shards of this experiment write into its output folder, watch them and merge them when
    /// they are done, instead of running here.
    pub watch_shards: bool,
}

/// A running lab: its events, and the switch that cancels it.
pub struct LabHandle {
    pub events: Receiver<LabEvent>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LabHandle {
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// A switch that cancels this run from elsewhere, e.g. while another thread reads `events`.
    pub fn cancel_switch(&self) -> CancelSwitch {
        CancelSwitch(self.cancel.clone())
    }

    /// Waits for the lab thread to end.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Cancels a running lab; cloned from [`LabHandle::cancel_switch`].
#[derive(Debug, Clone)]
pub struct CancelSwitch(Arc<AtomicBool>);

impl CancelSwitch {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Starts running `experiment` on a background thread. When the thread cannot start, the events
/// still end with a `Finished` that says why, so a caller waiting for it never waits forever.
pub fn start(experiment: Experiment, options: RunOptions) -> LabHandle {
    let (tx, rx) = channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let thread_tx = tx.clone();
    let thread = match std::thread::Builder::new()
        .name("difflab-lab".into())
        .spawn(move || run(&experiment, &options, &flag, &thread_tx))
    {
        Ok(t) => Some(t),
        Err(e) => {
            let _ = tx.send(spawn_failed(&e));
            None
        }
    };
    LabHandle {
        events: rx,
        cancel,
        thread,
    }
}

/// The `Finished` event of a run whose thread could not start.
fn spawn_failed(e: &std::io::Error) -> LabEvent {
    LabEvent::Finished {
        cancelled: false,
        error: Some(format!(
            "cannot start the lab's thread: {e}; free some memory or lower `threads`, then run again"
        )),
        model_calls: 0,
        unbatched_model_calls: 0,
        wall_s: 0.0,
    }
}

/// Runs `experiment` on this thread, sending events to `tx`.
pub fn run(
    experiment: &Experiment,
    options: &RunOptions,
    cancel: &AtomicBool,
    tx: &Sender<LabEvent>,
) {
    let start = Instant::now();
    let mut calls = (0, 0);
    let result = run_inner(experiment, options, cancel, tx, &mut calls);
    let (cancelled, error) = match result {
        Ok(()) => (false, None),
        Err(Stop::Cancelled) => (true, None),
        Err(Stop::Error(e)) => (false, Some(e)),
    };
    let _ = tx.send(LabEvent::Finished {
        cancelled,
        error,
        model_calls: calls.0,
        unbatched_model_calls: calls.1,
        wall_s: start.elapsed().as_secs_f64(),
    });
}

enum Stop {
    Cancelled,
    Error(String),
}

impl<E: std::fmt::Display> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Error(e.to_string())
    }
}

/// One batch of one cell, stepping through its schedule.
struct Lane {
    cell: usize,
    scheduler: Box<dyn Scheduler>,
    x: Vec<f32>,
    x0: Vec<f32>,
    noise: SeededNoise,
    /// Index of this lane's first sample within the cell.
    first: usize,
    items: usize,
    /// The condition-table row of each sample, and the unconditional row when the cell guides.
    rows: Vec<usize>,
    uncond: Option<usize>,
    guidance: f32,
    guidance_rescale: f32,
    step: usize,
}

fn run_inner(
    experiment: &Experiment,
    options: &RunOptions,
    cancel: &AtomicBool,
    tx: &Sender<LabEvent>,
    calls: &mut (usize, usize),
) -> Result<(), Stop> {
    let planned = plan_cells(experiment, options)?;
    let watched = (options.watch_shards && options.shard.is_none() && !options.force)
        .then(|| shards_of(&experiment.output_dir, &planned))
        .flatten();
    let ShardPlan {
        cells,
        references,
        out,
        items: shard_items,
    } = shard_plan(experiment, planned, options.shard)?;
    let out = out.as_path();
    let tallied = shard_items.is_some();
    if watched.is_none() && !options.force && reuse_all(&cells, out, tallied, tx) {
        return Ok(());
    }
    let LoadedModel {
        mut denoiser,
        sample_shape,
        provider,
        providers_note,
        providers_summary,
        decoder,
        image_shape,
        vae_batch,
        preview,
        conditions,
        notes,
    } = load_model(experiment)?;
    check_guidance(&cells, &conditions, denoiser.is_conditional())?;
    let decode_every = match experiment.preview {
        Preview::Decode { .. } if decoder.is_none() => {
            let _ = tx.send(LabEvent::Log(
                "[sampling] preview = \"decode\": the model has no VAE decoder; its previews are its samples"
                    .into(),
            ));
            None
        }
        Preview::Decode { every } => Some(every),
        Preview::Approx => None,
    };
    let item: usize = sample_shape.iter().product();
    if experiment.noise == NoiseKind::Torch && item < 16 && experiment.init_noise.is_none() {
        return Err(Stop::Error(format!(
            "[sampling] noise = \"torch\" reproduces torch.randn for samples of 16 values or more; this \
             model's sample has {item} ({sample_shape:?})"
        )));
    }
    let init_noise = match &experiment.init_noise {
        Some(path) => Some(read_init_noise(path, sample_shape, &cells)?),
        None => None,
    };
    let _ = tx.send(LabEvent::Planned {
        cells: cells.clone(),
        sample_shape: display_shape(image_shape),
        provider: provider.clone(),
        providers_note,
        providers_summary,
    });
    for note in notes {
        let _ = tx.send(LabEvent::Log(note));
    }
    if let Some(count) = watched {
        return watch_and_merge(experiment, &cells, count, cancel, tx);
    }
    std::fs::create_dir_all(out).map_err(at("create the output folder", out))?;
    let (mut results, warning) = Results::open(&out.join("results.json"))?;
    if let Some(w) = warning {
        let _ = tx.send(LabEvent::Log(w));
    }
    results.experiment = experiment.name.clone();
    results.image_shape = Some(image_shape);
    let pending = reuse_cached(
        &cells,
        &results,
        out,
        image_shape,
        options.force,
        tallied,
        tx,
    );
    if pending.is_empty() {
        let _ = tx.send(LabEvent::Log("every cell is up to date".into()));
        return Ok(());
    }
    let mut lab = Batch {
        per_lane: 1,
        states: Vec::new(),
        item,
        cells: &references,
        pending: Vec::new(),
        lanes: Vec::new(),
        quality: load_quality(experiment)?,
        init_noise,
        torch_noise: experiment.noise == NoiseKind::Torch,
        uncond: conditions.uncond,
        ctx: Finish {
            out,
            pictures: Pictures {
                decode_every,
                decoder,
                preview,
                image_shape,
                sample_shape,
                vae_batch,
            },
            provider: &provider,
            batch: experiment.batch,
            save_samples: options.save_samples,
            shard_items,
        },
        references: &references,
        solutions: vec![None; references.len()],
        solving: false,
        results,
        progress_file: tallied.then(|| ProgressWriter::new(out)),
        tx,
    };
    // The reference solves the pending cells are compared with come first, so each cell is scored as
    // soon as it finishes.
    let unsolved = lab.load_solutions(&needed_references(&cells, &pending, &references))?;
    if !unsolved.is_empty() {
        lab.begin(&references, unsolved, true)?;
        lab.drive(denoiser.as_mut(), cancel, calls)?;
    }
    lab.begin(&cells, pending, false)?;
    lab.drive(denoiser.as_mut(), cancel, calls)
}

/// Watches the `count` shards writing into the output folder and merges them when they are done; the
/// merged cells are reported as finished.
fn watch_and_merge(
    experiment: &Experiment,
    cells: &[Cell],
    count: usize,
    cancel: &AtomicBool,
    tx: &Sender<LabEvent>,
) -> Result<(), Stop> {
    let line = format!(
        "watching {count} shards in {}; they are merged here when every one is done",
        experiment.output_dir.join("shards").display()
    );
    let _ = tx.send(LabEvent::Log(line));
    if !watch(&experiment.output_dir, cells, count, cancel, tx) {
        return Err(Stop::Cancelled);
    }
    for (cell, m) in merge(experiment, count)?.into_iter().enumerate() {
        let _ = tx.send(LabEvent::CellDone {
            cell,
            result: Box::new(m.result),
            images: for_display(m.images, m.image_shape),
            cached: false,
        });
    }
    let _ = tx.send(LabEvent::Log(format!("merged the {count} shards")));
    Ok(())
}

/// The reference solves (indices into `references`) that the `pending` cells are compared with.
fn needed_references(cells: &[Cell], pending: &[usize], references: &[Cell]) -> Vec<usize> {
    let mut needed: Vec<usize> = pending
        .iter()
        .filter_map(|&c| cells[c].reference_in(references))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    needed
}

/// Guidance needs a conditional model and an unconditional condition to guide from.
fn check_guidance(
    cells: &[Cell],
    conditions: &RunConditions,
    conditional: bool,
) -> Result<(), Stop> {
    let Some(cell) = cells.iter().find(|c| c.guidance != 1.0) else {
        return Ok(());
    };
    let why = if !conditional {
        "the model takes no conditioning"
    } else if conditions.uncond.is_none() {
        "there is no unconditional input to guide from: give [conditioning] prompts, or null_class for classes"
    } else {
        return Ok(());
    };
    Err(Stop::Error(format!(
        "cell \"{}\" has guidance {}, but {why}; use guidance = 1",
        cell.name, cell.guidance
    )))
}

/// The cells `--only` selects and their reference solves; no cell is an error that lists the cells
/// there are.
fn plan_cells(experiment: &Experiment, options: &RunOptions) -> Result<Plan, Stop> {
    let planned = plan_run(experiment, options.only.as_deref())?;
    if !planned.cells.is_empty() {
        return Ok(planned);
    }
    let names: Vec<String> = plan(experiment, None)?
        .into_iter()
        .map(|c| format!("{:?}", c.name))
        .collect();
    Err(Stop::Error(format!(
        "no cell matches --only {:?}; give a cell name or the start of a sampler label: {}",
        options.only.as_deref().unwrap_or(""),
        names.join(", ")
    )))
}

/// When every cell is up to date and the results say what their images look like, reports them all as
/// reused without loading the model (a multi-gigabyte load for nothing to do).
fn reuse_all(cells: &[Cell], out: &Path, tallied: bool, tx: &Sender<LabEvent>) -> bool {
    let results = Results::load(&out.join("results.json"));
    let Some(image_shape) = results.image_shape else {
        return false;
    };
    let earlier: Option<Vec<&CellResult>> = cells
        .iter()
        .map(|cell| earlier_result(cell, &results, out, tallied))
        .collect();
    let Some(first) = earlier.and_then(|e| e.first().copied()) else {
        return false;
    };
    let _ = tx.send(LabEvent::Planned {
        cells: cells.to_vec(),
        sample_shape: display_shape(image_shape),
        provider: first.provider.clone(),
        providers_note: format!(
            "every cell is up to date: the model was not loaded (the cells ran on {})",
            first.provider
        ),
        providers_summary: String::new(),
    });
    reuse_cached(cells, &results, out, image_shape, false, tallied, tx);
    let _ = tx.send(LabEvent::Log("every cell is up to date".into()));
    true
}

/// A finished earlier result of `cell` with the same key, whose grid (and tally, for a shard) is there.
fn earlier_result<'r>(
    cell: &Cell,
    results: &'r Results,
    out: &Path,
    tallied: bool,
) -> Option<&'r CellResult> {
    results
        .cells
        .iter()
        .find(|r| r.key == cell.key && !r.failed() && out.join(&r.grid).is_file())
        .filter(|_| {
            !tallied || Tally::load(&out.join(tally_path(cell))).is_ok_and(|t| t.1 == cell.key)
        })
}

/// Reports the cells whose inputs have not changed since a finished earlier run, with their grids (and
/// tallies, for a shard), and returns the indices of the others. A failed cell is never up to date.
fn reuse_cached(
    cells: &[Cell],
    results: &Results,
    out: &Path,
    sample_shape: [usize; 3],
    force: bool,
    tallied: bool,
    tx: &Sender<LabEvent>,
) -> Vec<usize> {
    let mut pending = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        match earlier_result(cell, results, out, tallied) {
            Some(r) if !force => {
                let images = for_display(
                    read_grid(&out.join(&r.grid), sample_shape, cell),
                    sample_shape,
                );
                let _ = tx.send(LabEvent::CellDone {
                    cell: i,
                    result: Box::new(CellResult {
                        warnings: cell.warnings.clone(),
                        ..r.clone()
                    }),
                    images,
                    cached: true,
                });
            }
            _ => pending.push(i),
        }
    }
    pending
}

/// The feature network and reference statistics, when the experiment asks for FID and KID.
fn load_quality(experiment: &Experiment) -> Result<Option<Quality<'_>>, Stop> {
    let Some(spec) = &experiment.quality else {
        return Ok(None);
    };
    let (Some(features), Some(f)) = (load_features(experiment), &spec.features) else {
        return Ok(None);
    };
    let features = features?;
    let reference = ReferenceStats::load(&f.reference)?;
    Ok(Some(Quality::new(features, reference, spec)?))
}

/// The pending cells of a run and their lanes, stepped together.
struct Batch<'a> {
    cells: &'a [Cell],
    /// Indices into `cells` of the cells that run; `states` and `Lane::cell` index this.
    pending: Vec<usize>,
    states: Vec<CellState>,
    lanes: Vec<Lane>,
    per_lane: usize,
    /// Values in one sample.
    item: usize,
    quality: Option<Quality<'a>>,
    /// Initial noise from `init_noise`, one sample per seed index.
    init_noise: Option<Vec<f32>>,
    /// `noise = "torch"`: seed k's initial noise is `torch.randn` under `manual_seed(k)`.
    torch_noise: bool,
    /// The unconditional condition-table row, for guided cells.
    uncond: Option<usize>,
    ctx: Finish<'a>,
    /// The run's reference solves and those finished (or read back), by index.
    references: &'a [Cell],
    solutions: Vec<Option<Solution>>,
    /// The cells running now are reference solves: kept for comparison, not results.
    solving: bool,
    results: Results,
    /// A shard's progress file, for whoever watches the sharded run.
    progress_file: Option<ProgressWriter>,
    tx: &'a Sender<LabEvent>,
}

impl<'a> Batch<'a> {
    /// Makes `pending` (indices into `cells`) the cells to run next.
    fn begin(&mut self, cells: &'a [Cell], pending: Vec<usize>, solving: bool) -> Result<(), Stop> {
        self.per_lane = (self.ctx.batch / pending.len().max(1)).max(1);
        let mut states = Vec::with_capacity(pending.len());
        for &c in &pending {
            let cell = &cells[c];
            let state = match solving {
                true => CellState::new(cell, cell.samples(), self.item, self.per_lane, CellOutput::new(0, None)),
                false => {
                    let solution = cell.reference_in(self.references).and_then(|r| self.solutions[r].as_ref());
                    let output = self.ctx.output_for(cell, solution)?;
                    CellState::new(cell, 0, self.item, self.per_lane, output)
                }
            };
            states.push(state);
        }
        self.check_memory(cells, &pending, solving)?;
        self.states = states;
        (self.cells, self.pending, self.solving) = (cells, pending, solving);
        Ok(())
    }

    /// Refuses cells whose samples would not fit in memory: their lanes (sample, x0 and the model's input
    /// and output, guided lanes twice), what each keeps whole (previews and the samples a reference solve
    /// compares, with their images), and a reference solve's every sample.
    fn check_memory(&self, cells: &[Cell], pending: &[usize], solving: bool) -> Result<(), Stop> {
        let image: usize = self.ctx.pictures.image_shape.iter().product();
        let lanes = pending.len() * self.per_lane * self.item * 6;
        let kept: usize = pending
            .iter()
            .map(|&c| match solving {
                true => cells[c].samples() * self.item,
                false => cells[c].preview * (self.item + image),
            })
            .sum();
        let values = (lanes + kept) as u128;
        crate::engine::limits::check_memory(values, "the lanes and the kept samples of this run")
            .map_err(Stop::Error)
    }

    /// Runs the pending cells to the end. Each cell runs one lane at a time and starts its next lane as
    /// soon as one finishes; the lanes of all cells step together, sharing one model call per step.
    fn drive(
        &mut self,
        denoiser: &mut dyn Denoiser,
        cancel: &AtomicBool,
        calls: &mut (usize, usize),
    ) -> Result<(), Stop> {
        loop {
            self.lanes
                .retain(|l| l.step < l.scheduler.timesteps().len());
            calls.1 += self.start_lanes()?;
            if self.lanes.is_empty() {
                return Ok(());
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(Stop::Cancelled);
            }
            self.step(denoiser, calls)?;
        }
    }

    /// Reads back the saved solves among `needed`; returns the ones left to solve.
    fn load_solutions(&mut self, needed: &[usize]) -> Result<Vec<usize>, Stop> {
        let mut unsolved = Vec::new();
        for &r in needed {
            let cell = &self.references[r];
            let path = reference::cache_path(self.ctx.out, cell);
            let shape = self.ctx.pictures.sample_shape;
            match reference::load(&path, shape, cell.samples()) {
                Some(samples) => {
                    self.solutions[r] = Some(self.solution(cell, samples)?);
                    let line = format!("{}: unchanged, reused {}", cell.name, path.display());
                    let _ = self.tx.send(LabEvent::Log(line));
                }
                None => unsolved.push(r),
            }
        }
        Ok(unsolved)
    }

    /// A reference's samples with their decoded images (latent models).
    fn solution(&mut self, cell: &Cell, samples: Vec<f32>) -> Result<Solution, Stop> {
        let pictures = &mut self.ctx.pictures;
        let images = match pictures.decoder.is_some() {
            true => Some(pictures.images(&samples)?),
            false => None,
        };
        Ok(Solution {
            name: cell.name.clone(),
            samples,
            images,
        })
    }

    /// Keeps and saves the finished reference solve in `slot`.
    fn solved(&mut self, slot: usize) -> Result<(), Stop> {
        let r = self.pending[slot];
        let cell = &self.references[r];
        let state = &mut self.states[slot];
        let samples = std::mem::take(&mut state.finals);
        let seconds = state.model_s + state.sampler_s;
        let path = reference::cache_path(self.ctx.out, cell);
        reference::save(&path, &samples, self.ctx.pictures.sample_shape)?;
        let line = format!(
            "{}: solved {} samples ({} model evaluations each) in {seconds:.1} s, saved in {}",
            cell.name,
            cell.samples(),
            state.nfe,
            path.display()
        );
        let _ = self.tx.send(LabEvent::Log(line));
        self.solutions[r] = Some(self.solution(cell, samples)?);
        Ok(())
    }

    /// Starts the next lane of every cell that has none running and samples left; returns the model
    /// calls those lanes would take alone.
    fn start_lanes(&mut self) -> Result<usize, Stop> {
        let mut unbatched = 0;
        for (slot, &c) in self.pending.iter().enumerate() {
            let cell = &self.cells[c];
            let state = &mut self.states[slot];
            if state.failed
                || self.lanes.iter().any(|l| l.cell == slot)
                || state.next_first >= cell.samples()
            {
                continue;
            }
            let first = state.next_first;
            let items = &cell.items[first..(first + self.per_lane).min(cell.samples())];
            state.next_first += items.len();
            let noise = SeededNoise::new(items.iter().map(|i| i.seed).collect());
            let mut scheduler = cell.config.build();
            scheduler.set_steps(cell.steps)?;
            let guided = cell.guidance != 1.0;
            let nfe = scheduler.timesteps().len();
            state.nfe = nfe;
            self.lanes.push(Lane {
                cell: slot,
                x: self.initial_noise(&noise, items, scheduler.init_noise_sigma()),
                x0: vec![0.0; items.len() * self.item],
                scheduler,
                noise,
                first,
                items: items.len(),
                rows: items.iter().map(|i| i.condition).collect(),
                uncond: if guided { self.uncond } else { None },
                guidance: cell.guidance as f32,
                guidance_rescale: cell.guidance_rescale as f32,
                step: 0,
            });
            unbatched += nfe;
        }
        Ok(unbatched)
    }

    /// A lane's initial noise: the seeds' own, or their rows of `init_noise`, times the sampler's
    /// `init_noise_sigma` (as diffusers scales its latents).
    fn initial_noise(&self, noise: &SeededNoise, items: &[Item], sigma: f32) -> Vec<f32> {
        let mut x = match &self.init_noise {
            Some(rows) => items
                .iter()
                .flat_map(|i| &rows[i.seed_index * self.item..(i.seed_index + 1) * self.item])
                .copied()
                .collect(),
            // Checked at the start of the run: torch's path is only taken for 16 values or more.
            None if self.torch_noise => items
                .iter()
                .flat_map(|i| torch_randn(i.seed, self.item).unwrap_or_default())
                .collect(),
            None => noise.initial(self.item),
        };
        if sigma != 1.0 {
            x.iter_mut().for_each(|v| *v *= sigma);
        }
        x
    }

    /// One shared model call for every lane (a guided lane's samples twice: unconditional, then conditional,
    /// as diffusers batches them), then each lane's sampler step. A lane whose model output is not finite
    /// fails its cell; the other cells go on.
    fn step(
        &mut self,
        denoiser: &mut dyn Denoiser,
        calls: &mut (usize, usize),
    ) -> Result<(), Stop> {
        let (mut inputs, mut timesteps, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        for lane in &self.lanes {
            let t = lane.scheduler.timesteps()[lane.step];
            let divisor = lane.scheduler.model_input_divisor();
            let input = || lane.x.iter().map(move |&v| v / divisor);
            if let Some(uncond) = lane.uncond {
                inputs.extend(input());
                timesteps.extend(std::iter::repeat_n(t, lane.items));
                rows.extend(std::iter::repeat_n(uncond, lane.items));
            }
            inputs.extend(input());
            timesteps.extend(std::iter::repeat_n(t, lane.items));
            rows.extend_from_slice(&lane.rows);
        }
        let mut outputs = vec![0.0; inputs.len()];
        let call = Instant::now();
        let runs_before = denoiser.runs();
        denoiser.predict_with(&inputs, &timesteps, &rows, &mut outputs)?;
        let model_s = call.elapsed().as_secs_f64();
        // A scalar-timestep model may run several times for one call: count what really ran.
        calls.0 += match (runs_before, denoiser.runs()) {
            (Some(before), Some(after)) => after - before,
            _ => 1,
        };
        let total_items = timesteps.len() as f64;
        let mut offset = 0;
        let mut failed = Vec::new();
        let mut guided = Vec::new();
        for l in 0..self.lanes.len() {
            let lane = &mut self.lanes[l];
            let len = lane.items * self.item;
            let calls_of_lane = if lane.uncond.is_some() { 2 } else { 1 };
            let output = if lane.uncond.is_some() {
                let (u, c) = outputs[offset..offset + 2 * len].split_at(len);
                guided.resize(len, 0.0);
                guide(
                    u,
                    c,
                    lane.guidance,
                    lane.guidance_rescale,
                    self.item,
                    &mut guided,
                );
                &guided[..]
            } else {
                &outputs[offset..offset + len]
            };
            offset += calls_of_lane * len;
            let state = &mut self.states[lane.cell];
            state.model_s += model_s * (calls_of_lane * lane.items) as f64 / total_items;
            if let Some(bad) = NonFinite::count(output) {
                let steps = lane.scheduler.timesteps().len();
                let t = lane.scheduler.timesteps()[lane.step];
                failed.push((
                    lane.cell,
                    format!(
                        "model output is not finite at step {}/{steps}, t = {t}: {bad}",
                        lane.step + 1
                    ),
                ));
                continue;
            }
            let step_start = Instant::now();
            lane.scheduler.step(
                output,
                &mut lane.x,
                &mut lane.x0,
                lane.items,
                &mut lane.noise,
            )?;
            // A schedule at the edge of what diffusers accepts (betas near 1) can turn finite model
            // output into NaN: that fails the cell too, never a "finished" cell of garbage.
            if let Some(bad) = NonFinite::count(&lane.x) {
                let steps = lane.scheduler.timesteps().len();
                let t = lane.scheduler.timesteps()[lane.step];
                failed.push((
                    lane.cell,
                    format!(
                        "the sampler's result is not finite after step {}/{steps}, t = {t}: {bad}; check the noise schedule (beta_start, beta_end, num_train_timesteps)",
                        lane.step + 1
                    ),
                ));
                continue;
            }
            lane.step += 1;
            state.sampler_s += step_start.elapsed().as_secs_f64();
            if let Some(failure) = self.progress(l, calls)? {
                failed.push(failure);
            }
        }
        for (slot, error) in failed {
            self.fail_cell(slot, error, calls)?;
        }
        Ok(())
    }

    /// Reports lane `l`'s step; when that was the lane's last, takes its samples into its cell (decoded,
    /// scored, written) and finishes the cell when that was its last lane. A decoder failure is returned for
    /// the caller to fail the cell with.
    fn progress(
        &mut self,
        l: usize,
        calls: &(usize, usize),
    ) -> Result<Option<(usize, String)>, Stop> {
        let lane = &self.lanes[l];
        let c = self.pending[lane.cell];
        let cell = &self.cells[c];
        let item = self.item;
        // Model calls, which is the step count except for samplers that call the model twice a step.
        let calls_total = lane.scheduler.timesteps().len();
        if self.solving {
            self.reference_progress(l)?;
            return Ok(None);
        }
        let preview = (lane.first < cell.preview)
            .then(|| {
                let n = (cell.preview - lane.first).min(lane.items);
                let x0 = &lane.x0[..n * item];
                self.ctx.pictures.preview_at(x0, lane.step, calls_total)
            })
            .flatten();
        let _ = self.tx.send(LabEvent::Progress {
            cell: c,
            step: lane.step,
            steps: calls_total,
            samples_done: lane.first,
            samples_total: cell.samples(),
            preview: preview.filter(|p| !p.is_empty()),
        });
        if lane.step < calls_total {
            return Ok(None);
        }
        let images = match self.ctx.pictures.images(&lane.x) {
            Ok(images) => images,
            Err(e) => return Ok(Some((lane.cell, e))),
        };
        let state = &mut self.states[lane.cell];
        let shape = self.ctx.pictures.image_shape;
        let quality = self.quality.as_mut();
        state
            .output
            .take(lane.first, &lane.x, &images, shape, quality, self.ctx.batch)?;
        state.lanes_left -= 1;
        if let Some(file) = &mut self.progress_file {
            file.record(&cell.key, lane.first + lane.items, state.lanes_left == 0);
        }
        if state.lanes_left > 0 {
            return Ok(None);
        }
        // The cell is complete: score, write and report it now, not at the end of the run.
        let solution = cell
            .reference_in(self.references)
            .and_then(|r| self.solutions[r].as_ref());
        let (result, images) = self
            .ctx
            .finish(c, cell, state, self.quality.as_mut(), solution)?;
        if let Some(e) = &result.error {
            let _ = self.tx.send(LabEvent::Log(format!("{}: {e}", cell.name)));
        }
        self.record(c, result, images, calls)?;
        Ok(None)
    }

    /// A reference solve's progress, in a log line at each quarter of a lane's steps; keeps the solve
    /// when it is complete.
    fn reference_progress(&mut self, l: usize) -> Result<(), Stop> {
        let lane = &self.lanes[l];
        let steps = lane.scheduler.timesteps().len();
        if lane.step < steps && lane.step % (steps / 4).max(1) == 0 {
            let line = format!(
                "{}: step {}/{steps} of samples {}..{} of {}",
                self.cells[self.pending[lane.cell]].name,
                lane.step,
                lane.first,
                lane.first + lane.items,
                self.cells[self.pending[lane.cell]].samples()
            );
            let _ = self.tx.send(LabEvent::Log(line));
        }
        if lane.step < steps {
            return Ok(());
        }
        let (slot, first) = (lane.cell, lane.first * self.item);
        let state = &mut self.states[slot];
        state.finals[first..first + lane.x.len()].copy_from_slice(&lane.x);
        state.lanes_left -= 1;
        match state.lanes_left {
            0 => self.solved(slot),
            _ => Ok(()),
        }
    }

    /// Stops the cell in `slot` with `error`: its lanes end, it is written as failed and reported.
    fn fail_cell(
        &mut self,
        slot: usize,
        error: String,
        calls: &(usize, usize),
    ) -> Result<(), Stop> {
        let state = &mut self.states[slot];
        if state.failed {
            return Ok(());
        }
        state.failed = true;
        self.lanes.retain(|l| l.cell != slot);
        let c = self.pending[slot];
        let cell = &self.cells[c];
        if self.solving {
            let line = format!(
                "{} failed: {error}; the cells at guidance {} are not compared with a reference",
                cell.name, cell.guidance
            );
            let _ = self.tx.send(LabEvent::Log(line));
            return Ok(());
        }
        let _ = self
            .tx
            .send(LabEvent::Log(format!("{} failed: {error}", cell.name)));
        let mut result = self.ctx.result(cell, state, String::new());
        result.error = Some(error);
        self.record(c, result, Vec::new(), calls)
    }

    /// Writes a cell's result into the results files and reports it.
    fn record(
        &mut self,
        c: usize,
        result: CellResult,
        images: Vec<f32>,
        calls: &(usize, usize),
    ) -> Result<(), Stop> {
        self.results.put(result.clone());
        self.results.model_calls = calls.0;
        self.results.unbatched_model_calls = calls.1;
        self.results.save(self.ctx.out)?;
        let _ = self.tx.send(LabEvent::CellDone {
            cell: c,
            result: Box::new(result),
            images,
            cached: false,
        });
        Ok(())
    }
}

/// The preview images back from a cell's grid (for reused cells).
fn read_grid(path: &std::path::Path, shape: [usize; 3], cell: &Cell) -> Vec<f32> {
    let count = cell.preview;
    let [c, h, w] = shape;
    let Ok(img) = image::open(path).map(|i| i.to_rgb8()) else {
        return Vec::new();
    };
    let columns = grid_columns(cell);
    let factor = upscale_factor(shape) as usize;
    let gap = GAP;
    let mut out = vec![0.0; count * c * h * w];
    for k in 0..count {
        let (ox, oy) = (
            (k % columns) * (w + gap) + gap,
            (k / columns) * (h + gap) + gap,
        );
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let (px, py) = (((ox + x) * factor) as u32, ((oy + y) * factor) as u32);
                    if px < img.width() && py < img.height() {
                        let v = img.get_pixel(px, py)[if c == 3 { ch } else { 0 }];
                        out[k * c * h * w + ch * h * w + y * w + x] = v as f32 / 127.5 - 1.0;
                    }
                }
            }
        }
    }
    out
}
