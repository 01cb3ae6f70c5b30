//! The dashboard's state and how each message changes it. `update` is plain code over plain data: it
//! never touches the terminal, the disk or a thread, and says what should happen next as [`Effect`]s.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::Rect;
use ratatui_image::protocol::Protocol;

use strum::VariantArray;

use super::keys::{Action, action_of};
use super::training::{Pane, TrainingState};

/// Lines the run overview scrolls by a page key.
const OVERVIEW_PAGE: u16 = 10;
use crate::experiment::{DEFAULT_FPS, Experiment};
use crate::lab::LabEvent;
use crate::lab::progress::{Change, Progress};
use crate::quality::{SolveError, solve_error};
use crate::tui::xy::XyChoice;

/// The views, in tab order: a new view is a variant here (its tab, digit key and help line follow) and an
/// arm in `view::draw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::VariantArray, strum::IntoStaticStr)]
pub enum View {
    Samplers,
    Training,
    Quality,
    #[strum(serialize = "X/Y")]
    Xy,
    Schedules,
}

impl View {
    pub fn title(self) -> &'static str {
        self.into()
    }

    pub fn index(self) -> usize {
        View::VARIANTS.iter().position(|v| *v == self).unwrap_or(0)
    }

    /// The view `by` tabs on (negative: back), wrapping around.
    fn step(self, by: isize) -> View {
        let n = View::VARIANTS.len() as isize;
        View::VARIANTS[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// Where the lab is.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Nothing started yet (or the experiment file is invalid).
    Idle,
    Running,
    /// Cancel asked for; waiting for the lab to stop.
    Cancelling,
    Finished {
        cancelled: bool,
        error: Option<String>,
        wall_s: f64,
        model_calls: usize,
        unbatched_model_calls: usize,
    },
}

/// One preview tile: a cell's preview sample `item`, encoded at `size` (columns, rows). Encodings stay
/// cached by slot, so paging and zooming back never encode a tile twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageSlot {
    pub cell: usize,
    pub item: usize,
    pub size: (u16, u16),
    /// The baseline cell whose sample this tile shows the difference from; `None`: the sample itself.
    pub diff: Option<usize>,
    /// A frame of the cell's trajectory (an earlier step) instead of its latest images.
    pub frame: Option<usize>,
    /// With a frame: the noisy samples x_t rather than the x0 prediction.
    pub noisy: bool,
    /// A logged training image instead: (image tag, image) in [`super::training_media::TrainingMedia`].
    pub training: Option<(usize, usize)>,
    /// The start image of preview sample `item` (img2img, inpainting) instead of a cell's sample.
    pub start: bool,
}

/// What the Samplers view's tiles show once a baseline cell is marked (`d` steps through them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    /// Each cell's own samples.
    #[default]
    Images,
    /// Each cell's difference from the baseline's sample of the same seed, as a heat map.
    Difference,
    /// The baseline's samples in every column, to flip back and forth with `d`.
    Flip,
}

/// An image encoded for the terminal at one size.
pub struct Encoded {
    pub version: u64,
    pub size: (u16, u16),
    pub protocol: Protocol,
}

