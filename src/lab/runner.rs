//! Runs an experiment's cells off the calling thread: all cells step in lockstep so their model calls
//! share one batched call per step, progress and x0 previews are sent as events, a cancel takes effect
//! before the next model call, and each finished cell is written at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use super::images::{grid, save_png, upscale};
use super::model::{LoadedModel, load_features, load_model};
use super::plan::{Cell, plan};
use super::results::{CellResult, Results};
use crate::engine::OnnxFeatures;
use crate::experiment::{Experiment, QualitySpec};
use crate::quality::{FeatureStats, ReferenceStats, frechet_distance, kernel_inception_distance};
use crate::sampler::{Scheduler, SeededNoise};

/// What the lab tells its caller, in order.
#[derive(Debug, Clone)]
pub enum LabEvent {
    /// The cells about to run (or be reused), and where the model runs.
    Planned {
        cells: Vec<Cell>,
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
        result: CellResult,
        images: Vec<f32>,
        cached: bool,
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

/// Starts running `experiment` on a background thread.
pub fn start(experiment: Experiment, options: RunOptions) -> LabHandle {
    let (tx, rx) = channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let failed = tx.clone();
    let thread = std::thread::Builder::new()
        .name("difflab-lab".into())
        .spawn(move || run(&experiment, &options, &flag, &tx))
        .map_err(|e| {
            // Without this event the caller would wait for a run that never started.
            let _ = failed.send(LabEvent::Finished {
                cancelled: false,
                error: Some(format!("cannot start the lab thread: {e}")),
                model_calls: 0,
                unbatched_model_calls: 0,
                wall_s: 0.0,
            });
        })
        .ok();
    LabHandle {
        events: rx,
        cancel,
        thread,
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
    step: usize,
}

fn run_inner(
    experiment: &Experiment,
    options: &RunOptions,
    cancel: &AtomicBool,
    tx: &Sender<LabEvent>,
    calls: &mut (usize, usize),
) -> Result<(), Stop> {
    let send = |e: LabEvent| {
        let _ = tx.send(e);
    };
    let cells = plan(experiment, options.only.as_deref())?;
    if cells.is_empty() {
        let names: Vec<String> = plan(experiment, None)?
            .into_iter()
            .map(|c| format!("{:?}", c.name))
            .collect();
        return Err(Stop::Error(format!(
            "no cell matches --only {:?}; give a cell name or the start of a sampler label: {}",
            options.only.as_deref().unwrap_or(""),
            names.join(", ")
        )));
    }
    let LoadedModel {
        mut denoiser,
        sample_shape,
        provider,
        providers_note,
        providers_summary,
    } = load_model(experiment)?;
    send(LabEvent::Planned {
        cells: cells.clone(),
        sample_shape,
        provider: provider.clone(),
        providers_note,
        providers_summary,
    });
    let out = &experiment.output_dir;
    std::fs::create_dir_all(out)?;
    let mut results = Results::load(&out.join("results.json"));
    results.experiment = experiment.name.clone();
    let item = sample_shape.iter().product::<usize>();

    // Reuse cells whose inputs have not changed.
    let mut pending = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        let earlier = results
            .cells
            .iter()
            .find(|r| r.key == cell.key && out.join(&r.grid).is_file());
        match earlier {
            Some(r) if !options.force => {
                let images = read_grid(&out.join(&r.grid), sample_shape, cell.preview);
                send(LabEvent::CellDone {
                    cell: i,
                    result: r.clone(),
                    images,
                    cached: true,
                });
            }
            _ => pending.push(i),
        }
    }
    if pending.is_empty() {
        send(LabEvent::Log("every cell is up to date".into()));
        return Ok(());
    }

    let features = match load_features(experiment) {
        Some(f) => Some(f?),
        None => None,
    };
    let reference = match &experiment.quality {
        Some(q) => Some(ReferenceStats::load(&q.reference)?),
        None => None,
    };
    let mut quality = match (features, reference, &experiment.quality) {
        (Some(f), Some(r), Some(q)) => Some((f, r, q)),
        _ => None,
    };
    let ctx = Finish {
        out,
        sample_shape,
        provider: &provider,
        batch: experiment.batch,
    };

    // Every pending cell's samples, split into lanes of at most `per_lane` samples. Each cell runs one
    // lane at a time and starts its next lane as soon as one finishes; the lanes of all cells step
    // together, sharing one model call per step.
    let per_lane = (experiment.batch / pending.len()).max(1);
    let mut states: Vec<CellState> = pending
        .iter()
        .map(|&c| CellState {
            finals: vec![0.0; cells[c].seeds.len() * item],
            model_s: 0.0,
            sampler_s: 0.0,
            lanes_left: cells[c].seeds.len().div_ceil(per_lane),
            next_first: 0,
        })
        .collect();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let mut timesteps = Vec::new();
    let mut lanes: Vec<Lane> = Vec::new();
    loop {
        lanes.retain(|l| l.step < l.scheduler.timesteps().len());
        for (slot, &c) in pending.iter().enumerate() {
            let cell = &cells[c];
            let state = &mut states[slot];
            if lanes.iter().any(|l| l.cell == slot) || state.next_first >= cell.seeds.len() {
                continue;
            }
            let first = state.next_first;
            let seeds = cell.seeds[first..(first + per_lane).min(cell.seeds.len())].to_vec();
            state.next_first += seeds.len();
            let items = seeds.len();
            let noise = SeededNoise::new(seeds);
            let mut scheduler = cell.config.build();
            scheduler.set_steps(cell.steps)?;
            lanes.push(Lane {
                cell: slot,
                x: noise.initial(item),
                x0: vec![0.0; items * item],
                scheduler,
                noise,
                first,
                items,
                step: 0,
            });
            calls.1 += cell.steps;
        }
        if lanes.is_empty() {
            break;
        }
        {
            let active: Vec<usize> = (0..lanes.len()).collect();
            if cancel.load(Ordering::Relaxed) {
                return Err(Stop::Cancelled);
            }
            inputs.clear();
            timesteps.clear();
            for &l in &active {
                let lane = &lanes[l];
                inputs.extend_from_slice(&lane.x);
                let t = lane.scheduler.timesteps()[lane.step] as f64;
                timesteps.extend(std::iter::repeat_n(t, lane.items));
            }
            outputs.resize(inputs.len(), 0.0);
            let call = Instant::now();
            denoiser.predict(&inputs, &timesteps, &mut outputs)?;
            let model_s = call.elapsed().as_secs_f64();
            calls.0 += 1;
            let total_items = timesteps.len() as f64;
            let mut offset = 0;
            for &l in &active {
                let lane = &mut lanes[l];
                let len = lane.items * item;
                let step_start = Instant::now();
                lane.scheduler.step(
                    &outputs[offset..offset + len],
                    &mut lane.x,
                    &mut lane.x0,
                    lane.items,
                    &mut lane.noise,
                )?;
                offset += len;
                lane.step += 1;
                let state = &mut states[lane.cell];
                state.model_s += model_s * lane.items as f64 / total_items;
                state.sampler_s += step_start.elapsed().as_secs_f64();
                let c = pending[lane.cell];
                let cell = &cells[c];
                let preview = (lane.first < cell.preview).then(|| {
                    let n = (cell.preview - lane.first).min(lane.items);
                    lane.x0[..n * item].to_vec()
                });
                send(LabEvent::Progress {
                    cell: c,
                    step: lane.step,
                    steps: cell.steps,
                    samples_done: lane.first,
                    samples_total: cell.seeds.len(),
                    preview,
                });
                if lane.step == cell.steps {
                    let start = lane.first * item;
                    state.finals[start..start + lane.x.len()].copy_from_slice(&lane.x);
                    state.lanes_left -= 1;
                    if state.lanes_left == 0 {
                        // The cell is complete: score, write and report it now, not at the end of the run.
                        let (result, images) = ctx.finish(cell, state, quality.as_mut())?;
                        results.put(result.clone());
                        results.model_calls = calls.0;
                        results.unbatched_model_calls = calls.1;
                        results.save(out)?;
                        send(LabEvent::CellDone {
                            cell: c,
                            result,
                            images,
                            cached: false,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// A pending cell's samples and time so far.
struct CellState {
    finals: Vec<f32>,
    model_s: f64,
    sampler_s: f64,
    lanes_left: usize,
    /// The first sample of the next lane to start.
    next_first: usize,
}

/// What finishing a cell needs.
struct Finish<'a> {
    out: &'a std::path::Path,
    sample_shape: [usize; 3],
    provider: &'a str,
    batch: usize,
}

impl Finish<'_> {
    /// Scores a complete cell, writes its grid, and returns its result and preview images.
    fn finish(
        &self,
        cell: &Cell,
        state: &CellState,
        quality: Option<&mut (OnnxFeatures, ReferenceStats, &QualitySpec)>,
    ) -> Result<(CellResult, Vec<f32>), Stop> {
        let item = self.sample_shape.iter().product::<usize>();
        let samples = cell.seeds.len();
        let (fid, kid) = match quality {
            Some((features, reference, spec)) => {
                let mut feats = Vec::new();
                let mut dim = 0;
                for chunk in state.finals.chunks(self.batch.max(1) * item) {
                    let (part, d) =
                        features.features(chunk, chunk.len() / item, self.sample_shape)?;
                    feats.extend(part);
                    dim = d;
                }
                if dim != reference.dim {
                    return Err(Stop::Error(format!(
                        "the feature network gives {dim} features, the reference statistics {}",
                        reference.dim
                    )));
                }
                let stats = FeatureStats::from_features(&feats, dim);
                let kid = kernel_inception_distance(
                    &feats,
                    &reference.features,
                    dim,
                    spec.kid_subsets,
                    spec.kid_subset_size,
                    0,
                );
                (Some(frechet_distance(&stats, &reference.stats)), Some(kid))
            }
            None => (None, None),
        };
        let grid_path = format!("cells/{}.png", file_name(&cell.name));
        let images = state.finals[..cell.preview * item].to_vec();
        let columns = (cell.preview as f64).sqrt().ceil() as usize;
        let img = grid(&images, self.sample_shape, cell.preview, columns);
        save_png(
            &upscale(&img, upscale_factor(self.sample_shape)),
            &self.out.join(&grid_path),
        )?;
        let wall = state.model_s + state.sampler_s;
        let result = CellResult {
            name: cell.name.clone(),
            label: cell.label.clone(),
            class: cell.class.clone(),
            steps: cell.steps,
            nfe: cell.steps,
            samples,
            wall_s: wall,
            model_ms_per_step: state.model_s * 1e3 / cell.steps as f64,
            sampler_ms_per_step: state.sampler_s * 1e3 / cell.steps as f64,
            ms_per_sample: wall * 1e3 / samples as f64,
            fid,
            kid: kid.map(|k| k.mean),
            kid_std: kid.map(|k| k.std),
            provider: self.provider.to_string(),
            grid: grid_path,
            key: cell.key.clone(),
        };
        Ok((result, images))
    }
}

/// Enough to make small samples visible in a grid (16×16 digits become 64×64).
fn upscale_factor(shape: [usize; 3]) -> u32 {
    (64 / shape[1].max(shape[2]).max(1)).max(1) as u32
}

/// A cell name as a file name.
fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '+' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The preview images back from a cell's grid (for reused cells).
fn read_grid(path: &std::path::Path, shape: [usize; 3], count: usize) -> Vec<f32> {
    let [c, h, w] = shape;
    let Ok(img) = image::open(path).map(|i| i.to_rgb8()) else {
        return Vec::new();
    };
    let columns = (count as f64).sqrt().ceil() as usize;
    let factor = upscale_factor(shape) as usize;
    let gap = 2;
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
