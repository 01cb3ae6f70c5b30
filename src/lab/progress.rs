//! The lab's event stream folded into what a run looks like now: every cell's steps, samples, preview
//! images and result, and how the run ended. `difflab run` and the dashboard both read a run through
//! this one fold.

use super::events::LabEvent;
use super::plan::Cell;
use super::results::CellResult;
use super::trajectory::Trajectory;

/// One cell as its events report it.
#[derive(Debug, Clone)]
pub struct CellView {
    pub cell: Cell,
    /// Steps taken by the lane shown, and the cell's step count.
    pub step: usize,
    pub steps: usize,
    pub samples_done: usize,
    pub samples_total: usize,
    /// The preview seeds' images, (C, H, W) each: the x0 prediction while it runs, the samples after.
    pub images: Vec<f32>,
    pub result: Option<CellResult>,
    pub cached: bool,
    /// A sharded run being watched: shards that finished this cell, of all.
    pub shards: Option<(usize, usize)>,
    /// A new value from the run's counter whenever `images` changes, so stale encodings are noticed.
    pub version: u64,
    /// Encodings older than this belong to whatever was in this column before.
    pub first_version: u64,
    /// The preview samples at each step (the x0 prediction), for stepping back through the run.
    pub trajectory: Trajectory,
    /// The same for the noisy samples x_t.
    pub noisy_trajectory: Trajectory,
}

impl CellView {
    pub fn new(cell: Cell) -> Self {
        CellView {
            steps: cell.steps,
            step: 0,
            samples_done: 0,
            samples_total: cell.samples(),
            images: Vec::new(),
            result: None,
            shards: None,
            cached: false,
            version: 0,
            first_version: 0,
            trajectory: Trajectory::default(),
            noisy_trajectory: Trajectory::default(),
            cell,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub cancelled: bool,
    pub error: Option<String>,
    pub model_calls: usize,
    pub unbatched_model_calls: usize,
    pub wall_s: f64,
}

/// A run as its events so far describe it.
#[derive(Debug)]
pub struct Progress {
    pub cells: Vec<CellView>,
    /// One sample's C, H, W as displayed (a clip: a strip of its frames, C × H × F·W).
    pub sample_shape: [usize; 3],
    /// Frames per sample: 1 for images.
    pub frames: usize,
    pub provider: String,
    pub providers_note: String,
    /// The providers that did not run, in a few words, for a status line.
    pub providers_summary: String,
    /// The network being loaded, until the run is planned ("loading unet (3.4 GB)…").
    pub loading: Option<String>,
    pub outcome: Option<Outcome>,
    /// Source of image versions: every change of any cell's images gets a new one.
    pub image_counter: u64,
    /// Whether each cell keeps its preview samples at every step ([`CellView::trajectory`]).
    pub trajectories: bool,
    /// The start image of each preview sample, when the run starts from images, and whether masks tint them.
    pub starts: Option<StartTiles>,
}

/// What the dashboard shows beside the previews of a run that starts from images.
#[derive(Debug, Clone, PartialEq)]
pub struct StartTiles {
    /// One image per preview sample, in display space.
    pub images: std::sync::Arc<Vec<f32>>,
    pub kind: super::events::ImageKind,
    pub version: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            cells: Vec::new(),
            sample_shape: [1, 1, 1],
            frames: 1,
            provider: String::new(),
            providers_note: String::new(),
            providers_summary: String::new(),
            loading: None,
            outcome: None,
            image_counter: 0,
            trajectories: true,
            starts: None,
        }
    }
}

/// What an event changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The cells are (re)planned; `providers_changed` when the providers' note differs from before.
    Planned {
        providers_changed: bool,
    },
    /// A cell stepped (or, for a watched sharded run, gained samples).
    Stepped(usize),
    /// A cell finished (or was reused).
    Done(usize),
    /// A finished cell's result gained scores.
    Rescored(usize),
    /// The start images of the run's previews arrived.
    Starts,
    Loading,
    Log(String),
    Finished,
    /// An event for a cell that is not planned.
    Nothing,
}

