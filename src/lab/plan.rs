//! An experiment becomes cells: one per (sampler, step count, guidance scale), all on the same seeds and
//! conditions (prompts or classes).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::experiment::{Experiment, ModelSource};
use crate::sampler::SamplerConfig;

/// One column of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// `label` and step count, unique within the experiment (e.g. "ddim 50").
    pub name: String,
    pub label: String,
    /// diffusers class name.
    pub class: String,
    pub config: SamplerConfig,
    pub settings: serde_json::Map<String, serde_json::Value>,
    pub steps: usize,
    /// The classifier-free guidance scale (1: none).
    pub guidance: f64,
    /// diffusers' `guidance_rescale` (φ).
    pub guidance_rescale: f64,
    /// The samples this cell draws, in draw order: the previews (the experiment's seeds under every condition)
    /// first, then more for quality.
    pub items: Vec<Item>,
    /// How many of `items` are shown.
    pub preview: usize,
    /// The run's conditions (prompts or classes) that `Item::condition` indexes; empty when unconditional.
    pub conditions: Vec<String>,
    /// The classes behind `conditions`, for a class-conditional run.
    pub classes: Vec<i64>,
    /// Hash of everything that decides this cell's result.
    pub key: String,
    /// The experiment's warnings that concern this cell.
    pub warnings: Vec<String>,
}

/// One sample of a cell: its seed, the seed's place in the cell's seeds (its row of `init_noise`), and the
/// condition (prompt or class, an index into the run's conditions) it is drawn under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub seed: u64,
    pub seed_index: usize,
    pub condition: usize,
}

impl Cell {
    /// The samples in the order they are written (`samples/*.npy`): condition-major (prompt-major) for
    /// prompts, seed order for classes and unconditional runs.
    pub fn output_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        order.sort_by_key(|&i| (self.items[i].condition, self.items[i].seed_index));
        order
    }

    pub fn samples(&self) -> usize {
        self.items.len()
    }

    pub fn is_class_conditional(&self) -> bool {
        !self.classes.is_empty()
    }
}

/// How the experiment's samples are conditioned: the conditions (prompts or classes, as labels; none for an
/// unconditional run), and whether seeds cycle through them (classes) rather than each condition taking every
/// seed (prompts).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConditionAxis {
    pub labels: Vec<String>,
    /// The classes, for a class-conditional run.
    pub classes: Vec<i64>,
    pub per_seed: bool,
}

impl ConditionAxis {
    /// How many conditions there are (1 for an unconditional run).
    pub fn count(&self) -> usize {
        self.labels.len().max(1)
    }
}

/// Plans every cell, or only the cells `only` selects (see [`selects`]).
pub fn plan(experiment: &Experiment, only: Option<&str>) -> std::io::Result<Vec<Cell>> {
    let inputs = inputs_hash(experiment)?;
    let axis = condition_axis(experiment)?;
    let mut cells = Vec::new();
    for (index, sampler) in experiment.samplers.iter().enumerate() {
        for &steps in &sampler.steps {
            for &guidance in &sampler.guidance {
                let name = cell_name(experiment, &sampler.label, steps, guidance);
                if only.is_some_and(|only| !selects(only, &sampler.label, &name)) {
                    continue;
                }
                let mut cell = Cell {
                    name,
                    label: sampler.label.clone(),
                    class: sampler.resolved.config.class_name().to_string(),
                    config: sampler.resolved.config.clone(),
                    settings: sampler.resolved.settings.clone(),
                    steps,
                    guidance,
                    guidance_rescale: sampler.guidance_rescale,
                    items: Vec::new(),
                    preview: 0,
                    conditions: axis.labels.clone(),
                    classes: axis.classes.clone(),
                    key: String::new(),
                    warnings: experiment.warnings_for(index),
                };
                let samples = sampler
                    .samples
                    .or(experiment.quality.as_ref().map(|q| q.samples))
                    .unwrap_or(0);
                (cell.items, cell.preview) = items(&experiment.seeds, samples, &axis);
                cell.key = cell_key(&inputs, &cell);
                cells.push(cell);
            }
        }
    }
    Ok(cells)
}

/// "ddim 50", or "ddim 50 g7.5" when the experiment is conditional (guidance is then an axis).
fn cell_name(experiment: &Experiment, label: &str, steps: usize, guidance: f64) -> String {
    match experiment.conditioning {
        Some(_) => format!("{label} {steps} g{guidance}"),
        None => format!("{label} {steps}"),
    }
}