/// Everything the dashboard shows.
pub struct State {
    pub experiment_path: PathBuf,
    /// The last experiment that loaded; it stays while the file is broken.
    pub experiment: Option<Experiment>,
    /// Why the file on disk does not load now.
    pub file_error: Option<String>,
    /// The current run's cells and providers, folded from its events.
    pub lab: Progress,
    pub run: RunState,
    /// The lab run whose events count; events of older runs are dropped.
    pub generation: u64,
    /// A run to start once the current one has stopped (force flag).
    pub pending_start: Option<bool>,
    pub view: View,
    pub selected: usize,
    pub focused: bool,
    /// The Samplers view's first grid row and column shown (prompts or samples, seeds).
    pub page: (usize, usize),
    /// The preview tiles' zoom (an index into the view's zoom steps); `None`: the largest that shows
    /// everything.
    pub zoom: Option<usize>,
    /// One terminal cell in pixels when images are graphics (sixel, kitty); `None` for half blocks.
    pub font: Option<(u16, u16)>,
    /// The cell (by key) the others are compared with, and how.
    pub baseline: Option<String>,
    pub compare: Compare,
    /// Each cell's preview samples against the baseline's (by cell index).
    pub baseline_errors: HashMap<usize, SolveError>,
    /// The focused cell's trajectory frame shown (`,` and `.` step through it); `None`: its latest images.
    pub scrub: Option<usize>,
    /// Whether stepping through the run shows x_t (`n`) rather than the x0 prediction.
    pub noisy: bool,
    /// A video model's clips playing (`f`): the frame shown; `None`: each clip as a strip of its frames.
    pub playing: Option<usize>,
    /// The X/Y view's axes and held values.
    pub xy: XyChoice,
    /// Which of the charted metrics the Quality view plots (`m` steps through them).
    pub quality_metric: usize,
    /// The terminal's size at the last frame: how far a page goes.
    pub screen: Rect,
    pub help: bool,
    pub log: VecDeque<String>,
    pub training: TrainingState,
    pub images: HashMap<ImageSlot, Encoded>,
    /// The image protocol in use ("halfblocks", "sixel", ...).
    pub image_mode: String,
    pub quit: bool,
}

/// What the dashboard asks its runner to do after a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start the lab on `experiment`; its events carry `generation`.
    StartLab {
        experiment: Box<Experiment>,
        force: bool,
        generation: u64,
    },
    CancelLab,
    /// Write the comparison grid of every finished cell.
    SaveGrid,
    /// Write the X/Y view's grid.
    SaveXy,
}

/// What arrives at the dashboard.
pub enum Msg {
    Key(KeyEvent),
    Resize,
    Lab {
        generation: u64,
        // Boxed: a finished cell's result is far larger than the other messages.
        event: Box<LabEvent>,
    },
    /// The experiment file changed on disk: the new experiment, or why it does not load.
    Reloaded(Result<Box<Experiment>, String>),
    Encoded {
        slot: ImageSlot,
        encoded: Encoded,
    },
    /// The comparison grid was written (where, and its rows) or not (why).
    Saved(Result<String, String>),
    Training(super::training::TrainingUpdate),
    /// SIGTERM, SIGHUP or SIGINT.
    Signal(&'static str),
    /// Time for the next frame of the playing clips.
    NextFrame,
}

const LOG_LINES: usize = 500;

impl State {
    pub fn new(
        experiment_path: PathBuf,
        loaded: Result<Experiment, String>,
        image_mode: &str,
    ) -> Self {
        let (experiment, file_error) = match loaded {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(e)),
        };
        let training = TrainingState::new(
            experiment
                .as_ref()
                .map_or(0, |e: &Experiment| e.training_runs.len()),
        );
        let mut state = State {
            experiment_path,
            experiment,
            file_error,
            lab: Progress::default(),
            run: RunState::Idle,
            generation: 0,
            pending_start: None,
            view: View::Samplers,
            selected: 0,
            focused: false,
            page: (0, 0),
            zoom: None,
            font: None,
            quality_metric: 0,
            xy: XyChoice::new(),
            scrub: None,
            noisy: false,
            playing: None,
            baseline: None,
            compare: Compare::Images,
            baseline_errors: HashMap::new(),
            screen: Rect::new(0, 0, 160, 48),
            help: false,
            log: VecDeque::new(),
            training,
            images: HashMap::new(),
            image_mode: image_mode.to_string(),
            quit: false,
        };
        if let Some(e) = &state.file_error {
            let e = e.clone();
            state.push_log(format!("error: {e}"));
        }
        state.log_warnings();
        state
    }

    /// The experiment's warnings in the log, as `difflab run` prints them.
    fn log_warnings(&mut self) {
        let warnings: Vec<String> = self
            .experiment
            .iter()
            .flat_map(|e| &e.warnings)
            .map(|w| format!("warning: {w}"))
            .collect();
        for w in warnings {
            self.push_log(w);
        }
    }

