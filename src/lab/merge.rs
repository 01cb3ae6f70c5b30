//! Merging a sharded run: every shard's part of every cell (timings, feature sums and rows, hits,
//! squared errors, previews) adds up to the cell, scored and written exactly as one machine would have.
//! Shard folders are only read; the merge writes the output folder's results, grids and plots.

use std::path::{Path, PathBuf};

use super::baseline::{Compared, compare_results};
use super::finish::{tally_path, write_clips, write_grid};
use super::plan::{Cell, Plan, plan_run};
use super::results::{CellResult, Results};
use super::scores::{Features, Inputs};
use super::shard::{Manifest, Shard, shard_folder};
use super::tally::Tally;
use crate::experiment::Experiment;
use crate::quality::ReferenceStats;

/// A merged cell: its result and its preview images (in [-1, 1], the cell's previews in order).
pub struct MergedCell {
    pub cell: Cell,
    pub result: CellResult,
    pub images: Vec<f32>,
    pub image_shape: [usize; 3],
    /// Frames per sample: 1 for images.
    pub frames: usize,
}

/// The shard counts with folders under `out/shards`, smallest first.
pub fn shard_counts(out: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(out.join("shards")) else {
        return Vec::new();
    };
    let mut counts: Vec<usize> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.split_once("-of-")?.1.parse().ok()
        })
        .collect();
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// The experiment the shards under `out` ran, from their manifests.
pub fn experiment_of_shards(out: &Path) -> Result<PathBuf, String> {
    for count in shard_counts(out) {
        for index in 0..count {
            let shard = Shard { index, count };
            if let Ok(m) = read_manifest(&shard_folder(out, shard)) {
                return Ok(m.experiment);
            }
        }
    }
    Err(format!(
        "{} has no shards (no shards/<I>-of-<N>/shard.json): run them with `difflab run EXP --shard I/N` \
         or `difflab slurm EXP --array N`",
        out.display()
    ))
}

/// A shard folder's `shard.json`.
pub fn read_manifest(folder: &Path) -> Result<Manifest, String> {
    let path = folder.join("shard.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is damaged ({e})", path.display()))
}

