//! One run of an experiment, start to end: plan the cells, reuse those that are up to date, load the model,
//! solve the references the pending cells need, then step the pending cells in lockstep (`lockstep`), and
//! say how it ended. A cancel takes effect before the next model call.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::time::Instant;

use super::conditioning::RunConditions;
use super::display::{display_shape, for_display};
use super::events::{ImageKind, LabEvent, RunOptions};
use super::finish::{Finish, Pictures, Provenance};
use super::lockstep::Batch;
use super::merge::merge;
use super::model::{LoadedModel, image_shape_unloaded, load_features, load_model};
use super::model_cache::model_key;
use super::plan::{Cell, Plan, plan, plan_run};
use super::results::Results;
use super::reuse::{reuse_all, reuse_cached};
use super::samples::read_init_noise;
use super::scoring::Quality;
use super::shard::{ShardPlan, shard_plan};
use super::shard_watch::{ProgressWriter, shards_of, watch};
use super::{baseline, start_distance, start_images};
use crate::experiment::{DEFAULT_PREVIEW_EVERY, Experiment, NoiseKind, Preview};
use crate::path_error::at;
use crate::quality::ReferenceStats;
use crate::sampler::PredictionType;

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

pub(super) enum Stop {
    Cancelled,
    Error(String),
}

impl<E: std::fmt::Display> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Error(e.to_string())
    }
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
    let run = shard_plan(experiment, planned, options.shard)?;
    let (cells, out) = (run.cells.clone(), run.out.clone());
    run_planned(experiment, options, cancel, tx, calls, run, watched)?;
    // A shard's cells are compared once merged.
    if options.shard.is_some() {
        return Ok(());
    }
    start_distance::compare(experiment, &cells, &out, tx);
    baseline::compare(experiment, &cells, &out, tx)
}

/// The planned run: reused when every cell is up to date, watched when shards run it, else run.
fn run_planned(
    experiment: &Experiment,
    options: &RunOptions,
    cancel: &AtomicBool,
    tx: &Sender<LabEvent>,
    calls: &mut (usize, usize),
    run: ShardPlan,
    watched: Option<usize>,
) -> Result<(), Stop> {
    let tallied = run.items.is_some();
    let loading = |what: String| {
        let _ = tx.send(LabEvent::Loading(format!("{what}…")));
    };
    if watched.is_none() && !options.force && reuse_all(&run.cells, &run.out, tallied, tx) {
        if let Some((shape, frames)) = image_shape_unloaded(experiment) {
            send_start_tiles(experiment, &run.cells, (shape, frames), tx);
        }
        // Where networks are kept (the dashboard), they are loaded now, after every cell is shown, so the
        // first edit that needs a run does not wait for them.
        if let Some(cache) = &options.models {
            let key = model_key(experiment)?;
            let model = match cache.take(&key) {
                Some(model) => model,
                None => load_model(experiment, &loading)?,
            };
            cache.keep(key, model);
        }
        return Ok(());
    }
    // Shards run the model; watching them needs only the shape of their images.
    if let Some((count, (image_shape, frames))) = watched.zip(image_shape_unloaded(experiment)) {
        let _ = tx.send(LabEvent::Planned {
            cells: run.cells.clone(),
            sample_shape: display_shape(image_shape, frames),
            frames,
            provider: "shards".into(),
            providers_note: format!("{count} shards run the model; it is not loaded here"),
            providers_summary: String::new(),
        });
        return watch_and_merge(experiment, &run.cells, count, cancel, tx);
    }
    let Some(cache) = &options.models else {
        let mut model = load_model(experiment, &loading)?;
        return run_with(
            experiment, options, cancel, tx, calls, run, watched, &mut model, false,
        );
    };
    let key = model_key(experiment)?;
    let (mut model, reused) = match cache.take(&key) {
        Some(model) => (model, true),
        None => (load_model(experiment, &loading)?, false),
    };
    let result = run_with(
        experiment, options, cancel, tx, calls, run, watched, &mut model, reused,
    );
    cache.keep(key, model);
    result
}

