//! The lockstep batch: every pending cell's lanes step together, one model call per step for all of them;
//! each finished lane's samples go into its cell, and a complete cell is finished and reported at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use super::cell_output::CellOutput;
use super::events::LabEvent;
use super::finish::{CellState, Finish};
use super::guidance::{MethodCall, guide, guide_method};
use super::lane_step::{Halt, advance, model_input};
use super::plan::{Cell, ControlSettings, Item};
use super::reference::{self, Solution};
use super::results::{CellResult, Results};
use super::runner::Stop;
use super::scoring::Quality;
use super::shard_watch::ProgressWriter;
use super::start_images::{ControlImages, Inpaint, LaneStart, StartDraws, StartImages};
use crate::engine::Denoiser;
use crate::guidance::Guide;
use crate::sampler::torch_noise::torch_randn;
use crate::sampler::ve_form::call_sigma;
use crate::sampler::{NoiseSchedule, PredictionType, Scheduler, SeededNoise, begin_call};

/// One batch of one cell, stepping through its schedule.
pub(super) struct Lane {
    pub(super) cell: usize,
    pub(super) scheduler: Box<dyn Scheduler>,
    pub(super) x: Vec<f32>,
    pub(super) x0: Vec<f32>,
    pub(super) noise: SeededNoise,
    /// Index of this lane's first sample within the cell.
    pub(super) first: usize,
    pub(super) items: usize,
    /// The condition-table row of each sample, and the unconditional row when the cell guides.
    pub(super) rows: Vec<usize>,
    pub(super) uncond: Option<usize>,
    /// The empty prompt's row when the lane's guidance method takes its prediction too.
    pub(super) empty: Option<usize>,
    /// The classifier-free guidance scale (1 for a model that embeds guidance).
    pub(super) guidance: f32,
    pub(super) guidance_rescale: f32,
    /// The guidance scale fed to a model that embeds it (guidance-distilled FLUX).
    pub(super) embedded_guidance: f32,
    /// A guidance method other than plain CFG, with this lane's state (APG's momentum), and whether it guides
    /// denoised predictions.
    pub(super) method: Option<(Box<dyn Guide + Send>, bool)>,
    pub(super) prediction: PredictionType,
    /// The noise schedule, for the σ of samplers that step through timesteps only.
    pub(super) schedule: NoiseSchedule,
    pub(super) step: usize,
    /// The call it started at: 0, or where img2img's strength cuts in.
    pub(super) begin: usize,
    /// Inpainting: what each step blends the known region from (a plain U-Net).
    pub(super) inpaint: Option<Inpaint>,
    /// An inpainting U-Net's mask and masked-image latents, fed beside each sample.
    pub(super) concat: Option<Vec<f32>>,
    /// A ControlNet model's control images of each item (one per ControlNet), and the cell's scales and windows.
    pub(super) control: Option<(Vec<f32>, ControlSettings)>,
    /// The model calls of this lane counted so far (an adaptive sampler's grow as it runs).
    pub(super) counted: usize,
}

/// The pending cells of a run and their lanes, stepped together.
pub(super) struct Batch<'a> {
    pub(super) cells: &'a [Cell],
    /// Indices into `cells` of the cells that run; `states` and `Lane::cell` index this.
    pub(super) pending: Vec<usize>,
    pub(super) states: Vec<CellState>,
    pub(super) lanes: Vec<Lane>,
    pub(super) per_lane: usize,
    /// Values in one sample.
    pub(super) item: usize,
    pub(super) quality: Option<Quality<'a>>,
    /// Initial noise from `init_noise`, one sample per seed index.
    pub(super) init_noise: Option<Vec<f32>>,
    /// `noise = "torch"`: seed k's initial noise is `torch.randn` under `manual_seed(k)`.
    pub(super) torch_noise: bool,
    /// img2img's encoded start images, when the run has them.
    pub(super) start: Option<StartImages>,
    /// Input channels the model takes beside each sample (an inpainting U-Net's 5), 0 for most.
    pub(super) extra_channels: usize,
    /// The run's control images, and how many ControlNets the model holds.
    pub(super) control: Option<ControlImages>,
    pub(super) controlnets: usize,
    /// The unconditional condition-table row, for guided cells.
    pub(super) uncond: Option<usize>,
    /// The empty prompt's row, for the guidance methods that take its prediction (Perp-Neg).
    pub(super) empty: Option<usize>,
    /// The model takes each item's guidance scale as an input: cells' guidance goes there, not into
    /// classifier-free guidance.
    pub(super) embedded_guidance: bool,
    pub(super) ctx: Finish<'a>,
    /// The run's reference solves and those finished (or read back), by index.
    pub(super) references: &'a [Cell],
    pub(super) solutions: Vec<Option<Solution>>,
    /// The cells running now are reference solves: kept for comparison, not results.
    pub(super) solving: bool,
    pub(super) results: Results,
    /// A shard's progress file, for whoever watches the sharded run.
    pub(super) progress_file: Option<ProgressWriter>,
    pub(super) tx: &'a Sender<LabEvent>,
}

