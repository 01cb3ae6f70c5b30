//! An experiment becomes cells: one per (sampler, shift, step count, guidance scale), all on the same seeds
//! and conditions (prompts or classes).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::samples::read_f32_npy;
use crate::engine::fingerprint;
use crate::experiment::{Experiment, ModelSource, ReferenceSolve};
use crate::guidance::GuidanceMethod;
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
    /// A flow sampler's shift, where the experiment sets one.
    pub shift: Option<f64>,
    /// img2img's strength: the cell starts from the noised start images, this share of its schedule left.
    pub strength: Option<f64>,
    /// Each ControlNet's scale and window, when the experiment has control images.
    pub control: Option<ControlSettings>,
    /// How its guided predictions are made.
    pub guidance_method: GuidanceMethod,
    /// The value of each of its sampler's axes that varies, by results column.
    pub axes: Vec<(String, serde_json::Value)>,
    /// Its sampler's label without the axes' values (`dpm++2s-a` of `dpm++2s-a karras eta=0.5`).
    pub sampler_label: String,
    /// FLUX's true classifier-free guidance scale beside its embedded `guidance` (1: none).
    pub true_cfg_scale: f64,
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

/// A ControlNet cell's settings: each ControlNet's conditioning scale and the share of the steps it is on, in
/// the order the model takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSettings(pub Vec<ControlUnit>);

/// One ControlNet's conditioning scale and window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControlUnit {
    pub scale: f64,
    pub start: f64,
    pub end: f64,
}

impl ControlUnit {
    /// The scale at call `i` of `n`: 0 outside the window (diffusers' `controlnet_keep`).
    pub fn scale_at(&self, i: usize, n: usize) -> f32 {
        let (i, n) = (i as f64, n.max(1) as f64);
        let off = i / n < self.start || (i + 1.0) / n > self.end;
        if off { 0.0 } else { self.scale as f32 }
    }
}

impl ControlSettings {
    /// `nets` ControlNets' settings from a scale and windows given once for all or once per ControlNet.
    pub fn new(nets: usize, scales: &[f64], windows: &[(f64, f64)]) -> Self {
        let pick = |k: usize, n: usize| k.min(n.saturating_sub(1));
        Self(
            (0..nets)
                .map(|k| {
                    let (start, end) = windows[pick(k, windows.len())];
                    ControlUnit {
                        scale: scales[pick(k, scales.len())],
                        start,
                        end,
                    }
                })
                .collect(),
        )
    }
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

    /// The cell's name as a file name (`cells/<stem>.png`).
    pub fn file_stem(&self) -> String {
        self.name
            .chars()
            .map(|c| match c.is_ascii_alphanumeric() || "-+.".contains(c) {
                true => c,
                false => '_',
            })
            .collect()
    }

