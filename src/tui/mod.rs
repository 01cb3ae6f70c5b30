//! The dashboard (`difflab ui`): samplers side by side while they run, training curves, quality
//! against cost, and the log — in a terminal, over SSH, inside tmux.
//!
//! One task owns the [`app::State`] and the terminal. Everything else arrives as an [`app::Msg`] on one
//! channel: key presses and resizes (crossterm's event stream), lab events (bridged from the lab's
//! thread), reloads of the experiment file (loaded on the watcher's thread), encoded images (from the
//! encoder thread) and signals. A frame is drawn only after something changed, at most
//! [`FRAME_INTERVAL`] apart; with nothing happening the task sleeps.

pub mod app;
pub mod images;
mod keys;
pub mod probe;
pub mod run_filter;
pub mod terminal;
pub mod training;
pub mod training_media;
pub mod view;
pub mod watch;
pub mod xy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream};
use futures::StreamExt;
use ratatui::layout::Rect;
use ratatui_image::picker::ProtocolType;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use app::{Effect, ImageSlot, Msg, State};
use images::ImageMode;

use crate::engine::frames::strip_frame;
use crate::experiment::Experiment;
use crate::lab::model_cache::ModelCache;
use crate::lab::{self, CancelSwitch, RunOptions};

/// The shortest time between two frames (a frame costs little; this caps the bytes sent while
/// sampling floods progress events).
pub const FRAME_INTERVAL: Duration = Duration::from_millis(33);

/// How long quitting waits for a running lab to stop, so no cell is left half-written.
const QUIT_WAIT: Duration = Duration::from_secs(2);

pub struct Options {
    pub experiment: PathBuf,
    pub images: ImageMode,
}

/// Opens the dashboard on an experiment file and returns when the user quits.
pub fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    if !options.experiment.is_file() {
        anyhow::bail!("{}: no such experiment file", options.experiment.display());
    }
    let loaded = Experiment::load(&options.experiment).map_err(|e| e.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let terminal = terminal::setup()?;
    let result = runtime.block_on(main_loop(terminal, options, loaded, started));
    terminal::restore();
    // The lab, watcher and encoder threads end with the process.
    runtime.shutdown_background();
    result
}

async fn main_loop(
    mut term: terminal::Term,
    options: Options,
    loaded: Result<Experiment, String>,
    started: Instant,
) -> anyhow::Result<()> {
    let (tx, mut rx) = unbounded_channel::<Msg>();
    // The training-log folders the experiment names (none when it does not load).
    let training_roots: Vec<PathBuf> = loaded
        .as_ref()
        .map(|e| e.training_runs.iter().map(PathBuf::from).collect())
        .unwrap_or_default();
    let mut state = State::new(options.experiment.clone(), loaded, "halfblocks");

    // The first frame goes out before anything slow: the terminal query, the watcher, the lab.
    term.draw(|f| view::draw(f, &state))?;
    let first_frame = started.elapsed();

    let (picker, image_note) = images::picker(options.images);
    state.image_mode = images::protocol_name(picker.protocol_type()).to_string();
    if picker.protocol_type() != ProtocolType::Halfblocks {
        state.font = Some(picker.font_size());
    }
    state.screen = term.size()?.into();
    let encoder = {
        let tx = tx.clone();
        images::spawn_encoder(picker, move |slot, encoded| {
            tx.send(Msg::Encoded { slot, encoded }).is_ok()
        })?
    };
    let _watcher = watch_experiment(&tx, &options, &mut state);
    spawn_signal_handlers(&tx);
    let _follower = follow_training(&tx, &training_roots, &mut state);
    state.push_log(format!(
        "first frame after {:.0} ms; images as {}",
        first_frame.as_secs_f64() * 1e3,
        state.image_mode
    ));
    if let Some(note) = image_note {
        state.push_log(note);
    }

    let mut runner = Runner {
        tx: tx.clone(),
        lab: None,
        models: ModelCache::default(),
    };
    let effects = state.start();
    runner.apply(&state, effects);
    let mut screen = Screen::new(term, &state);
    event_loop(&mut state, &mut runner, &mut rx, &mut screen, &encoder).await?;
    stop_lab(&mut state, &runner, &mut rx).await;
    Ok(())
}