fn cell_key(inputs: &[u8], cell: &Cell) -> String {
    let mut hash = Sha256::new();
    hash.update(inputs);
    hash.update(serde_json::to_string(&cell.settings).unwrap_or_default());
    hash.update(cell.steps.to_le_bytes());
    // Unguided cells keep the keys they had before guidance existed.
    if cell.guidance != 1.0 || cell.guidance_rescale != 0.0 {
        hash.update(cell.guidance.to_le_bytes());
        hash.update(cell.guidance_rescale.to_le_bytes());
    }
    for item in &cell.items {
        hash.update(item.seed.to_le_bytes());
        if item.condition > 0 {
            hash.update(item.condition.to_le_bytes());
        }
    }
    hex(&hash.finalize()[..12])
}

/// A cell's samples (at least `samples`, every seed under every condition) and how many are previews.
fn items(seeds: &[u64], samples: usize, axis: &ConditionAxis) -> (Vec<Item>, usize) {
    if axis.per_seed {
        let all = seeds_for(seeds, samples.max(seeds.len()));
        let items = all
            .iter()
            .enumerate()
            .map(|(i, &seed)| Item {
                seed,
                seed_index: i,
                condition: i % axis.count(),
            })
            .collect();
        return (items, seeds.len());
    }
    let count = axis.count();
    let all = seeds_for(seeds, samples.div_ceil(count).max(seeds.len()));
    let preview = seeds.len();
    let mut items = Vec::with_capacity(all.len() * count);
    for block in [0..preview, preview..all.len()] {
        for condition in 0..count {
            items.extend(block.clone().map(|i| Item {
                seed: all[i],
                seed_index: i,
                condition,
            }));
        }
    }
    (items, preview * count)
}

/// The experiment's conditions; precomputed embeddings without prompts are labelled by row.
pub fn condition_axis(experiment: &Experiment) -> std::io::Result<ConditionAxis> {
    let Some(spec) = &experiment.conditioning else {
        return Ok(ConditionAxis::default());
    };
    if !spec.classes.is_empty() {
        return Ok(ConditionAxis {
            labels: spec.classes.iter().map(|c| format!("class {c}")).collect(),
            classes: spec.classes.clone(),
            per_seed: true,
        });
    }
    let labels = match &spec.embeddings {
        Some(path) if spec.prompts.is_empty() => {
            let rows: ndarray::ArrayD<f32> = ndarray_npy::read_npy(path)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            let n = rows.shape().first().copied().unwrap_or(1);
            (0..n).map(|i| format!("embedding {i}")).collect()
        }
        _ => spec.prompts.clone(),
    };
    Ok(ConditionAxis {
        labels,
        classes: Vec::new(),
        per_seed: false,
    })
}

impl Cell {
    /// The preview grid's columns when its rows are prompts (every seed once per prompt, prompt-major): the
    /// row labels are then `conditions`. `None` for one prompt, classes (one per seed) and unconditional runs.
    pub fn preview_rows(&self) -> Option<usize> {
        let rows = self.conditions.len();
        (rows > 1 && !self.is_class_conditional() && self.preview % rows == 0)
            .then(|| self.preview / rows)
    }

    /// A label for each preview sample: its seed, and its prompt or class when there are conditions.
    pub fn preview_labels(&self) -> Vec<String> {
        self.items[..self.preview]
            .iter()
            .map(|item| match self.conditions.get(item.condition) {
                Some(c) => format!("{c} · seed {}", item.seed),
                None => format!("seed {}", item.seed),
            })
            .collect()
    }
}

/// Whether `--only FILTER` picks the cell `name` (e.g. "ddim 50") of sampler `label`: the exact cell
/// name, or a prefix of the label, so "dpm++" picks every DPM++ variant and "dpm" does not pick "ddpm".
pub fn selects(filter: &str, label: &str, name: &str) -> bool {
    let filter = filter.trim();
    !filter.is_empty() && (name == filter || label.starts_with(filter))
}

/// The experiment's seeds, then the next unused seeds until there are `count`.
fn seeds_for(seeds: &[u64], count: usize) -> Vec<u64> {
    let mut out = seeds.to_vec();
    let mut next = seeds.iter().max().map_or(0, |m| m + 1);
    while out.len() < count {
        out.push(next);
        next += 1;
    }
    out
}

