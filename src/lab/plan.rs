//! An experiment becomes cells: one per (sampler, step count), all on the same seeds.

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
    /// Seeds of the samples this cell draws: the experiment's seeds first (the previews), then more
    /// for quality.
    pub seeds: Vec<u64>,
    /// How many of `seeds` are shown (the experiment's seeds).
    pub preview: usize,
    /// Hash of everything that decides this cell's result.
    pub key: String,
    /// The experiment's warnings that concern this cell.
    pub warnings: Vec<String>,
}

/// Plans every cell, or only the cells `only` selects (see [`selects`]).
pub fn plan(experiment: &Experiment, only: Option<&str>) -> std::io::Result<Vec<Cell>> {
    let inputs = inputs_hash(experiment)?;
    let mut cells = Vec::new();
    for (index, sampler) in experiment.samplers.iter().enumerate() {
        for &steps in &sampler.steps {
            let name = format!("{} {steps}", sampler.label);
            if only.is_some_and(|only| !selects(only, &sampler.label, &name)) {
                continue;
            }
            let samples = sampler
                .samples
                .or(experiment.quality.as_ref().map(|q| q.samples))
                .unwrap_or(0)
                .max(experiment.seeds.len());
            let seeds = seeds_for(&experiment.seeds, samples);
            let mut hash = Sha256::new();
            hash.update(&inputs);
            hash.update(serde_json::to_string(&sampler.resolved.settings).unwrap_or_default());
            hash.update(steps.to_le_bytes());
            for s in &seeds {
                hash.update(s.to_le_bytes());
            }
            cells.push(Cell {
                name,
                label: sampler.label.clone(),
                class: sampler.resolved.config.class_name().to_string(),
                config: sampler.resolved.config.clone(),
                settings: sampler.resolved.settings.clone(),
                steps,
                preview: experiment.seeds.len(),
                seeds,
                key: hex(&hash.finalize()[..12]),
                warnings: experiment.warnings_for(index),
            });
        }
    }
    Ok(cells)
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