/// Reloads come in as messages; a file that cannot be watched is an error in the log.
fn watch_experiment(
    tx: &UnboundedSender<Msg>,
    options: &Options,
    state: &mut State,
) -> Option<watch::Watcher> {
    let tx = tx.clone();
    match watch::watch(&options.experiment, move |r| {
        tx.send(Msg::Reloaded(r)).is_ok()
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            state.push_log(format!("error: cannot watch the experiment file: {e}"));
            None
        }
    }
}

/// New training-log records come in as messages, when the experiment names training runs.
fn follow_training(
    tx: &UnboundedSender<Msg>,
    roots: &[PathBuf],
    state: &mut State,
) -> Option<crate::metrics::Follower> {
    if roots.is_empty() {
        return None;
    }
    let tx = tx.clone();
    match training::follow(roots, move |update| tx.send(Msg::Training(update)).is_ok()) {
        Ok(f) => Some(f),
        Err(e) => {
            state.push_log(format!("error: cannot follow the training logs: {e}"));
            None
        }
    }
}

/// The terminal and what was last drawn on it: frames at most every [`FRAME_INTERVAL`], only when
/// something changed.
struct Screen {
    term: terminal::Term,
    requested: HashMap<ImageSlot, Requested>,
    dirty: bool,
    graphics: bool,
    overlay_drawn: bool,
    last_draw: Instant,
}

impl Screen {
    fn new(term: terminal::Term, state: &State) -> Self {
        Screen {
            term,
            requested: HashMap::new(),
            dirty: true,
            graphics: state.image_mode != images::protocol_name(ProtocolType::Halfblocks),
            overlay_drawn: false,
            last_draw: Instant::now() - FRAME_INTERVAL,
        }
    }

    fn draw(
        &mut self,
        state: &State,
        encoder: &std::sync::mpsc::Sender<images::Request>,
    ) -> anyhow::Result<Rect> {
        let overlay = view::overlay_shown(state);
        if self.graphics && self.overlay_drawn && !overlay {
            repaint(&mut self.term)?;
        }
        self.overlay_drawn = overlay;
        self.term.draw(|f| view::draw(f, state))?;
        self.last_draw = Instant::now();
        self.dirty = false;
        let size = self.term.size()?;
        let area = Rect::new(0, 0, size.width, size.height);
        request_images(state, area, encoder, &mut self.requested);
        Ok(area)
    }
}

/// Keys, messages and frames until the user quits or the terminal is gone.
async fn event_loop(
    state: &mut State,
    runner: &mut Runner,
    rx: &mut UnboundedReceiver<Msg>,
    screen: &mut Screen,
    encoder: &std::sync::mpsc::Sender<images::Request>,
) -> anyhow::Result<()> {
    let mut events = EventStream::new();
    let mut next_frame = tokio::time::Instant::now();
    while !state.quit {
        let next_draw = tokio::time::Instant::from_std(screen.last_draw + FRAME_INTERVAL);
        if state.playing.is_none() {
            next_frame = tokio::time::Instant::now() + state.frame_interval();
        }
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) => {
                    let effects = state.update(Msg::Key(key));
                    runner.apply(state, effects);
                    screen.dirty = true;
                }
                // The next draw picks the new size up.
                Some(Ok(Event::Resize(..))) => screen.dirty = true,
                Some(Ok(_)) => {}
                // The terminal is gone.
                Some(Err(_)) | None => break,
            },
            Some(msg) = rx.recv() => {
                let effects = state.update(msg);
                runner.apply(state, effects);
                screen.dirty = true;
            }
            _ = tokio::time::sleep_until(next_draw), if screen.dirty => {
                state.screen = screen.draw(state, encoder)?;
            }
            // Playing clips advance at the experiment's frame rate, and only then.
            _ = tokio::time::sleep_until(next_frame), if state.playing.is_some() => {
                state.update(Msg::NextFrame);
                next_frame += state.frame_interval();
                screen.dirty = true;
            }
        }
    }
    Ok(())
}