    /// The reference solve among `references` this cell is compared with: the one at its guidance.
    pub fn reference_in(&self, references: &[Cell]) -> Option<usize> {
        references
            .iter()
            .position(|r| {
                r.guidance == self.guidance
                    && r.guidance_rescale == self.guidance_rescale
                    && r.guidance_method == self.guidance_method
                    && r.true_cfg_scale == self.true_cfg_scale
                    && r.control == self.control
            })
            // An img2img cell starts where its own schedule cuts in: no solve from pure noise compares with it.
            .filter(|_| self.strength.is_none())
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

/// The cells of a run, and the reference solves they are compared with: one per guidance setting, of
/// the preview samples, when `[quality] reference_sampler` asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub cells: Vec<Cell>,
    pub references: Vec<Cell>,
}

/// Plans every cell, or only the cells `only` selects (see [`selects`]).
pub fn plan(experiment: &Experiment, only: Option<&str>) -> std::io::Result<Vec<Cell>> {
    Ok(plan_run(experiment, only)?.cells)
}

impl Plan {
    /// A hash of every cell's and reference's key: two runs with the same plan key draw the same
    /// samples the same way.
    pub fn key(&self) -> String {
        let mut hash = Sha256::new();
        for cell in self.cells.iter().chain(&self.references) {
            hash.update(cell.name.as_bytes());
            hash.update(cell.key.as_bytes());
        }
        fingerprint::hex(&hash.finalize()[..8])
    }
}

/// Plans the cells `only` selects (all for `None`) and the reference solves they need.
pub fn plan_run(experiment: &Experiment, only: Option<&str>) -> std::io::Result<Plan> {
    let (model_inputs, inputs) = inputs_hash(experiment)?;
    let cells = plan_cells(experiment, only, &inputs)?;
    let solve = experiment
        .quality
        .as_ref()
        .and_then(|q| q.reference_solve.as_ref());
    let references = match solve {
        Some(solve) => reference_cells(experiment, solve, &cells, &model_inputs),
        None => Vec::new(),
    };
    Ok(Plan { cells, references })
}

/// A reference cell for each guidance setting of `cells`: the reference sampler on their previews.
fn reference_cells(
    experiment: &Experiment,
    solve: &ReferenceSolve,
    cells: &[Cell],
    inputs: &[u8],
) -> Vec<Cell> {
    let mut references: Vec<Cell> = Vec::new();
    for cell in cells {
        if cell.reference_in(&references).is_some() || cell.strength.is_some() {
            continue;
        }
        let label = format!("reference {}", solve.name);
        let mut reference = Cell {
            name: cell_name(experiment, &label, solve.steps, cell.guidance),
            label,
            class: solve.resolved.config.class_name().to_string(),
            config: solve.resolved.config.clone(),
            settings: solve.resolved.settings.clone(),
            steps: solve.steps,
            items: cell.items[..cell.preview].to_vec(),
            warnings: Vec::new(),
            // Its shift, if any, is in its own settings.
            shift: None,
            strength: None,
            control: cell.control.clone(),
            axes: Vec::new(),
            sampler_label: format!("reference {}", solve.name),
            ..cell.clone()
        };
        reference.key = cell_key(inputs, &reference);
        references.push(reference);
    }
    references
}

fn plan_cells(
    experiment: &Experiment,
    only: Option<&str>,
    inputs: &[u8],
) -> std::io::Result<Vec<Cell>> {
    let axis = condition_axis(experiment)?;
    let controlnets = (experiment.conditioning.as_ref()).map_or(0, |c| c.controls.len());
    let mut cells = Vec::new();
    let settings = experiment
        .samplers
        .iter()
        .enumerate()
        .flat_map(|(index, sampler)| {
            sampler
                .variants
                .iter()
                .map(move |variant| (index, sampler, variant))
        });
    for (index, sampler, variant) in settings {
        for &steps in &sampler.steps {
            for &guidance in &sampler.guidance {
                let mut name = cell_name(experiment, &variant.label, steps, guidance);
                if sampler.true_cfg_scale != 1.0 {
                    name.push_str(&format!(" tcfg{}", sampler.true_cfg_scale));
                }
                if only.is_some_and(|only| !selects(only, &variant.label, &name)) {
                    continue;
                }
                let mut cell = Cell {
                    name,
                    label: variant.label.clone(),
                    class: variant.resolved.config.class_name().to_string(),
                    config: variant.resolved.config.clone(),
                    settings: variant.resolved.settings.clone(),
                    steps,
                    guidance,
                    guidance_rescale: sampler.guidance_rescale,
                    shift: variant.shift,
                    strength: variant.strength,
                    control: (controlnets > 0).then(|| {
                        let scales = variant.control_scale.as_deref().unwrap_or(&[1.0]);
                        ControlSettings::new(controlnets, scales, &sampler.control_windows)
                    }),
                    guidance_method: variant.guidance_method.clone(),
                    axes: variant.axes.clone(),
                    sampler_label: variant.sampler_label.clone(),
                    true_cfg_scale: sampler.true_cfg_scale,
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
                cell.key = cell_key(inputs, &cell);
                cells.push(cell);
            }
        }
    }
    Ok(cells)
}

fn cell_name(experiment: &Experiment, label: &str, steps: usize, guidance: f64) -> String {
    crate::experiment::cell_name(experiment.conditioning.is_some(), label, steps, guidance)
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
    if cell.true_cfg_scale != 1.0 {
        hash.update(cell.true_cfg_scale.to_le_bytes());
    }
    if let Some(strength) = cell.strength {
        hash.update(strength.to_le_bytes());
    }
    for c in cell.control.iter().flat_map(|c| &c.0) {
        for v in [c.scale, c.start, c.end] {
            hash.update(v.to_le_bytes());
        }
    }
    // Plain CFG keeps the keys cells had before guidance methods existed.
    if !cell.guidance_method.is_plain() {
        hash.update(cell.guidance_method.label());
    }
    for item in &cell.items {
        hash.update(item.seed.to_le_bytes());
        if item.condition > 0 {
            hash.update(item.condition.to_le_bytes());
        }
    }
    fingerprint::hex(&hash.finalize()[..12])
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
            let rows = read_f32_npy(path, "the embeddings file", "[prompts, tokens, width]")
                .map_err(std::io::Error::other)?;
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
        (rows > 1 && !self.is_class_conditional() && self.preview.is_multiple_of(rows))
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

/// Hashes of what every cell depends on: the model and its inputs (what a reference solve depends on),
/// and those with the quality inputs (what a cell's result depends on). Files enter by their fingerprints,
/// which an unchanged file serves from the cache without reading it.
fn inputs_hash(experiment: &Experiment) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut hash = Both(Sha256::new(), Sha256::new());
    match &experiment.model.source {
        ModelSource::Onnx(path) => hash_network(&mut hash, path)?,
        ModelSource::Pipeline(dir) => hash_pipeline(&mut hash, dir)?,
        ModelSource::Analytic => sha2::digest::Update::update(
            &mut hash,
            format!("analytic {:?}", experiment.model.sample_shape).as_bytes(),
        ),
    }
    if let Some(q) = &experiment.quality {
        quality_hash(&mut hash.0, q)?;
    }
    let m = &experiment.model;
    if let Some(c) = &experiment.conditioning {
        let text = format!(
            "{:?} {:?} {:?} {:?}",
            c.prompts, c.negative_prompt, c.classes, c.null_class
        );
        sha2::digest::Update::update(&mut hash, text.as_bytes());
    }
    let embeddings = experiment
        .conditioning
        .as_ref()
        .and_then(|c| c.embeddings.as_ref());
    for path in [embeddings, experiment.init_noise.as_ref()]
        .into_iter()
        .flatten()
    {
        hash_file(&mut hash, path)?;
    }
    // Start images change every img2img cell; runs without them keep their keys.
    if let Some(c) = experiment
        .conditioning
        .as_ref()
        .filter(|c| !c.init_images.is_empty())
    {
        for path in c.init_images.iter().chain(&c.masks) {
            hash_file(&mut hash, path)?;
        }
        let per = format!("init {:?}", c.init_per);
        sha2::digest::Update::update(&mut hash, per.as_bytes());
    }
    for set in (experiment.conditioning.iter()).flat_map(|c| &c.controls) {
        for path in &set.images {
            hash_file(&mut hash, path)?;
        }
        let per = format!("control {:?}", set.per);
        sha2::digest::Update::update(&mut hash, per.as_bytes());
    }
    for part in [&experiment.model.vae_encoder].into_iter().flatten() {
        hash_network(&mut hash, part)?;
    }
    // Cells drawn with difflab's own noise keep the keys they had before `noise` existed.
    if experiment.noise != crate::experiment::NoiseKind::Difflab {
        sha2::digest::Update::update(
            &mut hash,
            format!("noise {:?}", experiment.noise).as_bytes(),
        );
    }
    for part in [&m.vae_decoder, &m.text_encoder].into_iter().flatten() {
        hash_network(&mut hash, part)?;
    }
    if let Some(dir) = &m.tokenizer {
        hash_folder(&mut hash, dir, &|_| true)?;
    }
    Ok((hash.1.finalize().to_vec(), hash.0.finalize().to_vec()))
}

/// The fingerprint of every file the experiment's networks read: the model (a U-Net file or a pipeline
/// folder) and the parts given beside a bare U-Net.
pub fn model_fingerprint(experiment: &Experiment) -> std::io::Result<Vec<u8>> {
    let mut hash = Sha256::new();
    match &experiment.model.source {
        ModelSource::Onnx(path) => hash_network(&mut hash, path)?,
        ModelSource::Pipeline(dir) => hash_pipeline(&mut hash, dir)?,
        ModelSource::Analytic => {}
    }
    let m = &experiment.model;
    for part in [&m.vae_decoder, &m.text_encoder].into_iter().flatten() {
        hash_network(&mut hash, part)?;
    }
    if let Some(dir) = &m.tokenizer {
        hash_folder(&mut hash, dir, &|_| true)?;
    }
    Ok(hash.finalize().to_vec())
}

/// The quality inputs of a cell's key.
fn quality_hash(hash: &mut Sha256, q: &crate::experiment::QualitySpec) -> std::io::Result<()> {
    if let Some(f) = &q.features {
        hash_network(hash, &f.network)?;
        hash_file(hash, &f.reference)?;
        Digest::update(hash, format!("{} {}", q.kid_subsets, q.kid_subset_size));
    }
    // Cells scored before accuracy existed keep their keys.
    if !q.expected_classes.is_empty() || q.logits.is_some() {
        Digest::update(
            hash,
            format!("accuracy {:?} {:?}", q.expected_classes, q.logits),
        );
    }
    // Cells compared with a reference carry its errors: a new reference reruns them.
    if let Some(r) = &q.reference_solve {
        let settings = serde_json::to_string(&r.resolved.settings).unwrap_or_default();
        Digest::update(hash, format!("reference {settings} {}", r.steps));
    }
    Ok(())
}

/// Two hashes fed the same bytes.
struct Both(Sha256, Sha256);

impl sha2::digest::Update for Both {
    fn update(&mut self, data: &[u8]) {
        Digest::update(&mut self.0, data);
        Digest::update(&mut self.1, data);
    }
}

/// An ONNX network by everything it reads: the graph, its external data, and the configs beside it (a U-Net's
/// config.json and scheduler_config.json).
fn hash_network(hash: &mut impl sha2::digest::Update, model: &Path) -> std::io::Result<()> {
    let mut files = fingerprint::network_files(model).map_err(std::io::Error::other)?;
    let dir = model.parent().unwrap_or(Path::new("."));
    files.extend(json_beside(dir)?);
    hash.update(fingerprint::files_digest(dir, &files)?.as_bytes());
    Ok(())
}

fn json_beside(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A pipeline folder by everything its networks read: every ONNX graph with its external data, every
/// config (.json) and tokenizer file (.txt, .model), in sorted order and named, so a change to any part
/// changes the hash.
fn hash_pipeline(hash: &mut impl sha2::digest::Update, dir: &Path) -> std::io::Result<()> {
    let part = |path: &Path| {
        path.extension()
            .is_some_and(|e| e == "onnx" || e == "json" || e == "txt" || e == "model")
    };
    hash_folder(hash, dir, &part)
}

/// Every file under `dir` that `part` picks, each ONNX graph with the external data it names.
fn hash_folder(
    hash: &mut impl sha2::digest::Update,
    dir: &Path,
    part: &dyn Fn(&Path) -> bool,
) -> std::io::Result<()> {
    let mut files = Vec::new();
    folder_files(dir, part, &mut files)?;
    files.sort();
    let mut all = Vec::new();
    for file in files {
        if file.extension().is_some_and(|e| e == "onnx") {
            all.extend(fingerprint::network_files(&file).map_err(std::io::Error::other)?);
        } else {
            all.push(file);
        }
    }
    all.dedup();
    hash.update(fingerprint::files_digest(dir, &all)?.as_bytes());
    Ok(())
}

fn folder_files(
    dir: &Path,
    part: &dyn Fn(&Path) -> bool,
    files: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // Only real folders: a link to a folder could loop.
        if entry.file_type()?.is_dir() {
            folder_files(&path, part, files)?;
        } else if part(&path) && path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// A file by its fingerprint.
fn hash_file(hash: &mut impl sha2::digest::Update, path: &Path) -> std::io::Result<()> {
    hash.update(fingerprint::file_digest(path)?.as_bytes());
    Ok(())
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
        write("unet/model.onnx", "");
        write("tokenizer/merges.txt", "a b");
        write("reference/latents.npy", "x");
        let first = hash();
        write("reference/latents.npy", "y");
        assert_eq!(hash(), first, "other files are not parts");
        write("tokenizer/merges.txt", "a c");
        let second = hash();
        assert_ne!(second, first, "tokenizer files are parts");
        write("scheduler/scheduler_config.json", "{}");
        assert_ne!(hash(), second);
    }
}