/// Merges the `count` shards of `experiment` into its output folder: results.json, results.csv and
/// cells/*.png. A missing shard or cell, a shard of another plan, or a damaged file is an error that
/// names it and what to run; nothing is written then.
pub fn merge(experiment: &Experiment, count: usize) -> Result<Vec<MergedCell>, String> {
    let plan = plan_run(experiment, None).map_err(|e| e.to_string())?;
    let out = &experiment.output_dir;
    let shards: Vec<ShardFiles> = (0..count)
        .map(|index| ShardFiles::read(out, Shard { index, count }, &plan))
        .collect::<Result<_, _>>()?;
    let missing: Vec<String> = shards.iter().flat_map(|s| s.missing(&plan)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "the run's {count} shards are not complete: {}; run what is missing with `difflab run {} \
             --shard I/{count}` (or resubmit those array tasks), then merge again",
            missing.join("; "),
            experiment.path.display()
        ));
    }
    let reference = match experiment
        .quality
        .as_ref()
        .and_then(|q| q.features.as_ref())
    {
        Some(f) => Some(ReferenceStats::load(&f.reference).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut merged = Vec::new();
    for cell in &plan.cells {
        merged.push(merge_cell(experiment, cell, &shards, reference.as_ref())?);
    }
    write(out, &merged, &shards, experiment.model.fps())?;
    for (i, result) in super::start_distance::compare_results(experiment, &plan.cells, out)? {
        merged[i].result = result;
    }
    if let Compared::Updated(updated) =
        compare_results(experiment, &plan.cells, out).map_err(|e| e.to_string())?
    {
        for (i, result) in updated {
            merged[i].result = result;
        }
    }
    Ok(merged)
}

/// What one shard left: its results and the folder its tallies are in.
struct ShardFiles {
    shard: Shard,
    folder: PathBuf,
    results: Results,
}

impl ShardFiles {
    /// Reads a shard's manifest and results; a shard of another plan is refused. A shard that has not
    /// started has no results.
    fn read(out: &Path, shard: Shard, plan: &Plan) -> Result<Self, String> {
        let folder = shard_folder(out, shard);
        let mut files = ShardFiles {
            shard,
            folder: folder.clone(),
            results: Results::default(),
        };
        if !folder.join("shard.json").is_file() {
            return Ok(files);
        }
        let manifest = read_manifest(&folder)?;
        if manifest.plan != plan.key() {
            return Err(format!(
                "{} ran another experiment (plan {}, this one's is {}): the experiment changed after it \
                 ran, or another experiment writes into the same folder; rerun the shard, or delete the \
                 folder",
                folder.display(),
                manifest.plan,
                plan.key()
            ));
        }
        let path = folder.join("results.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            files.results = serde_json::from_str(&text)
                .map_err(|e| format!("{} is damaged ({e}); rerun shard {shard}", path.display()))?;
        }
        Ok(files)
    }

    fn result(&self, cell: &Cell) -> Option<&CellResult> {
        self.results.cells.iter().find(|r| r.key == cell.key)
    }

    /// What this shard has not finished, in a few words.
    fn missing(&self, plan: &Plan) -> Vec<String> {
        if !self.folder.join("shard.json").is_file() {
            return vec![format!("shard {} has not started", self.shard)];
        }
        let unfinished: Vec<&str> = (plan.cells.iter())
            .filter(|c| self.result(c).is_none())
            .map(|c| c.name.as_str())
            .collect();
        match unfinished.is_empty() {
            true => Vec::new(),
            false => vec![format!(
                "shard {} has not finished {}",
                self.shard,
                unfinished.join(", ")
            )],
        }
    }
}

/// One cell from its shards: timings summed, tallies added and scored.
fn merge_cell(
    experiment: &Experiment,
    cell: &Cell,
    shards: &[ShardFiles],
    reference: Option<&ReferenceStats>,
) -> Result<MergedCell, String> {
    let parts: Vec<&CellResult> = shards.iter().filter_map(|s| s.result(cell)).collect();
    if parts.len() != shards.len() {
        return Err(format!(
            "{}: {} of {} shards hold it",
            cell.name,
            parts.len(),
            shards.len()
        ));
    }
    let mut result = combine(cell, &parts);
    let mut tallies = Vec::new();
    let mut image_shape = [1, 1, 1];
    for s in shards {
        if s.result(cell).is_some_and(CellResult::failed) {
            continue;
        }
        let path = s.folder.join(tally_path(cell));
        let (tally, key, shape) = Tally::load(&path).map_err(|e| {
            format!(
                "{}: {e}; rerun shard {} (`difflab run {} --shard {}`), which redoes that cell",
                path.display(),
                s.shard,
                experiment.path.display(),
                s.shard
            )
        })?;
        if key != cell.key {
            return Err(format!(
                "{} belongs to another version of {} (key {key}, expected {}); rerun shard {}",
                path.display(),
                cell.name,
                cell.key,
                s.shard
            ));
        }
        image_shape = shape;
        tallies.push(tally);
    }
    let tally = Tally::merge(tallies).map_err(|e| format!("{}: {e}", cell.name))?;
    if result.error.is_none() {
        if tally.items != (0..cell.samples()).collect::<Vec<_>>() {
            return Err(format!(
                "{}: the shards hold {} of its {} samples",
                cell.name,
                tally.items.len(),
                cell.samples()
            ));
        }
        let features = match (reference, experiment.quality.as_ref(), &tally.features) {
            (Some(reference), Some(spec), Some(tally)) => Some(Features {
                tally,
                reference,
                spec,
            }),
            _ => None,
        };
        result.put_scores(&Inputs {
            features,
            hits: features.and(tally.hits.as_ref()),
            against: tally.against.as_ref(),
            frame_change: tally.frame_change.as_ref(),
        });
    }
    Ok(MergedCell {
        cell: cell.clone(),
        result,
        images: tally.previews,
        image_shape,
        frames: shards.first().map_or(1, |s| s.results.frames()),
    })
}

/// A cell's result from its shards' results (one or more): samples and times add up; any shard's
/// error fails it.
fn combine(cell: &Cell, parts: &[&CellResult]) -> CellResult {
    let mut result = parts[0].clone();
    let sum = |f: fn(&CellResult) -> f64| parts.iter().map(|r| f(r)).sum::<f64>();
    result.samples = parts.iter().map(|r| r.samples).sum();
    result.wall_s = sum(|r| r.wall_s);
    result.model_ms_per_step = sum(|r| r.model_ms_per_step);
    result.sampler_ms_per_step = sum(|r| r.sampler_ms_per_step);
    result.ms_per_sample = result.wall_s * 1e3 / result.samples.max(1) as f64;
    let mut providers: Vec<&str> = parts.iter().map(|r| r.provider.as_str()).collect();
    providers.sort_unstable();
    providers.dedup();
    result.provider = providers.join(", ");
    result.error = (parts.iter().zip(0..))
        .find_map(|(r, i)| Some(format!("shard {i}: {}", r.error.as_ref()?)));
    result.grid = format!("cells/{}.png", cell.file_stem());
    result
}

/// Writes the merged cells' grids and the results files (the shards' model calls summed).
fn write(out: &Path, merged: &[MergedCell], shards: &[ShardFiles], fps: f64) -> Result<(), String> {
    let (mut results, _) = Results::open(&out.join("results.json")).map_err(|e| e.to_string())?;
    results.experiment = shards[0].results.experiment.clone();
    results.model_calls = shards.iter().map(|s| s.results.model_calls).sum();
    results.unbatched_model_calls = shards.iter().map(|s| s.results.unbatched_model_calls).sum();
    // What reading the grids back needs (a later run that reuses the cells, the baseline comparison).
    results.image_shape = merged.first().map(|m| m.image_shape);
    results.set_frames(merged.first().map_or(1, |m| m.frames));
    for m in merged {
        if m.result.error.is_none() {
            write_grid(out, &m.cell, &m.images, m.image_shape).map_err(|e| e.to_string())?;
            write_clips(out, &m.cell, &m.images, (m.image_shape, m.frames), fps)
                .map_err(|e| e.to_string())?;
        }
        results.put(m.result.clone());
    }
    results.save(out).map_err(|e| e.to_string())
}