/// Lets a running lab stop before the process ends, so no cell is left half-written.
async fn stop_lab(state: &mut State, runner: &Runner, rx: &mut UnboundedReceiver<Msg>) {
    if !state.is_running() {
        return;
    }
    if let Some(lab) = &runner.lab {
        lab.cancel();
    }
    let deadline = tokio::time::Instant::now() + QUIT_WAIT;
    while state.is_running() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(msg @ Msg::Lab { .. })) => {
                state.update(msg);
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
}

/// Clears the screen and makes the next frame send every cell. Graphics under an overlay are gone
/// from the screen, but the diff sees the image cells unchanged and would not send them again. (A
/// resize to the same size does what `Terminal::clear` does without asking the terminal where its
/// cursor is, which would race the event stream for the answer.)
fn repaint(term: &mut terminal::Term) -> std::io::Result<()> {
    let area = term.size()?.into();
    term.resize(area)
}

/// What a slot was last encoded from: its images' version, the playing clips' frame, the tile's size.
type Requested = (u64, Option<usize>, (u16, u16));

/// Asks the encoder for every image the frame shows whose content or size changed.
fn request_images(
    state: &State,
    area: Rect,
    encoder: &std::sync::mpsc::Sender<images::Request>,
    requested: &mut HashMap<ImageSlot, Requested>,
) {
    for (slot, rect) in view::image_slots(state, area) {
        let Some(request) = tile_request(state, slot, rect) else {
            continue;
        };
        let wanted = (request.version, state.playing, request.size);
        if requested.get(&slot) == Some(&wanted) {
            continue;
        }
        requested.insert(slot, wanted);
        let _ = encoder.send(request);
    }
}

/// The encoding of one preview tile into `rect`; `None` while the cell has no images.
pub(crate) fn tile_request(state: &State, slot: ImageSlot, rect: Rect) -> Option<images::Request> {
    if let Some(at) = slot.training {
        return training_request(state, slot, at, rect);
    }
    if let Some(k) = slot.frame {
        return frame_request(state, slot, k, rect);
    }
    if slot.start {
        return start_request(state, slot, rect);
    }
    let item = state.lab.sample_shape.iter().product::<usize>();
    let sample = |cell: usize| {
        let c = state.lab.cells.get(cell)?;
        let s = c.images.get(slot.item * item..(slot.item + 1) * item)?;
        Some((c.version, s))
    };
    let (version, own) = sample(slot.cell)?;
    let (version, baseline) = match slot.diff {
        Some(b) => {
            let (v, s) = sample(b)?;
            (version.max(v), Some(Arc::new(s.to_vec())))
        }
        None => (version, None),
    };
    if rect.width == 0 || rect.height == 0 {
        return None;
    }
    let (own, shape) = shown_frame(state, own, state.lab.sample_shape);
    let baseline = baseline.map(|b| Arc::new(shown_frame(state, &b, state.lab.sample_shape).0));
    Some(images::Request {
        slot,
        version,
        size: (rect.width, rect.height),
        samples: Arc::new(own),
        shape,
        count: 1,
        columns: Some(1),
        baseline,
        log_image: None,
    })
}

/// A clip's strip of frames (C × H × F·W), or only the frame playing; an image as it is.
fn shown_frame(state: &State, strip: &[f32], shape: [usize; 3]) -> (Vec<f32>, [usize; 3]) {
    match state.playing {
        Some(k) if state.lab.frames > 1 => strip_frame(strip, shape, state.lab.frames, k),
        _ => (strip.to_vec(), shape),
    }
}