    pub fn push_log(&mut self, line: impl Into<String>) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line.into());
    }

    pub fn is_running(&self) -> bool {
        matches!(self.run, RunState::Running | RunState::Cancelling)
    }

    /// The effects of opening the dashboard: run the experiment (finished cells come back from disk).
    pub fn start(&mut self) -> Vec<Effect> {
        self.start_lab(false)
    }

    fn start_lab(&mut self, force: bool) -> Vec<Effect> {
        let Some(experiment) = self.experiment.clone() else {
            return Vec::new();
        };
        if self.is_running() {
            self.pending_start = Some(force || self.pending_start.unwrap_or(false));
            if self.run == RunState::Running {
                self.run = RunState::Cancelling;
                return vec![Effect::CancelLab];
            }
            return Vec::new();
        }
        self.generation += 1;
        self.run = RunState::Running;
        vec![Effect::StartLab {
            experiment: Box::new(experiment),
            force,
            generation: self.generation,
        }]
    }

    /// Moves the Samplers view a page of rows or seeds on (or back), as far as there are more.
    fn turn_page(&mut self, rows: isize, cols: isize) {
        if self.view == View::Xy {
            return self.turn_xy_page(rows, cols);
        }
        self.view = View::Samplers;
        let Some(page) = crate::tui::view::samplers_page(self, self.screen) else {
            return;
        };
        let step = |first: usize, shown: usize, total: usize, by: isize| {
            let last = total.saturating_sub(shown.max(1));
            first
                .min(last)
                .saturating_add_signed(by * shown.max(1) as isize)
                .min(last)
        };
        self.page.0 = step(page.rows.start, page.rows.len(), page.grid.rows, rows);
        self.page.1 = step(page.cols.start, page.cols.len(), page.grid.cols, cols);
    }

    /// The X/Y view's page of rows or columns on (or back).
    fn turn_xy_page(&mut self, rows: isize, cols: isize) {
        let Some(l) = crate::tui::view::xy_layout(self, self.screen) else {
            return;
        };
        let step = |shown: &std::ops::Range<usize>, total: usize, by: isize| {
            let last = total.saturating_sub(shown.len().max(1));
            (shown
                .start
                .saturating_add_signed(by * shown.len().max(1) as isize))
            .min(last)
        };
        self.xy.first = (
            step(&l.shown.0, l.grid.columns.len(), cols),
            step(&l.shown.1, l.grid.rows.len(), rows),
        );
    }

    /// One zoom step larger or smaller tiles, from what the view shows now; never below legible.
    fn zoom_by(&mut self, larger: bool) {
        self.view = View::Samplers;
        let now = crate::tui::view::samplers_page(self, self.screen).map_or(0, |p| p.zoom);
        let top = crate::tui::view::page::ZOOMS.len() - 1;
        self.zoom = Some(match larger {
            true => (now + 1).min(top),
            false => now.saturating_sub(1),
        });
    }

    /// Applies one message.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(key) => self.key(key),
            Msg::Resize => Vec::new(),
            Msg::Lab { generation, event } if generation == self.generation => self.lab(*event),
            Msg::Lab { .. } => Vec::new(),
            Msg::Reloaded(Ok(experiment)) => {
                self.file_error = None;
                self.push_log(format!("{} changed: rerunning", self.file_name()));
                self.training = TrainingState {
                    configured_runs: experiment.training_runs.len(),
                    ..std::mem::take(&mut self.training)
                };
                self.experiment = Some(*experiment);
                self.log_warnings();
                self.start_lab(false)
            }
            Msg::Reloaded(Err(e)) => {
                self.push_log(format!("error: {e}"));
                self.file_error = Some(e);
                Vec::new()
            }
            Msg::Encoded { slot, encoded } => {
                let current = match slot.training {
                    Some(_) => encoded.version >= self.training.media.version,
                    None => (self.lab.cells.get(slot.cell))
                        .is_some_and(|c| encoded.version >= c.first_version),
                };
                let newer = self
                    .images
                    .get(&slot)
                    .is_none_or(|old| old.version <= encoded.version);
                if current && newer {
                    self.images.insert(slot, encoded);
                }
                Vec::new()
            }
            Msg::Saved(Ok(what)) => {
                self.push_log(format!("saved {what}"));
                Vec::new()
            }
            Msg::Saved(Err(e)) => {
                self.push_log(format!("error: cannot save the grid: {e}"));
                Vec::new()
            }
            Msg::Training(update) => {
                for line in self.training.apply(update) {
                    self.push_log(line);
                }
                Vec::new()
            }
            Msg::NextFrame => {
                let frames = self.lab.frames.max(1);
                self.playing = self.playing.map(|k| (k + 1) % frames);
                Vec::new()
            }
            Msg::Signal(name) => {
                self.quit = true;
                self.push_log(format!("{name}: quitting"));
                if self.run == RunState::Running {
                    vec![Effect::CancelLab]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// How long each frame of the playing clips shows (`[model] fps`).
    pub fn frame_interval(&self) -> std::time::Duration {
        let fps = self
            .experiment
            .as_ref()
            .map_or(DEFAULT_FPS, |e| e.model.fps());
        std::time::Duration::from_secs_f64(1.0 / fps)
    }

    pub fn file_name(&self) -> String {
        self.experiment_path.display().to_string()
    }

    fn key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            if !matches!(key.code, KeyCode::Char('q')) {
                return Vec::new();
            }
        }
        if self.view == View::Training && !ctrl && self.training_key(key.code) {
            return Vec::new();
        }
        let Some(action) = action_of(&key) else {
            return Vec::new();
        };
        self.act(action)
    }

    fn act(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Quit => return self.quit(),
            Action::Help => self.help = true,
            Action::NextView => self.view = self.view.step(1),
            Action::PreviousView => self.view = self.view.step(-1),
            Action::ShowView(view) => self.view = view,
            Action::SelectPrevious => self.selected = self.selected.saturating_sub(1),
            Action::SelectNext if self.selected + 1 < self.lab.cells.len() => self.selected += 1,
            Action::SelectNext => {}
            Action::Focus => {
                self.view = View::Samplers;
                self.focused = !self.focused && !self.lab.cells.is_empty();
            }
            Action::Unfocus => {
                self.focused = false;
                self.scrub = None;
            }
            Action::StepBack if self.training_pane_shown(Pane::Images) => {
                self.training.media.earlier()
            }
            Action::StepForward if self.training_pane_shown(Pane::Images) => {
                self.training.media.later()
            }
            Action::StepBack | Action::StepForward => self.scrub_by(action == Action::StepForward),
            Action::Noisy => {
                self.noisy = !self.noisy;
                if self.scrub.is_none() {
                    self.scrub_by(false);
                }
            }
            Action::Play if self.lab.frames > 1 => {
                self.playing = match self.playing {
                    Some(_) => None,
                    None => Some(0),
                };
            }
            Action::Play => {
                self.push_log("f plays a video model's clips; this model's samples are images")
            }
            Action::RunOrCancel => {
                return match self.run {
                    RunState::Running => {
                        self.run = RunState::Cancelling;
                        self.pending_start = None;
                        self.push_log("cancelling…");
                        vec![Effect::CancelLab]
                    }
                    RunState::Cancelling => Vec::new(),
                    _ => self.start_lab(false),
                };
            }
            Action::Rerun => {
                self.push_log("rerunning every cell");
                return self.start_lab(true);
            }
            Action::SaveGrid if self.view == View::Xy => return vec![Effect::SaveXy],
            Action::SaveGrid => return vec![Effect::SaveGrid],
            Action::NextX | Action::NextY | Action::NextHeld => self.xy_key(action),
            Action::NextRows if self.training_pane_shown(Pane::Overview) => {
                self.training.overview_scroll += OVERVIEW_PAGE;
            }
            Action::PreviousRows if self.training_pane_shown(Pane::Overview) => {
                self.training.overview_scroll =
                    self.training.overview_scroll.saturating_sub(OVERVIEW_PAGE);
            }
            Action::NextRows => self.turn_page(1, 0),
            Action::PreviousRows => self.turn_page(-1, 0),
            Action::NextSeeds => self.turn_page(0, 1),
            Action::PreviousSeeds => self.turn_page(0, -1),
            Action::Baseline => self.toggle_baseline(),
            Action::Compare => {
                self.view = View::Samplers;
                self.compare = match self.compare {
                    Compare::Images => Compare::Difference,
                    Compare::Difference => Compare::Flip,
                    Compare::Flip => Compare::Images,
                };
            }
            Action::NextMetric => {
                self.view = View::Quality;
                self.quality_metric = self.quality_metric.wrapping_add(1);
            }
            Action::ZoomIn | Action::ZoomOut => self.zoom_by(action == Action::ZoomIn),
            Action::LogY => self.training.log_y = !self.training.log_y,
            Action::TimeAxis => self.training.x_time = !self.training.x_time,
            Action::Smoother => self.training.smoother(),
            Action::Rougher => self.training.rougher(),
            Action::NextTagPage => self.training.tag_page += 1,
            Action::PreviousTagPage => self.training.tag_page -= 1,
            Action::TrainingPane => {
                self.view = View::Training;
                self.training.pane = self.training.pane.next();
            }
        }
        Vec::new()
    }

    /// Whether the Training view shows `pane` (its image panels take `,` and `.`, its overview PgUp/PgDn).
    fn training_pane_shown(&self, pane: Pane) -> bool {
        self.view == View::Training && self.training.pane == pane
    }

    /// Keys of the Training view: typing a filter after `/`, and the run list (↑/↓, Space, `p`).
    /// Returns whether the key was used.
    fn training_key(&mut self, code: KeyCode) -> bool {
        let filter = &mut self.training.filter;
        if let Some(input) = &mut filter.input {
            match code {
                KeyCode::Char(c) => input.push(c),
                KeyCode::Backspace => {
                    input.pop();
                }
                KeyCode::Enter => {
                    filter.apply_input();
                    if let Some(e) = filter.error.clone() {
                        self.push_log(format!("training filter: {e}"));
                    }
                }
                KeyCode::Esc => filter.input = None,
                _ => return false,
            }
            return true;
        }
        let runs = self.training.runs();
        let filter = &mut self.training.filter;
        match code {
            KeyCode::Char('/') => filter.start_input(),
            KeyCode::Up => filter.move_cursor(-1, runs.len()),
            KeyCode::Down => filter.move_cursor(1, runs.len()),
            KeyCode::Char(' ') if !runs.is_empty() => filter.toggle(&runs),
            KeyCode::Char('p') => filter.pin(&runs),
            _ => return false,
        }
        true
    }

    fn quit(&mut self) -> Vec<Effect> {
        self.quit = true;
        if self.run == RunState::Running {
            vec![Effect::CancelLab]
        } else {
            Vec::new()
        }
    }

    fn lab(&mut self, event: LabEvent) -> Vec<Effect> {
        match self.lab.apply(event) {
            Change::Planned { providers_changed } => {
                self.selected = self.selected.min(self.lab.cells.len().saturating_sub(1));
                // Training images keep their encodings: a new plan changes none of them.
                self.images.retain(|slot, _| slot.training.is_some());
                if providers_changed {
                    self.push_log(format!("providers: {}", self.lab.providers_note));
                }
                if self.baseline.is_none() {
                    self.baseline = self.experiment_baseline();
                }
                self.compare_with_baseline();
            }
            Change::Log(line) => self.push_log(line),
            Change::Finished => return self.finished(),
            Change::Done(_) => self.compare_with_baseline(),
            Change::Rescored(_) => {}
            Change::Stepped(_) | Change::Loading | Change::Starts | Change::Nothing => {}
        }
        Vec::new()
    }

    /// The baseline's index among the planned cells.
    pub fn baseline_cell(&self) -> Option<usize> {
        let key = self.baseline.as_deref()?;
        self.lab.cells.iter().position(|c| c.cell.key == key)
    }

    /// Steps the focused cell's shown frame back or forward; past the last frame, the latest images.
    fn scrub_by(&mut self, forward: bool) {
        self.view = View::Samplers;
        let Some(cell) = self.lab.cells.get(self.selected) else {
            return;
        };
        self.focused = true;
        let frames = match self.noisy {
            true => &cell.noisy_trajectory.frames,
            false => &cell.trajectory.frames,
        };
        let last = frames.len().checked_sub(1);
        self.scrub = match (self.scrub, forward, last) {
            (_, _, None) => None,
            (None, false, Some(l)) => Some(l.saturating_sub(1)),
            (None, true, Some(_)) => None,
            (Some(k), false, _) => Some(k.saturating_sub(1)),
            (Some(k), true, Some(l)) if k < l => Some(k + 1),
            (Some(_), true, _) => None,
        };
    }

    /// `x`, `y` and `v` in the X/Y view: the next axis for x or y, the next held value.
    fn xy_key(&mut self, action: Action) {
        self.view = View::Xy;
        let cells: Vec<&crate::lab::Cell> = self.lab.cells.iter().map(|c| &c.cell).collect();
        let n = crate::tui::xy::swept(&cells).len().max(1);
        let shown = |choice: &XyChoice| crate::tui::xy::grid(&cells, choice).map(|g| (g.x, g.y));
        let before = shown(&self.xy);
        // Each press shows another axis (the grid skips axes that would leave it a diagonal).
        for _ in 0..n {
            match action {
                Action::NextX => self.xy.x = (self.xy.x + 1) % n,
                Action::NextY => self.xy.y = (self.xy.y + 1) % n,
                _ => return crate::tui::xy::next_held(&cells, &mut self.xy),
            }
            if shown(&self.xy) != before {
                break;
            }
        }
        self.xy.first = (0, 0);
    }

    /// The key of the cell the experiment names as its baseline (`[quality] baseline`).
    fn experiment_baseline(&self) -> Option<String> {
        let name = self
            .experiment
            .as_ref()?
            .quality
            .as_ref()?
            .baseline
            .as_deref()?;
        let cell = self.lab.cells.iter().find(|c| c.cell.name == name)?;
        Some(cell.cell.key.clone())
    }

    /// Marks the selected cell as the baseline, or unmarks it.
    fn toggle_baseline(&mut self) {
        self.view = View::Samplers;
        let Some(cell) = self.lab.cells.get(self.selected) else {
            return;
        };
        let key = cell.cell.key.clone();
        self.baseline = match self.baseline.as_deref() == Some(key.as_str()) {
            true => None,
            false => Some(key),
        };
        if self.baseline.is_some() && self.compare == Compare::Images {
            self.compare = Compare::Difference;
        }
        self.compare_with_baseline();
    }

    /// Recomputes every finished cell's error against the baseline's preview samples.
    fn compare_with_baseline(&mut self) {
        self.baseline_errors.clear();
        let Some(b) = self.baseline_cell() else {
            return;
        };
        let done = |i: usize| {
            let c = &self.lab.cells[i];
            (c.result.is_some() && !c.images.is_empty()).then_some(&c.images)
        };
        let Some(base) = done(b) else {
            return;
        };
        for i in 0..self.lab.cells.len() {
            if let Some(e) = done(i).and_then(|images| solve_error(images, base)) {
                self.baseline_errors.insert(i, e);
            }
        }
    }

    /// The run ended: say how, and start the one asked for meanwhile.
    fn finished(&mut self) -> Vec<Effect> {
        let Some(o) = self.lab.outcome.clone() else {
            return Vec::new();
        };
        if let Some(e) = &o.error {
            self.push_log(format!("error: {e}"));
        } else if o.cancelled {
            self.push_log("cancelled");
        } else if o.model_calls > 0 {
            self.push_log(format!(
                "done in {:.1} s: {} model calls for {} cell steps",
                o.wall_s, o.model_calls, o.unbatched_model_calls
            ));
        }
        self.run = RunState::Finished {
            cancelled: o.cancelled,
            error: o.error,
            wall_s: o.wall_s,
            model_calls: o.model_calls,
            unbatched_model_calls: o.unbatched_model_calls,
        };
        match self.pending_start.take() {
            Some(force) if !self.quit => self.start_lab(force),
            _ => Vec::new(),
        }
    }
}