/// Hash of the files every cell depends on: the model and the quality inputs.
fn inputs_hash(experiment: &Experiment) -> std::io::Result<Vec<u8>> {
    let mut hash = Sha256::new();
    match &experiment.model.source {
        ModelSource::Onnx(path) => hash_file(&mut hash, path)?,
        ModelSource::Pipeline(dir) => hash_pipeline(&mut hash, dir)?,
        ModelSource::Analytic => {
            hash.update(format!("analytic {:?}", experiment.model.sample_shape))
        }
    }
    if let Some(q) = &experiment.quality {
        hash_file(&mut hash, &q.features)?;
        hash_file(&mut hash, &q.reference)?;
        hash.update(format!("{} {}", q.kid_subsets, q.kid_subset_size));
        // Cells scored before accuracy existed keep their keys.
        if !q.expected_classes.is_empty() || q.logits.is_some() {
            hash.update(format!("accuracy {:?} {:?}", q.expected_classes, q.logits));
        }
    }
    if let Some(c) = &experiment.conditioning {
        hash.update(format!(
            "{:?} {:?} {:?} {:?}",
            c.prompts, c.negative_prompt, c.classes, c.null_class
        ));
        if let Some(path) = &c.embeddings {
            hash_file(&mut hash, path)?;
        }
    }
    if let Some(path) = &experiment.init_noise {
        hash_file(&mut hash, path)?;
    }
    // Cells drawn with difflab's own noise keep the keys they had before `noise` existed.
    if experiment.noise != crate::experiment::NoiseKind::Difflab {
        hash.update(format!("noise {:?}", experiment.noise));
    }
    let m = &experiment.model;
    for part in [&m.vae_decoder, &m.text_encoder].into_iter().flatten() {
        hash_file(&mut hash, part)?;
    }
    if let Some(dir) = &m.tokenizer {
        for name in [
            "tokenizer.json",
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
        ] {
            if dir.join(name).is_file() {
                hash_file(&mut hash, &dir.join(name))?;
            }
        }
    }
    Ok(hash.finalize().to_vec())
}

/// A pipeline folder by its parts: every model.onnx (with its model.onnx_data) and every .json
/// config, in sorted order and named, so a change to any part changes the hash.
fn hash_pipeline(hash: &mut Sha256, dir: &Path) -> std::io::Result<()> {
    let mut files = Vec::new();
    pipeline_files(dir, &mut files)?;
    files.sort();
    for file in files {
        let name = file.strip_prefix(dir).unwrap_or(&file);
        hash.update(name.to_string_lossy().as_bytes());
        hash_file(hash, &file)?;
    }
    Ok(())
}

fn pipeline_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // Only real folders: a link to a folder could loop.
        if entry.file_type()?.is_dir() {
            pipeline_files(&path, files)?;
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let part = name == "model.onnx" || name == "model.onnx_data" || name.ends_with(".json");
        if part && path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

fn hash_file(hash: &mut Sha256, path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hash.update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::{hash_pipeline, selects};
    use sha2::{Digest, Sha256};

    #[test]
    fn only_picks_a_cell_or_a_label_prefix() {
        assert!(selects("ddim 50", "ddim", "ddim 50"));
        assert!(!selects("ddim 50", "ddim", "ddim 10"));
        assert!(selects("ddim", "ddim", "ddim 10"));
        assert!(selects("dpm++", "dpm++2m-karras", "dpm++2m-karras 10"));
        assert!(!selects("dpm", "ddpm", "ddpm 1000"));
        assert!(selects("dpm", "dpm++2m", "dpm++2m 20"));
        assert!(!selects(" ", "ddim", "ddim 10"));
    }

    #[test]
    fn a_pipeline_hashes_its_models_and_configs_only() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let hash = || {
            let mut h = Sha256::new();
            hash_pipeline(&mut h, dir.path()).unwrap();
            h.finalize().to_vec()
        };
        write("model_index.json", "{}");
        write("unet/model.onnx", "unet");
        write("unet/model.onnx_data", "weights");
        write("reference/latents.npy", "x");
        let first = hash();
        write("reference/latents.npy", "y");
        assert_eq!(hash(), first, "other files are not parts");
        write("unet/model.onnx_data", "new weights");
        let second = hash();
        assert_ne!(second, first);
        write("scheduler/scheduler_config.json", "{}");
        assert_ne!(hash(), second);
    }
}