/// The encoding of a preview sample's start image.
fn start_request(state: &State, slot: ImageSlot, rect: Rect) -> Option<images::Request> {
    let starts = state.lab.starts.as_ref()?;
    let item = state.lab.sample_shape.iter().product::<usize>();
    let image = starts
        .images
        .get(slot.item * item..(slot.item + 1) * item)?;
    if rect.width == 0 || rect.height == 0 {
        return None;
    }
    Some(images::Request {
        slot,
        version: starts.version,
        size: (rect.width, rect.height),
        samples: Arc::new(image.to_vec()),
        shape: state.lab.sample_shape,
        count: 1,
        columns: Some(1),
        baseline: None,
        log_image: None,
    })
}

/// The encoding of a tile of an earlier step of the cell's run.
fn frame_request(state: &State, slot: ImageSlot, k: usize, rect: Rect) -> Option<images::Request> {
    let cell = state.lab.cells.get(slot.cell)?;
    let trajectory = match slot.noisy {
        true => &cell.noisy_trajectory,
        false => &cell.trajectory,
    };
    let sample = trajectory.sample(k, slot.item)?;
    if rect.width == 0 || rect.height == 0 {
        return None;
    }
    let (sample, shape) = shown_frame(state, &sample, trajectory.shape);
    Some(images::Request {
        slot,
        version: cell.version,
        size: (rect.width, rect.height),
        samples: Arc::new(sample),
        shape,
        count: 1,
        columns: Some(1),
        baseline: None,
        log_image: None,
    })
}

/// The encoding of a logged training image into `rect`.
fn training_request(
    state: &State,
    slot: ImageSlot,
    (tag, index): (usize, usize),
    rect: Rect,
) -> Option<images::Request> {
    let media = &state.training.media;
    let image = media.image(tag, index)?;
    if rect.width == 0 || rect.height == 0 {
        return None;
    }
    Some(images::Request {
        slot,
        version: media.version,
        size: (rect.width, rect.height),
        samples: Arc::new(Vec::new()),
        shape: [0, 0, 0],
        count: 1,
        columns: Some(1),
        baseline: None,
        log_image: Some(images::LogImageAt {
            log: image.log.clone(),
            format: image.format,
            source: image.source.clone(),
        }),
    })
}

/// Carries out effects: starts and cancels labs, saves grids.
struct Runner {
    tx: UnboundedSender<Msg>,
    lab: Option<CancelSwitch>,
    /// The networks one run loaded, for the next run on the same model (a save that changes samplers, steps,
    /// guidance, prompts or quality settings starts without loading them again).
    models: ModelCache,
}

