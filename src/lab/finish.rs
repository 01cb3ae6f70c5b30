//! Finishing a cell: its images, its tally (features, hits, errors against the reference solve), its
//! grid, and its result — scored at once, or, for a shard, with the tally saved for the merge.

use std::path::Path;

use super::cell_output::CellOutput;
use super::clip_gif::write_clip_gif;
use super::display::{display_shape, fit_display, for_display};
use super::images::{grid, save_png, upscale, upscale_factor};
use super::latent_preview::LatentPreview;
use super::plan::Cell;
use super::reference::{self, Solution};
use super::results::{CellResult, PerControlNet};
use super::samples::SampleFile;
use super::scores::Inputs;
use super::scoring::Quality;
use super::tally::{Against, Tally};
use crate::engine::VaeDecoder;
use crate::engine::frames::{frame_shape, item_dims};
use crate::path_error::PathError;

/// What every cell run on the loaded networks records of them.
pub(super) struct Provenance {
    pub provider: String,
    /// Whether fp32 GPU math may use TF32 (`None`: not on a GPU).
    pub tf32: Option<bool>,
    /// What ONNX Runtime warned of while loading them.
    pub runtime_warnings: Vec<String>,
}

/// What finishing a cell needs.
pub(super) struct Finish<'a> {
    pub out: &'a Path,
    pub pictures: Pictures,
    pub provenance: &'a Provenance,
    pub batch: usize,
    pub save_samples: bool,
    /// A shard's cells: each one's samples as indices among the whole cell's, by cell; their tallies
    /// are saved for the merge instead of scored.
    pub shard_items: Option<Vec<Vec<usize>>>,
}

impl Finish<'_> {
    /// Scores (or, in a shard, tallies) a complete cell `c` from what its lanes left in `state`, writes its
    /// grid and puts its samples file in place; returns its result and preview images. FID and KID that
    /// cannot be computed (the feature network's output is not finite) fail the cell with the reason; its
    /// grid is still written.
    pub fn finish(
        &mut self,
        c: usize,
        cell: &Cell,
        state: &mut CellState,
        quality: Option<&mut Quality<'_>>,
        solution: Option<&Solution>,
    ) -> Result<(CellResult, Vec<f32>), PathError> {
        let shape = self.pictures.image_shape;
        let item = shape.iter().product::<usize>();
        let mut output = std::mem::replace(&mut state.output, CellOutput::new(0, None, None));
        let images = output.kept_images[..cell.preview * item].to_vec();
        let grid_path = write_grid(self.out, cell, &images, shape)?;
        let clips = (shape, self.pictures.frames);
        write_clips(self.out, cell, &images, clips, self.pictures.fps)?;
        for file in [output.sample_file.take(), output.latent_file.take()]
            .into_iter()
            .flatten()
        {
            file.finish()?;
        }
        let mut result = self.result(cell, state, grid_path);
        let items = match &self.shard_items {
            Some(items) => items[c].clone(),
            None => (0..cell.samples()).collect(),
        };
        let mut tally = Tally {
            items,
            preview: cell.preview,
            // Only a shard keeps its previews in the tally; a whole cell has them in its grid.
            previews: match self.shard_items.is_some() {
                true => images.clone(),
                false => Vec::new(),
            },
            against: solution.map(|s| against(s, &output.kept_samples, &output.kept_images)),
            frame_change: output.frame_change,
            frames: self.pictures.frames,
            ..Tally::default()
        };
        let measured = match (quality, output.quality_error) {
            (_, Some(e)) => Err(e),
            (Some(q), None) => {
                (q.tally(cell, output.features, self.pictures.frames)).map(|m| Some((m, q)))
            }
            (None, None) => Ok(None),
        };
        match (measured, self.shard_items.is_some()) {
            (Err(e), _) => {
                result.error = Some(format!("the cell's quality cannot be computed: {e}"))
            }
            (Ok(m), true) => {
                (tally.features, tally.hits) = m.map_or((None, None), |((f, h), _)| (Some(f), h));
                tally.save(&self.out.join(tally_path(cell)), &cell.key, shape)?;
            }
            (Ok(m), false) => {
                let against = tally.against.as_ref();
                let mut inputs = match &m {
                    Some(((features, hits), q)) => q.inputs(features, hits.as_ref(), against),
                    None => Inputs {
                        against,
                        ..Inputs::default()
                    },
                };
                inputs.frame_change = tally.frame_change.as_ref();
                result.put_scores(&inputs);
            }
        }
        Ok((result, for_display(images, shape, self.pictures.frames)))
    }

    /// A cell's output before its first lane: where its samples file goes (`--save-samples`), and how many
    /// leading samples it keeps (its previews, and those its reference solve compares).
    pub fn output_for(
        &self,
        cell: &Cell,
        solution: Option<&Solution>,
    ) -> Result<CellOutput, PathError> {
        let per = self.pictures.sample_shape.iter().product::<usize>().max(1);
        let solved = solution.map_or(0, |s| s.samples.len() / per);
        let keep = cell.preview.max(solved).min(cell.samples());
        let file = match self.save_samples {
            true => {
                let path = self.out.join(format!("samples/{}.npy", cell.file_stem()));
                let item = item_dims(self.pictures.image_shape, self.pictures.frames);
                Some(SampleFile::create(&path, &item, &cell.output_order())?)
            }
            false => None,
        };
        // A latent model's final latents too, for another tool to decode or compare.
        let latents = match self.save_samples && self.pictures.decoder.is_some() {
            true => {
                let path = self.out.join(format!("latents/{}.npy", cell.file_stem()));
                let item = item_dims(self.pictures.sample_shape, self.pictures.frames);
                Some(SampleFile::create_latents(
                    &path,
                    &item,
                    &cell.output_order(),
                )?)
            }
            false => None,
        };
        Ok(CellOutput::new(keep, file, latents))
    }

    /// A cell's result without scores: its timing so far and where its grid is.
    pub fn result(&self, cell: &Cell, state: &CellState, grid: String) -> CellResult {
        let samples = cell.samples();
        let wall = state.model_s + state.sampler_s;
        CellResult {
            name: cell.name.clone(),
            label: cell.label.clone(),
            class: cell.class.clone(),
            steps: cell.steps,
            nfe: state.nfe,
            samples,
            wall_s: wall,
            model_ms_per_step: state.model_s * 1e3 / cell.steps.max(1) as f64,
            sampler_ms_per_step: state.sampler_s * 1e3 / cell.steps.max(1) as f64,
            ms_per_sample: wall * 1e3 / samples.max(1) as f64,
            scores: Default::default(),
            accuracies: Vec::new(),
            reference: None,
            provider: self.provenance.provider.clone(),
            tf32: self.provenance.tf32,
            grid,
            key: cell.key.clone(),
            error: None,
            warnings: cell
                .warnings
                .iter()
                .chain(&self.provenance.runtime_warnings)
                .cloned()
                .collect(),
            guidance: cell.guidance,
            guidance_rescale: cell.guidance_rescale,
            shift: cell.shift,
            strength: cell.strength,
            control_scale: (cell.control.as_ref())
                .map(|c| PerControlNet::of(c.0.iter().map(|u| u.scale).collect())),
            control_window: (cell.control.as_ref())
                .map(|c| PerControlNet::of(c.0.iter().map(|u| [u.start, u.end]).collect())),
            guidance_method: (!cell.guidance_method.is_plain())
                .then(|| cell.guidance_method.label()),
            axes: cell.axes.iter().cloned().collect(),
            true_cfg_scale: (cell.true_cfg_scale != 1.0).then_some(cell.true_cfg_scale),
            prompts: match cell.is_class_conditional() {
                true => Vec::new(),
                false => cell.conditions.clone(),
            },
            classes: cell.classes.clone(),
        }
    }
}