pub fn item(shape: [usize; 3]) -> usize {
    shape.iter().product()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(steps: usize) -> Experiment {
        let text = format!(
            "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\n[sampling]\nseeds = 2\n[[sampler]]\nname = \"ddim\"\nsteps = {steps}\n"
        );
        Experiment::parse(std::path::Path::new("lab.toml"), &text).unwrap()
    }

    fn press(state: &mut State, code: KeyCode) -> Vec<Effect> {
        state.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn finished(generation: u64, cancelled: bool) -> Msg {
        Msg::Lab {
            generation,
            event: Box::new(LabEvent::Finished {
                cancelled,
                error: None,
                model_calls: 1,
                unbatched_model_calls: 1,
                wall_s: 0.1,
            }),
        }
    }

    #[test]
    fn the_experiments_warnings_reach_the_log_on_open_and_on_reload() {
        let text = "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\n[[sampler]]\nname = \"ddim\"\nsteps = 5\nsettings = { etta = 1 }\n";
        let warned = Experiment::parse(std::path::Path::new("lab.toml"), text).unwrap();
        let mut s = State::new("lab.toml".into(), Ok(warned.clone()), "halfblocks");
        let line = "warning: lab.toml:7:12: `sampler[0].settings`: unknown key `etta` ignored (DDIMScheduler does not use it)";
        assert_eq!(
            s.log.iter().filter(|l| *l == line).count(),
            1,
            "{:?}",
            s.log
        );
        s.update(Msg::Reloaded(Ok(Box::new(warned))));
        assert_eq!(
            s.log.iter().filter(|l| *l == line).count(),
            2,
            "{:?}",
            s.log
        );
    }

    #[test]
    fn space_runs_and_cancels() {
        let mut s = State::new("lab.toml".into(), Ok(experiment(5)), "halfblocks");
        let start = s.start();
        assert!(matches!(
            start[..],
            [Effect::StartLab {
                force: false,
                generation: 1,
                ..
            }]
        ));
        assert_eq!(press(&mut s, KeyCode::Char(' ')), vec![Effect::CancelLab]);
        assert_eq!(s.run, RunState::Cancelling);
        s.update(finished(1, true));
        assert!(!s.is_running());
        let again = press(&mut s, KeyCode::Char(' '));
        assert!(matches!(
            again[..],
            [Effect::StartLab { generation: 2, .. }]
        ));
    }

    #[test]
    fn a_reload_while_running_cancels_then_starts_the_new_experiment() {
        let mut s = State::new("lab.toml".into(), Ok(experiment(5)), "halfblocks");
        s.start();
        let effects = s.update(Msg::Reloaded(Ok(Box::new(experiment(7)))));
        assert_eq!(effects, vec![Effect::CancelLab]);
        // Events of the old run still count until it reports its end; then the new run starts.
        let next = s.update(finished(1, true));
        match &next[..] {
            [
                Effect::StartLab {
                    experiment,
                    generation: 2,
                    force: false,
                },
            ] => assert_eq!(experiment.samplers[0].steps, vec![7]),
            other => panic!("{other:?}"),
        }
        // A late event from the first run is ignored.
        s.update(finished(1, false));
        assert_eq!(s.run, RunState::Running);
    }

    #[test]
    fn a_broken_file_keeps_the_last_experiment() {
        let mut s = State::new("lab.toml".into(), Ok(experiment(5)), "halfblocks");
        s.start();
        let effects = s.update(Msg::Reloaded(Err("lab.toml:8:9: `steps`: bad".into())));
        assert!(effects.is_empty());
        assert_eq!(s.experiment.as_ref().unwrap().samplers[0].steps, vec![5]);
        assert_eq!(s.file_error.as_deref(), Some("lab.toml:8:9: `steps`: bad"));
        s.update(Msg::Reloaded(Ok(Box::new(experiment(6)))));
        assert_eq!(s.file_error, None);
    }

    #[test]
    fn quit_cancels_a_running_lab() {
        let mut s = State::new("lab.toml".into(), Ok(experiment(5)), "halfblocks");
        s.start();
        assert_eq!(press(&mut s, KeyCode::Char('q')), vec![Effect::CancelLab]);
        assert!(s.quit);
    }
}