impl Runner {
    fn apply(&mut self, state: &State, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::StartLab {
                    experiment,
                    force,
                    generation,
                } => {
                    let handle = lab::start(
                        *experiment,
                        RunOptions {
                            only: None,
                            force,
                            save_samples: false,
                            shard: None,
                            watch_shards: true,
                            models: Some(self.models.clone()),
                        },
                    );
                    self.lab = Some(handle.cancel_switch());
                    let tx = self.tx.clone();
                    // The lab's events are a std channel: a thread forwards them to the UI task.
                    let forwarded = std::thread::Builder::new()
                        .name("difflab-lab-events".into())
                        .spawn(move || {
                            for event in handle.events.iter() {
                                if tx
                                    .send(Msg::Lab {
                                        generation,
                                        event: Box::new(event),
                                    })
                                    .is_err()
                                {
                                    handle.cancel();
                                    break;
                                }
                            }
                            handle.join();
                        });
                    if let Err(e) = forwarded {
                        let event = lab::LabEvent::Finished {
                            cancelled: false,
                            error: Some(format!("cannot start the lab's event thread: {e}")),
                            model_calls: 0,
                            unbatched_model_calls: 0,
                            wall_s: 0.0,
                        };
                        let _ = self.tx.send(Msg::Lab {
                            generation,
                            event: Box::new(event),
                        });
                    }
                }
                Effect::CancelLab => {
                    if let Some(lab) = &self.lab {
                        lab.cancel();
                    }
                }
                Effect::SaveGrid => self.save_grid(state),
                Effect::SaveXy => self.save_xy(state),
            }
        }
    }

    /// Writes every finished cell's samples as one PNG: a row per cell, the same seed in each column.
    fn save_grid(&self, state: &State) {
        let Some(experiment) = &state.experiment else {
            return;
        };
        let rows: Vec<&crate::lab::progress::CellView> = state
            .lab
            .cells
            .iter()
            .filter(|c| c.result.as_ref().is_some_and(|r| !r.failed()) && !c.images.is_empty())
            .collect();
        let tx = self.tx.clone();
        if rows.is_empty() {
            let _ = tx.send(Msg::Saved(Err("no finished cells yet".into())));
            return;
        }
        // The start or control images first, as `difflab run` writes it.
        let starts = (state.lab.starts.as_ref())
            .map(|s| (s.kind.title().to_string(), s.images.as_ref().clone()));
        let columns: Vec<(String, Vec<f32>)> = (starts.into_iter())
            .chain(rows.iter().map(|c| (c.cell.name.clone(), c.images.clone())))
            .collect();
        let names = rows
            .iter()
            .map(|c| c.cell.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let shape = state.lab.sample_shape;
        let labels = rows[0].cell.preview_labels();
        let path = experiment.output_dir.join("comparison.png");
        std::thread::spawn(move || {
            let columns: Vec<lab::plots::Column> = columns
                .iter()
                .map(|(name, images)| lab::plots::Column { name, images })
                .collect();
            let result = lab::plots::comparison_grid(&columns, shape, &labels, &path)
                .map(|()| format!("{} (columns: {names})", path.display()))
                .map_err(|e| e.to_string());
            let _ = tx.send(Msg::Saved(result));
        });
    }
}

impl Runner {
    /// Writes the X/Y view's grid as `<output>/xy_grid.png`: its columns and rows, labelled; a
    /// combination the experiment lacks is left blank.
    fn save_xy(&self, state: &State) {
        let tx = self.tx.clone();
        let cells: Vec<&lab::Cell> = state.lab.cells.iter().map(|c| &c.cell).collect();
        let (Some(experiment), Some(grid)) = (&state.experiment, xy::grid(&cells, &state.xy))
        else {
            let _ = tx.send(Msg::Saved(Err("the X/Y grid needs two swept axes".into())));
            return;
        };
        let shape = state.lab.sample_shape;
        let item: usize = shape.iter().product();
        let sample = |t: Option<(usize, usize)>| -> Vec<f32> {
            t.and_then(|(c, i)| state.lab.cells[c].images.get(i * item..(i + 1) * item))
                .map_or_else(|| vec![0.0; item], <[f32]>::to_vec)
        };
        let columns: Vec<(String, Vec<f32>)> = (0..grid.columns.len())
            .map(|c| {
                let images = grid
                    .rows
                    .iter()
                    .enumerate()
                    .flat_map(|(r, _)| sample(grid.tiles[r][c]));
                (
                    format!("{} {}", grid.x.name(), grid.columns[c]),
                    images.collect(),
                )
            })
            .collect();
        let rows = grid.rows.clone();
        let path = experiment.output_dir.join("xy_grid.png");
        std::thread::spawn(move || {
            let columns: Vec<lab::plots::Column> = columns
                .iter()
                .map(|(name, images)| lab::plots::Column { name, images })
                .collect();
            let result = lab::plots::comparison_grid(&columns, shape, &rows, &path)
                .map(|()| format!("{} (the X/Y grid)", path.display()))
                .map_err(|e| e.to_string());
            let _ = tx.send(Msg::Saved(result));
        });
    }
}

fn spawn_signal_handlers(tx: &UnboundedSender<Msg>) {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::interrupt(), "SIGINT"),
    ] {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if stream.recv().await.is_some() {
                let _ = tx.send(Msg::Signal(name));
            }
        });
    }
}