/// Where a shard keeps a cell's tally, under its folder.
pub fn tally_path(cell: &Cell) -> String {
    format!("cells/{}.npz", cell.file_stem())
}

/// Writes a cell's preview grid (`images`, its previews in [-1, 1]) as `cells/<cell>.png` under `out`;
/// returns that path, relative.
pub fn write_grid(
    out: &Path,
    cell: &Cell,
    images: &[f32],
    shape: [usize; 3],
) -> Result<String, PathError> {
    let grid_path = format!("cells/{}.png", cell.file_stem());
    let img = grid(images, shape, cell.preview, grid_columns(cell));
    save_png(&upscale(&img, upscale_factor(shape)), &out.join(&grid_path))?;
    Ok(grid_path)
}

/// Writes a video model's cell as `cells/<cell>.gif` under `out` (`images`, its preview clips in [-1, 1], in the
/// grid's places), playing at `fps`; for images, removes a GIF an earlier run of the cell left.
pub fn write_clips(
    out: &Path,
    cell: &Cell,
    images: &[f32],
    (shape, frames): ([usize; 3], usize),
    fps: f64,
) -> Result<(), PathError> {
    let path = out.join(format!("cells/{}.gif", cell.file_stem()));
    if frames <= 1 {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(PathError::io("remove", &path, &e))
            }
            _ => Ok(()),
        };
    }
    let layout = (cell.preview, grid_columns(cell));
    write_clip_gif(&path, images, (shape, frames), layout, fps)
}

/// A cell's squared errors against its reference solve.
fn against(solution: &Solution, samples: &[f32], images: &[f32]) -> Against {
    let (data, decoded) = reference::compare(solution, samples, images);
    Against {
        reference: solution.name.clone(),
        data: data.unwrap_or_default(),
        decoded,
    }
}

/// A cell's grid: one row per condition (prompt) with its seeds across, else about square.
pub fn grid_columns(cell: &Cell) -> usize {
    cell.preview_rows()
        .unwrap_or_else(|| (cell.preview as f64).sqrt().ceil() as usize)
}

