//! What a running lab tells its caller ([`LabEvent`]), how a run is asked for ([`RunOptions`]), and the
//! handle of a run on its own thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;

use super::model_cache::ModelCache;
use super::plan::Cell;
use super::results::CellResult;
use super::runner::run;
use super::shard::Shard;
use crate::experiment::Experiment;

/// What the lab tells its caller, in order.
#[derive(Debug, Clone)]
pub enum LabEvent {
    /// The cells about to run (or be reused), and where the model runs.
    Planned {
        cells: Vec<Cell>,
        /// One image's C, H, W as previews and finished samples come (decoded, for latent models); a video
        /// model's clip comes as a strip of its frames left to right, C × H × F·W.
        sample_shape: [usize; 3],
        /// Frames per sample: 1 for images.
        frames: usize,
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
        /// The preview samples' noisy state x_t after the step (display space), where it can be shown
        /// without a VAE decode.
        noisy: Option<Vec<f32>>,
    },
    /// A finished cell's result again, with scores added once every cell was done (the difference from
    /// the baseline cell).
    Rescored {
        cell: usize,
        result: Box<CellResult>,
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
    /// The start image of each preview sample (img2img and inpainting), in display space like the previews;
    /// `kind` says what they are: start images (a mask's region tinted) or ControlNet control images.
    StartImages { images: Vec<f32>, kind: ImageKind },
    /// A network's load is starting ("loading unet (3.4 GB)…"): what a status line shows until `Planned`.
    Loading(String),
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

/// What the images a run's samples start from or follow are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// img2img's start images.
    Start,
    /// Inpainting's start images, the region each mask repaints tinted.
    StartMasked,
    /// A ControlNet's control images.
    Control,
}

impl ImageKind {
    /// What a column of these images is headed.
    pub fn title(self) -> &'static str {
        match self {
            ImageKind::Start => "start",
            ImageKind::StartMasked => "start · mask",
            ImageKind::Control => "control",
        }
    }
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
    /// Networks kept loaded between runs: taken when unchanged, handed back at the end.
    pub models: Option<ModelCache>,
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