/// The run on a loaded `model` (`reused` from an earlier run: only its conditioning may need setting).
#[allow(clippy::too_many_arguments, reason = "the run's parts, each used once")]
fn run_with(
    experiment: &Experiment,
    options: &RunOptions,
    cancel: &AtomicBool,
    tx: &Sender<LabEvent>,
    calls: &mut (usize, usize),
    run: ShardPlan,
    watched: Option<usize>,
    model: &mut LoadedModel,
    reused: bool,
) -> Result<(), Stop> {
    let ShardPlan {
        cells,
        references,
        out,
        items: shard_items,
    } = run;
    let out = out.as_path();
    let tallied = shard_items.is_some();
    let notes = condition(experiment, model, reused, &cells)?;
    let decode_every = decode_every(experiment, model, tx);
    if model.frames == 1 && experiment.model.fps.is_some() {
        return Err(Stop::Error(
            "[model] fps is the frame rate of a video model's clips; this model's samples are images: remove it"
                .into(),
        ));
    }
    let (sample_shape, image_shape) = (model.sample_shape, model.image_shape);
    let item: usize = sample_shape.iter().product();
    let init_noise = initial_noise(experiment, (sample_shape, model.frames), &cells)?;
    let _ = tx.send(LabEvent::Planned {
        cells: cells.clone(),
        sample_shape: display_shape(image_shape, model.frames),
        frames: model.frames,
        provider: model.provider.clone(),
        providers_note: model.providers_note.clone(),
        providers_summary: model.providers_summary.clone(),
    });
    for note in notes {
        let _ = tx.send(LabEvent::Log(note));
    }
    send_start_tiles(experiment, &cells, (image_shape, model.frames), tx);
    if let Some(count) = watched {
        return watch_and_merge(experiment, &cells, count, cancel, tx);
    }
    let mut results = open_results(experiment, out, (image_shape, model.frames), tx)?;
    let pending = reuse_cached(
        &cells,
        &mut results,
        out,
        (image_shape, model.frames),
        options.force,
        tallied,
        tx,
    );
    if pending.is_empty() {
        let _ = tx.send(LabEvent::Log("every cell is up to date".into()));
        return Ok(());
    }
    let provenance = Provenance {
        provider: model.provider.clone(),
        tf32: model.tf32,
        runtime_warnings: model.runtime_warnings.clone(),
    };
    let unit_range =
        model.decoder.is_none() && model.denoiser.info().prediction_type == PredictionType::Score;
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
        start: model.conditions.start.clone(),
        extra_channels: model.denoiser.info().extra_channels,
        control: model.conditions.control.clone(),
        controlnets: model.denoiser.controlnets(),
        uncond: model.conditions.uncond,
        empty: model.conditions.empty,
        embedded_guidance: model.denoiser.embeds_guidance(),
        ctx: Finish {
            out,
            pictures: Pictures {
                decode_every,
                // Lent to the run and handed back below, however the run ends.
                decoder: model.decoder.take(),
                preview: model.preview.clone(),
                image_shape,
                sample_shape,
                frames: model.frames,
                fps: experiment.model.fps(),
                vae_batch: model.vae_batch,
                unit_range,
            },
            provenance: &provenance,
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
    let denoiser = model.denoiser.as_mut();
    let result = drive_all(
        &mut lab,
        &cells,
        pending,
        &references,
        denoiser,
        cancel,
        calls,
    );
    model.decoder = lab.ctx.pictures.decoder.take();
    result
}

/// Sets the model's conditioning for the experiment and checks the cells' guidance against it; returns
/// what loading and conditioning have to say.
fn condition(
    experiment: &Experiment,
    model: &mut LoadedModel,
    reused: bool,
    cells: &[Cell],
) -> Result<Vec<String>, Stop> {
    let mut notes = match reused {
        true => vec![format!(
            "the model is unchanged: its networks stay loaded ({})",
            model.provider
        )],
        false => std::mem::take(&mut model.notes),
    };
    notes.extend(model.condition(experiment)?);
    check_guidance(cells, &model.conditions, model.denoiser.is_conditional())?;
    Ok(notes)
}

/// How often previews are decoded by the VAE (`None`: the fast approximation); a model without a decoder
/// previews its samples, and latents the cheap map does not know (Sana's, a 4-channel SD3 layout's) are
/// decoded; the log says so.
fn decode_every(
    experiment: &Experiment,
    model: &LoadedModel,
    tx: &Sender<LabEvent>,
) -> Option<usize> {
    match experiment.preview {
        Preview::Decode { .. } if model.decoder.is_none() => {
            let _ = tx.send(LabEvent::Log(
                "[sampling] preview = \"decode\": the model has no VAE decoder; its previews are its samples"
                    .into(),
            ));
            None
        }
        Preview::Decode { every } => Some(every),
        Preview::Approx if model.preview.is_none() && model.decoder.is_some() => {
            let _ = tx.send(LabEvent::Log(format!(
                "no cheap latent→RGB map for this model's latents: previews are decoded by the VAE every \
                 {DEFAULT_PREVIEW_EVERY} steps (set [sampling] preview = \"decode\" and preview_every to choose)"
            )));
            Some(DEFAULT_PREVIEW_EVERY)
        }
        Preview::Approx => None,
    }
}

/// The experiment's `init_noise` file, read for the cells; refuses torch noise for samples too small to
/// reproduce it.
fn initial_noise(
    experiment: &Experiment,
    (sample_shape, frames): ([usize; 3], usize),
    cells: &[Cell],
) -> Result<Option<Vec<f32>>, Stop> {
    let item: usize = sample_shape.iter().product();
    if experiment.noise == NoiseKind::Torch && item < 16 && experiment.init_noise.is_none() {
        return Err(Stop::Error(format!(
            "[sampling] noise = \"torch\" reproduces torch.randn for samples of 16 values or more; this \
             model's sample has {item} ({sample_shape:?})"
        )));
    }
    match &experiment.init_noise {
        Some(path) => Ok(Some(read_init_noise(path, (sample_shape, frames), cells)?)),
        None => Ok(None),
    }
}

/// The output folder's results file, for this run to update.
fn open_results(
    experiment: &Experiment,
    out: &Path,
    (image_shape, frames): ([usize; 3], usize),
    tx: &Sender<LabEvent>,
) -> Result<Results, Stop> {
    std::fs::create_dir_all(out).map_err(at("create the output folder", out))?;
    let (mut results, warning) = Results::open(&out.join("results.json"))?;
    if let Some(w) = warning {
        let _ = tx.send(LabEvent::Log(w));
    }
    results.experiment = experiment.name.clone();
    results.image_shape = Some(image_shape);
    results.set_frames(frames);
    Ok(results)
}

/// The reference solves the pending cells are compared with come first, so each cell is scored as soon as
/// it finishes; then the pending cells.
fn drive_all<'a>(
    lab: &mut Batch<'a>,
    cells: &'a [Cell],
    pending: Vec<usize>,
    references: &'a [Cell],
    denoiser: &mut dyn crate::engine::Denoiser,
    cancel: &AtomicBool,
    calls: &mut (usize, usize),
) -> Result<(), Stop> {
    let unsolved = lab.load_solutions(&needed_references(cells, &pending, references))?;
    if !unsolved.is_empty() {
        lab.begin(references, unsolved, true)?;
        lab.drive(denoiser, cancel, calls)?;
    }
    lab.begin(cells, pending, false)?;
    lab.drive(denoiser, cancel, calls)
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
            images: for_display(m.images, m.image_shape, m.frames),
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
    if let Some(cell) = cells
        .iter()
        .find(|c| c.guidance != 1.0 && c.guidance_method.name.needs_empty())
        && conditions.empty.is_none()
    {
        return Err(Stop::Error(format!(
            "{}: perp-neg guides from the empty prompt's prediction, and this run has no prompts; give \
             [conditioning] prompts or use another guidance_method",
            cell.name
        )));
    }
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

/// The start image of each preview sample, for the dashboard, when the run starts from images.
fn send_start_tiles(
    experiment: &Experiment,
    cells: &[Cell],
    (image_shape, frames): ([usize; 3], usize),
    tx: &Sender<LabEvent>,
) {
    let (Some(spec), Some(cell)) = (experiment.conditioning.as_ref(), cells.first()) else {
        return;
    };
    let kind = match (spec.init_images.is_empty(), spec.masks.is_empty()) {
        (false, true) => ImageKind::Start,
        (false, false) => ImageKind::StartMasked,
        (true, _) if !spec.controls.is_empty() => ImageKind::Control,
        (true, _) => return,
    };
    let items = &cell.items[..cell.preview];
    let tiles = match kind {
        ImageKind::Control => start_images::control_tiles(spec, items, image_shape),
        _ => start_images::preview_tiles(spec, items, image_shape),
    };
    match tiles {
        Ok(images) => {
            let images = for_display(images, image_shape, frames);
            let _ = tx.send(LabEvent::StartImages { images, kind });
        }
        Err(e) => {
            let _ = tx.send(LabEvent::Log(e));
        }
    }
}