/// What turns a run's samples into pictures: the VAE decoder and the cheap preview map of latent models.
pub(super) struct Pictures {
    pub decoder: Option<VaeDecoder>,
    pub preview: Option<LatentPreview>,
    /// One finished image's C, H, W.
    pub image_shape: [usize; 3],
    /// One sample's C, H, W (latent for latent models).
    pub sample_shape: [usize; 3],
    /// Frames per sample (a video model's clips are C, F·H, W, see [`crate::engine::frames`]); 1 for images.
    pub frames: usize,
    /// Frames a second a clip plays at (`[model] fps`).
    pub fps: f64,
    /// `[sampling] preview = "decode"`: previews through the decoder every k steps instead of the map.
    pub decode_every: Option<usize>,
    /// Images per VAE decoder call (`[model] vae_batch`).
    pub vae_batch: usize,
    /// Whether the samples are pixels in [0, 1] (a variance-exploding score model's, as ScoreSdeVePipeline
    /// returns them) rather than in [-1, 1].
    pub unit_range: bool,
}

impl Pictures {
    /// The preview after `step` of `steps` (1-based), at the display size; `None` on steps that make none.
    pub fn preview_at(&mut self, x0: &[f32], step: usize, steps: usize) -> Option<Vec<f32>> {
        let (Some(every), Some(vae)) = (self.decode_every, self.decoder.as_mut()) else {
            return Some(self.preview(x0));
        };
        if !step.is_multiple_of(every) || step == steps {
            // The last step's samples come decoded with the finished cell.
            return None;
        }
        // A failed preview decode shows nothing; the finished cell's decode reports the failure.
        let (images, _) = vae.decode(x0, self.sample_shape, self.vae_batch).ok()?;
        Some(for_display(images, self.image_shape, self.frames))
    }

    /// A preview of the noisy samples x_t (the model's input, scaled back by `divisor` as diffusers'
    /// scale_model_input does) at the display size; `None` where only a VAE decode could show them.
    pub fn noisy_preview(&self, x: &[f32], divisor: f32) -> Option<Vec<f32>> {
        let scaled: Vec<f32> = x.iter().map(|&v| v / divisor).collect();
        Some(self.preview(&scaled)).filter(|p| !p.is_empty())
    }

    /// Previews of x0 at the display size: the cheap latent→RGB map for latent models.
    fn preview(&self, x0: &[f32]) -> Vec<f32> {
        let display = display_shape(self.image_shape, self.frames);
        let (rgb, shape) = match &self.preview {
            Some(map) => {
                let frame = frame_shape(self.sample_shape, self.frames);
                let scale = (display[1] / frame[1].max(1)).max(1);
                let [_, h, w] = self.sample_shape;
                (
                    map.rgb(x0, self.sample_shape, scale),
                    [3, h * scale, w * scale],
                )
            }
            None if self.decoder.is_some() => return Vec::new(),
            None => (self.pixels(x0), self.sample_shape),
        };
        fit_display(rgb, shape, display, self.frames)
    }

    /// Finished samples as images in [-1, 1]: decoded for latent models, `vae_batch` at a time.
    pub fn images(&mut self, finals: &[f32]) -> Result<Vec<f32>, String> {
        match &mut self.decoder {
            Some(vae) => vae
                .decode(finals, self.sample_shape, self.vae_batch)
                .map(|(images, _)| images)
                .map_err(|e| format!("the VAE decoder failed: {e}")),
            None => Ok(self.pixels(finals)),
        }
    }

    /// A pixel model's samples in [-1, 1].
    fn pixels(&self, samples: &[f32]) -> Vec<f32> {
        match self.unit_range {
            true => samples.iter().map(|&v| 2.0 * v - 1.0).collect(),
            false => samples.to_vec(),
        }
    }
}

/// A pending cell's samples and time so far.
pub(super) struct CellState {
    /// A reference solve's samples, all of them (a solve covers only the preview seeds).
    pub finals: Vec<f32>,
    /// A cell's samples as its lanes finish them.
    pub output: CellOutput,
    pub model_s: f64,
    pub sampler_s: f64,
    /// Samples whose lanes have not finished.
    pub samples_left: usize,
    /// The first sample of the next lane to start.
    pub next_first: usize,
    /// The cell stopped on an error: no more lanes start.
    pub failed: bool,
    /// Model evaluations per sample (set when its first lane starts).
    pub nfe: usize,
}

impl CellState {
    /// `finals` holds `kept` samples of `item` values (a reference solve's; 0 for a cell).
    pub fn new(cell: &Cell, kept: usize, item: usize, output: CellOutput) -> Self {
        CellState {
            finals: vec![0.0; kept * item],
            output,
            model_s: 0.0,
            sampler_s: 0.0,
            samples_left: cell.samples(),
            next_first: 0,
            failed: false,
            nfe: cell.steps,
        }
    }
}