impl<'a> Batch<'a> {
    /// Makes `pending` (indices into `cells`) the cells to run next.
    pub(super) fn begin(
        &mut self,
        cells: &'a [Cell],
        pending: Vec<usize>,
        solving: bool,
    ) -> Result<(), Stop> {
        self.per_lane = (self.ctx.batch / pending.len().max(1)).max(1);
        // Before anything is allocated or a samples file created.
        self.check_memory(cells, &pending, solving)?;
        let mut states = Vec::with_capacity(pending.len());
        for &c in &pending {
            let cell = &cells[c];
            let state = match solving {
                true => CellState::new(
                    cell,
                    cell.samples(),
                    self.item,
                    CellOutput::new(0, None, None),
                ),
                false => {
                    let solution = cell
                        .reference_in(self.references)
                        .and_then(|r| self.solutions[r].as_ref());
                    let output = self.ctx.output_for(cell, solution)?;
                    CellState::new(cell, 0, self.item, output)
                }
            };
            states.push(state);
        }
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
    pub(super) fn drive(
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
    pub(super) fn load_solutions(&mut self, needed: &[usize]) -> Result<Vec<usize>, Stop> {
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
            let mut scheduler = cell.config.build();
            scheduler.set_steps(cell.steps)?;
            // A sampler whose calls depend on the sample (DPM adaptive) runs each sample alone, so that
            // a sample never depends on its batch.
            let per_lane = match scheduler.calls_depend_on_sample() {
                true => 1,
                false => self.per_lane,
            };
            let first = state.next_first;
            let items = &cell.items[first..(first + per_lane).min(cell.samples())];
            state.next_first += items.len();
            let items = items.to_vec();
            let noise = SeededNoise::new(items.iter().map(|i| i.seed).collect());
            // A model that embeds guidance takes the cell's scale as its input, one prediction per item.
            // Its classifier-free guidance is then FLUX's true CFG.
            let (cfg, embedded) = match self.embedded_guidance {
                true => (cell.true_cfg_scale as f32, cell.guidance as f32),
                false => (cell.guidance as f32, 1.0),
            };
            // The CFG++ samplers take the unconditional prediction even at scale 1.
            let guided = cfg != 1.0 || scheduler.takes_uncond();
            // A pipeline draws its steps' noise from the generator of its initial noise; img2img's start
            // draws keep their own order (start_noised).
            let mut noise =
                match self.torch_noise && self.init_noise.is_none() && cell.strength.is_none() {
                    true => noise.with_torch_steps(self.item),
                    false => noise,
                };
            let (start, begin) = match cell.strength {
                Some(strength) => {
                    self.start_noised(&mut *scheduler, cell, strength, &noise, &items)?
                }
                None => {
                    let x = self.initial_noise(&noise, &items, scheduler.init_noise_sigma());
                    let start = LaneStart {
                        x,
                        inpaint: None,
                        concat: None,
                    };
                    (start, 0)
                }
            };
            let LaneStart {
                mut x,
                inpaint,
                concat,
            } = start;
            let control = match (self.controlnets, &cell.control, &self.control) {
                (0, _, _) => None,
                (_, Some(settings), Some(images)) => Some((images.of(&items), settings.clone())),
                _ => {
                    return Err(Stop::Error(format!(
                        "{}: the model holds a ControlNet: give [conditioning] control_image",
                        cell.name
                    )));
                }
            };
            if self.extra_channels > 0 && concat.is_none() {
                return Err(Stop::Error(format!(
                    "{}: the model is an inpainting U-Net ({} input channels beside the sample's: the mask and the \
                     masked image's latents); give [conditioning] init_image and mask, and each sampler a strength",
                    cell.name, self.extra_channels
                )));
            }
            scheduler.prepare(&mut x, &mut noise);
            let nfe = scheduler.timesteps().len() - begin;
            let state = &mut self.states[slot];
            state.nfe = match first {
                0 => nfe,
                _ => state.nfe.max(nfe),
            };
            self.lanes.push(Lane {
                cell: slot,
                x,
                x0: vec![0.0; items.len() * self.item],
                scheduler,
                noise,
                first,
                items: items.len(),
                rows: items.iter().map(|i| i.condition).collect(),
                uncond: if guided { self.uncond } else { None },
                empty: match guided && cell.guidance_method.name.needs_empty() {
                    true => self.empty,
                    false => None,
                },
                guidance: cfg,
                guidance_rescale: cell.guidance_rescale as f32,
                embedded_guidance: embedded,
                step: begin,
                begin,
                inpaint,
                concat,
                control,
                counted: nfe + begin,
                method: (!cell.guidance_method.is_plain()).then(|| {
                    (
                        cell.guidance_method.build(),
                        cell.guidance_method.name.on_denoised(),
                    )
                }),
                prediction: cell.config.prediction_type(),
                schedule: NoiseSchedule::new(cell.config.schedule()),
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

    /// An img2img lane's first sample and the call it starts at: its start images' latents noised to where
    /// the strength cuts into the cell's schedule (checked possible when the experiment was read); inpainting at
    /// strength 1 starts from pure noise, as the inpainting pipelines do.
    fn start_noised(
        &self,
        scheduler: &mut dyn Scheduler,
        cell: &Cell,
        strength: f64,
        noise: &SeededNoise,
        items: &[Item],
    ) -> Result<(LaneStart, usize), Stop> {
        let start = self
            .start
            .as_ref()
            .ok_or_else(|| Stop::Error(format!("{}: a strength but no start images", cell.name)))?;
        let begin = begin_call(cell.steps, strength, scheduler.calls_per_step());
        let noising = begin.and_then(|b| scheduler.start_at(b));
        let (Some(begin), Some(noising)) = (begin, noising) else {
            let why = format!(
                "{}: cannot start part-way at strength {strength}",
                cell.name
            );
            return Err(Stop::Error(why));
        };
        let draws = match self.torch_noise && self.init_noise.is_none() {
            true => StartDraws::Torch,
            false => StartDraws::Given {
                noise: self.initial_noise(noise, items, 1.0),
                encoder: noise.encoder_noise(self.item),
                masked: noise.masked_encoder_noise(self.item),
            },
        };
        let noising = match start.masks.is_empty() || strength < 1.0 {
            true => Some(noising),
            false => None,
        };
        let sigma = scheduler.init_noise_sigma();
        Ok((start.start(items, noising, sigma, draws), begin))
    }

    /// The shared model call's inputs, timesteps, condition rows and embedded guidance scales: every lane's
    /// samples, a guided lane's twice (unconditional, then conditional, as diffusers batches them).
    fn model_batch(&self) -> (Vec<f32>, Vec<f64>, Vec<usize>, Vec<f32>) {
        let (mut inputs, mut timesteps, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        let mut guidance = Vec::new();
        for lane in &self.lanes {
            let t = lane.scheduler.timesteps()[lane.step];
            let calls = lane.calls_per_step();
            if let Some(uncond) = lane.uncond {
                lane.push_input(self.item, &mut inputs);
                timesteps.extend(std::iter::repeat_n(t, lane.items));
                rows.extend(std::iter::repeat_n(uncond, lane.items));
            }
            lane.push_input(self.item, &mut inputs);
            timesteps.extend(std::iter::repeat_n(t, lane.items));
            rows.extend_from_slice(&lane.rows);
            if let Some(empty) = lane.empty {
                lane.push_input(self.item, &mut inputs);
                timesteps.extend(std::iter::repeat_n(t, lane.items));
                rows.extend(std::iter::repeat_n(empty, lane.items));
            }
            guidance.extend(std::iter::repeat_n(
                lane.embedded_guidance,
                calls * lane.items,
            ));
        }
        (inputs, timesteps, rows, guidance)
    }

    /// The control images and ControlNet scales of every item of the shared call, in its order, one per
    /// ControlNet each (each of a lane's predictions takes the same).
    fn control_batch(&self) -> (Vec<f32>, Vec<f32>) {
        let (mut images, mut scales) = (Vec::new(), Vec::new());
        for lane in &self.lanes {
            let Some((per_item, settings)) = &lane.control else {
                continue;
            };
            let calls = lane.scheduler.timesteps().len() - lane.begin;
            let at: Vec<f32> = (settings.0.iter())
                .map(|u| u.scale_at(lane.step - lane.begin, calls))
                .collect();
            for _ in 0..lane.calls_per_step() {
                images.extend_from_slice(per_item);
                for _ in 0..lane.items {
                    scales.extend_from_slice(&at);
                }
            }
        }
        (images, scales)
    }

    /// One shared model call for every lane (a guided lane's samples twice: unconditional, then conditional,
    /// as diffusers batches them), then each lane's sampler step. A lane whose model output is not finite
    /// fails its cell; the other cells go on.
    fn step(
        &mut self,
        denoiser: &mut dyn Denoiser,
        calls: &mut (usize, usize),
    ) -> Result<(), Stop> {
        let (inputs, timesteps, rows, guidance) = self.model_batch();
        // One prediction of a sample's size per item (an inpainting U-Net's input is larger).
        let mut outputs = vec![0.0; timesteps.len() * self.item];
        let call = Instant::now();
        let runs_before = denoiser.runs();
        if self.embedded_guidance {
            denoiser.set_guidance(&guidance);
        }
        if self.controlnets > 0 {
            let (images, scales) = self.control_batch();
            denoiser.set_control(&images, &scales);
        }
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
            let calls_of_lane = lane.calls_per_step();
            let output = if lane.uncond.is_some() {
                let (u, rest) = outputs[offset..offset + calls_of_lane * len].split_at(len);
                let (c, e) = rest.split_at(len);
                let empty = lane.empty.map(|_| &e[..len]);
                if lane.scheduler.takes_uncond() {
                    lane.scheduler.set_uncond(u);
                }
                guided.resize(len, 0.0);
                match lane.method.as_mut() {
                    None => guide(
                        u,
                        c,
                        lane.guidance,
                        lane.guidance_rescale,
                        self.item,
                        &mut guided,
                    ),
                    Some((method, on_denoised)) => {
                        let mut input = Vec::with_capacity(len);
                        model_input(&*lane.scheduler, &lane.x, &mut input);
                        let call = MethodCall {
                            uncond: u,
                            cond: c,
                            empty,
                            input: &input,
                            sigma: call_sigma(&*lane.scheduler, lane.step, &lane.schedule),
                            prediction: lane.prediction,
                            step: lane.step,
                            steps: lane.scheduler.timesteps().len(),
                            item_shape: self.ctx.pictures.sample_shape,
                        };
                        guide_method(
                            method.as_mut(),
                            *on_denoised,
                            lane.guidance,
                            lane.guidance_rescale,
                            &call,
                            &mut guided,
                        );
                    }
                }
                &guided[..]
            } else {
                &outputs[offset..offset + len]
            };
            offset += calls_of_lane * len;
            let state = &mut self.states[lane.cell];
            state.model_s += model_s * (calls_of_lane * lane.items) as f64 / total_items;
            let step_start = Instant::now();
            let advanced = advance(
                &mut *lane.scheduler,
                lane.step,
                output,
                &mut lane.x,
                &mut lane.x0,
                lane.items,
                &mut lane.noise,
            );
            match advanced {
                Err(Halt::NotFinite(why)) => {
                    failed.push((lane.cell, why));
                    continue;
                }
                Err(Halt::Step(e)) => return Err(e.into()),
                Ok(()) => {}
            }
            lane.step += 1;
            if let Some(inpaint) = &lane.inpaint {
                let noising = lane.scheduler.noising_at(lane.step);
                let last = lane.step == lane.scheduler.timesteps().len();
                inpaint.blend(noising.filter(|_| !last), &mut lane.x);
            }
            let calls_now = lane.scheduler.timesteps().len();
            if calls_now > lane.counted {
                calls.1 += calls_now - lane.counted;
                lane.counted = calls_now;
            }
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
        // Model calls, which is the step count except for samplers that call the model twice a step (from
        // where img2img's strength cuts in).
        let calls_total = lane.scheduler.timesteps().len() - lane.begin;
        let step = lane.step - lane.begin;
        if self.solving {
            self.reference_progress(l)?;
            return Ok(None);
        }
        let shown = (cell.preview.saturating_sub(lane.first)).min(lane.items) * item;
        let preview = (shown > 0)
            .then(|| (self.ctx.pictures).preview_at(&lane.x0[..shown], step, calls_total))
            .flatten();
        let divisor = lane.scheduler.model_input_divisor();
        let noisy = (shown > 0)
            .then(|| self.ctx.pictures.noisy_preview(&lane.x[..shown], divisor))
            .flatten();
        let _ = self.tx.send(LabEvent::Progress {
            cell: c,
            step,
            steps: calls_total,
            samples_done: lane.first,
            samples_total: cell.samples(),
            preview: preview.filter(|p| !p.is_empty()),
            noisy,
        });
        if step < calls_total {
            return Ok(None);
        }
        // An adaptive sampler's count is known at the end: the cell reports its most expensive sample.
        let state = &mut self.states[lane.cell];
        state.nfe = state.nfe.max(calls_total);
        let images = match self.ctx.pictures.images(&lane.x) {
            Ok(images) => images,
            Err(e) => return Ok(Some((lane.cell, e))),
        };
        let state = &mut self.states[lane.cell];
        let shape = (self.ctx.pictures.image_shape, self.ctx.pictures.frames);
        let quality = self.quality.as_mut();
        state
            .output
            .take(lane.first, &lane.x, &images, shape, quality, self.ctx.batch)?;
        state.samples_left -= lane.items;
        if let Some(file) = &mut self.progress_file {
            file.record(&cell.key, lane.first + lane.items, state.samples_left == 0);
        }
        if state.samples_left > 0 {
            return Ok(None);
        }
        // The cell is complete: score, write and report it now, not at the end of the run.
        let solution = cell
            .reference_in(self.references)
            .and_then(|r| self.solutions[r].as_ref());
        let (mut result, images) =
            self.ctx
                .finish(c, cell, state, self.quality.as_mut(), solution)?;
        // What ONNX Runtime said while the cell ran (with cells in lockstep: while it and its neighbours ran).
        for line in crate::engine::ort_log::take() {
            let _ = self
                .tx
                .send(LabEvent::Log(format!("{}: {line}", cell.name)));
            result.warnings.push(line);
        }
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
        if lane.step < steps && lane.step.is_multiple_of((steps / 4).max(1)) {
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
        state.samples_left -= lane.items;
        match state.samples_left {
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

impl Lane {
    /// Appends the model's input for this lane's samples: each scaled sample, followed by an inpainting U-Net's
    /// mask and masked-image latents for it.
    fn push_input(&self, item: usize, inputs: &mut Vec<f32>) {
        let Some(extra) = &self.concat else {
            return model_input(&*self.scheduler, &self.x, inputs);
        };
        let per = extra.len() / self.items.max(1);
        let divisor = self.scheduler.model_input_divisor();
        for (x, e) in self.x.chunks(item).zip(extra.chunks(per)) {
            inputs.extend(x.iter().map(|&v| v / divisor));
            inputs.extend_from_slice(e);
        }
    }

    /// The model's predictions a step of this lane takes per sample: conditional, and the unconditional and the
    /// empty prompt's where its guidance takes them.
    fn calls_per_step(&self) -> usize {
        1 + usize::from(self.uncond.is_some()) + usize::from(self.empty.is_some())
    }
}