impl Progress {
    /// Folds one event in and says what changed.
    pub fn apply(&mut self, event: LabEvent) -> Change {
        match event {
            LabEvent::Planned {
                cells,
                sample_shape,
                frames,
                provider,
                providers_note,
                providers_summary,
            } => {
                self.loading = None;
                self.starts = None;
                self.plan(cells);
                self.sample_shape = sample_shape;
                self.frames = frames;
                self.provider = provider;
                let providers_changed = providers_note != self.providers_note;
                self.providers_note = providers_note;
                self.providers_summary = providers_summary;
                Change::Planned { providers_changed }
            }
            LabEvent::Progress {
                cell,
                step,
                steps,
                samples_done,
                samples_total,
                preview,
                noisy,
            } => self.stepped(
                cell,
                [step, steps, samples_done, samples_total],
                preview,
                noisy,
            ),
            LabEvent::CellDone {
                cell,
                result,
                images,
                cached,
            } => self.done(cell, *result, images, cached),
            LabEvent::Rescored { cell, result } => match self.cells.get_mut(cell) {
                Some(c) => {
                    c.result = Some(*result);
                    Change::Rescored(cell)
                }
                None => Change::Nothing,
            },
            LabEvent::ShardProgress {
                cell,
                samples_done,
                samples_total,
                shards_done,
                shards,
            } => match self.cells.get_mut(cell) {
                Some(c) => {
                    c.samples_done = samples_done;
                    c.samples_total = samples_total;
                    c.shards = Some((shards_done, shards));
                    Change::Stepped(cell)
                }
                None => Change::Nothing,
            },
            LabEvent::StartImages { images, kind } => {
                self.image_counter += 1;
                self.starts = Some(StartTiles {
                    images: std::sync::Arc::new(images),
                    kind,
                    version: self.image_counter,
                });
                Change::Starts
            }
            LabEvent::Loading(what) => {
                self.loading = Some(what);
                Change::Loading
            }
            LabEvent::Log(line) => Change::Log(line),
            LabEvent::Finished {
                cancelled,
                error,
                model_calls,
                unbatched_model_calls,
                wall_s,
            } => {
                self.loading = None;
                self.outcome = Some(Outcome {
                    cancelled,
                    error,
                    model_calls,
                    unbatched_model_calls,
                    wall_s,
                });
                Change::Finished
            }
        }
    }

    /// The new plan's cells; a cell that is still there keeps what the previous run showed until it
    /// reports.
    fn plan(&mut self, cells: Vec<Cell>) {
        let old = std::mem::take(&mut self.cells);
        self.image_counter += 1;
        let version = self.image_counter;
        self.cells = cells
            .into_iter()
            .map(|cell| {
                let mut view = CellView::new(cell);
                if let Some(prev) = old.iter().find(|o| o.cell.key == view.cell.key) {
                    view.images = prev.images.clone();
                    view.result = prev.result.clone();
                    view.step = prev.step;
                }
                view.version = version;
                view.first_version = version;
                view
            })
            .collect();
        self.outcome = None;
    }

    /// A lane's step: `counts` are step, steps, samples done and samples in all; `preview` the x0
    /// prediction of the preview samples in the lane, `noisy` their x_t.
    fn stepped(
        &mut self,
        cell: usize,
        counts: [usize; 4],
        preview: Option<Vec<f32>>,
        noisy: Option<Vec<f32>>,
    ) -> Change {
        let item = self.sample_shape.iter().product::<usize>();
        let Some(c) = self.cells.get_mut(cell) else {
            return Change::Nothing;
        };
        [c.step, c.steps, c.samples_done, c.samples_total] = counts;
        c.result = None;
        c.cached = false;
        if let (Some(x), true) = (noisy, self.trajectories) {
            let (shape, first) = (self.sample_shape, c.samples_done);
            (c.noisy_trajectory).record(c.step, c.steps, first, &x, shape, c.cell.preview);
        }
        if let Some(p) = preview {
            let shape = self.sample_shape;
            if self.trajectories {
                (c.trajectory).record(c.step, c.steps, c.samples_done, &p, shape, c.cell.preview);
            }
            let len = c.cell.preview * item;
            if c.images.len() != len {
                c.images = vec![0.0; len];
            }
            let at = (c.samples_done * item).min(len);
            let end = (at + p.len()).min(len);
            c.images[at..end].copy_from_slice(&p[..end - at]);
            self.image_counter += 1;
            c.version = self.image_counter;
        }
        Change::Stepped(cell)
    }

    fn done(&mut self, cell: usize, result: CellResult, images: Vec<f32>, cached: bool) -> Change {
        let Some(c) = self.cells.get_mut(cell) else {
            return Change::Nothing;
        };
        c.step = c.steps;
        c.samples_done = c.samples_total;
        c.cached = cached;
        if !images.is_empty() {
            let shape = self.sample_shape;
            if self.trajectories {
                (c.trajectory).record(c.steps, c.steps, 0, &images, shape, c.cell.preview);
            }
            c.images = images;
        }
        self.image_counter += 1;
        c.version = self.image_counter;
        c.result = Some(result);
        Change::Done(cell)
    }
}
