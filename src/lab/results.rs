//! What a cell produced, and the results files: results.json (read back to skip unchanged cells) and
//! results.csv, both written atomically.

use super::scores::frame_change::FRAME_CHANGE;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::scores::{Csv, Inputs, Scores, columns, score_all};
use crate::atomic_file::write_atomic;
use crate::experiment::per_controlnet_text;
use crate::path_error::{PathError, at};

/// One cell's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub name: String,
    pub label: String,
    pub class: String,
    pub steps: usize,
    /// Model evaluations per sample.
    pub nfe: usize,
    pub samples: usize,
    /// Seconds from the cell's first to its last step (its share of shared model calls).
    pub wall_s: f64,
    pub model_ms_per_step: f64,
    pub sampler_ms_per_step: f64,
    pub ms_per_sample: f64,
    /// Every metric's value by its key ("fid", "kid", …), flat in results.json.
    #[serde(flatten)]
    pub scores: Scores,
    pub provider: String,
    /// Whether fp32 math on the GPU could use TF32 (`[model.cuda] tf32`; TensorRT's own default is on);
    /// absent off the GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf32: Option<bool>,
    /// PNG grid of the preview seeds, relative to the output folder.
    pub grid: String,
    pub key: String,
    /// Why the cell failed (e.g. the model's output was not finite); `None` for a finished cell.
    /// Files written before this field existed read as finished.
    #[serde(default)]
    pub error: Option<String>,
    /// What the experiment asks of this cell that difflab ignores or adjusts (an unknown scheduler
    /// setting, a capped thread count), located in the experiment file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The classifier-free guidance scale (1: none).
    #[serde(default = "no_guidance")]
    pub guidance: f64,
    /// diffusers' `guidance_rescale` (φ).
    #[serde(default)]
    pub guidance_rescale: f64,
    /// A flow sampler's shift, where the experiment sets one (`[[sampler]] shift`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<f64>,
    /// img2img's strength, where the cell starts from a start image (`[[sampler]] strength`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    /// A ControlNet cell's conditioning scale, and the share of the steps it was on (`[[sampler]] control_scale`,
    /// `control_guidance_start` / `_end`).
    /// With several ControlNets each is a list, one per ControlNet in the model's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_scale: Option<PerControlNet<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_window: Option<PerControlNet<[f64; 2]>>,
    /// The guidance method and its parameters, where it is not plain CFG (`apg eta=0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_method: Option<String>,
    /// The value of each sampler axis that varies across the sampler's cells (`schedule`, `eta`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub axes: BTreeMap<String, serde_json::Value>,
    /// FLUX's true classifier-free guidance scale, where it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_cfg_scale: Option<f64>,
    /// The prompts of the cell's rows (text-conditional runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// The classes its seeds cycle through (class-conditional runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<i64>,
    /// The accuracy of each prompt's (or class's) samples, in the order of `prompts` (or `classes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accuracies: Vec<f64>,
    /// The reference solve's cell name ("reference dpm++3m 500") the `ref_*` scores compare with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

fn no_guidance() -> f64 {
    1.0
}

impl CellResult {
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// A metric's value by its key ("fid", "ref_rmse", …).
    pub fn score(&self, key: &str) -> Option<f64> {
        self.scores.get(key)
    }

    /// Puts a finished cell's scores, its per-prompt accuracies and its reference's name into it.
    pub fn put_scores(&mut self, inputs: &Inputs) {
        self.scores = score_all(inputs);
        if let Some(h) = inputs.hits {
            self.accuracies = h.accuracy().per_condition;
        }
        self.reference = inputs.against.map(|a| a.reference.clone());
    }
}

/// The results file: every finished cell and how the model calls went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub experiment: String,
    pub cells: Vec<CellResult>,
    /// Model calls made, and how many running each cell alone would have taken.
    pub model_calls: usize,
    pub unbatched_model_calls: usize,
    /// One finished image's C, H, W (decoded, for latent models): what reading the cells' grids back needs,
    /// so a run whose cells are all up to date loads no model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_shape: Option<[usize; 3]>,
    /// Frames per clip of a video model (its images are clips C, F·H, W); absent for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<usize>,
}

impl Results {
    /// Frames per sample: 1 for images.
    pub fn frames(&self) -> usize {
        self.frames.unwrap_or(1)
    }

    /// Records the frames per sample (nothing for images).
    pub fn set_frames(&mut self, frames: usize) {
        self.frames = (frames > 1).then_some(frames);
    }
    /// Reads results.json; a missing or unreadable file is an empty result set (for display; a run
    /// uses [`Results::open`], which keeps an unreadable file).
    pub fn load(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Reads results.json for a run that will rewrite it. A missing file is an empty result set; one
    /// that does not parse is moved aside to `results.json.corrupt-<unix seconds>`, never overwritten,
    /// and the returned warning says so. A folder or an unreadable file is an error naming it.
    pub fn open(path: &Path) -> Result<(Self, Option<String>), PathError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Self::default(), None));
            }
            Err(e) => return Err(PathError::io("read the results file", path, &e)),
        };
        let problem = match serde_json::from_str(&text) {
            Ok(results) => return Ok((results, None)),
            Err(e) => e,
        };
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{secs}"));
        let aside = std::path::PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(at("move the unreadable results file", path))?;
        let warning = format!(
            "warning: {} is not a results file difflab can read ({problem}); moved it to {} and starting a new one",
            path.display(),
            aside.display()
        );
        Ok((Self::default(), Some(warning)))
    }

    /// Replaces or adds a cell's result (by name).
    pub fn put(&mut self, result: CellResult) {
        match self.cells.iter_mut().find(|c| c.name == result.name) {
            Some(c) => *c = result,
            None => self.cells.push(result),
        }
    }

    /// Writes results.json and results.csv into `dir`, each atomically.
    pub fn save(&self, dir: &Path) -> Result<(), PathError> {
        let path = dir.join("results.json");
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| PathError::other("write the results file", &path, e))?;
        write_atomic(&dir.join("results.json"), json.as_bytes())?;
        write_atomic(&dir.join("results.csv"), self.csv().as_bytes())
    }

    fn csv(&self) -> String {
        let scores = || columns().filter(|c| c.csv != Csv::Omit);
        let mut header = vec![
            "name",
            "sampler",
            "class",
            "steps",
            "nfe",
            "samples",
            "wall_s",
            "model_ms_per_step",
            "sampler_ms_per_step",
            "ms_per_sample",
        ];
        header.extend(scores().map(|c| c.key));
        // Every sampler axis some cell has, but those with columns of their own.
        let axes: BTreeSet<&str> = (self.cells.iter())
            .flat_map(|c| c.axes.keys().map(String::as_str))
            .filter(|k| !["shift", "guidance_method", "strength", "control_scale"].contains(k))
            .collect();
        // img2img runs have a strength column; others keep the columns they had.
        let img2img = self.cells.iter().any(|c| c.strength.is_some());
        header.extend([
            "guidance",
            "guidance_rescale",
            "guidance_method",
            "shift",
            "true_cfg_scale",
            "prompt",
            "classes",
            "provider",
            "status",
            "error",
        ]);
        if img2img {
            header.extend(["strength", "start_rmse"]);
        }
        // Video runs have the clips' change from frame to frame.
        let video = self.cells.iter().any(|c| c.score(FRAME_CHANGE).is_some());
        if video {
            header.push(FRAME_CHANGE);
        }
        // ControlNet runs have the scale and its window.
        let controlnet = self.cells.iter().any(|c| c.control_scale.is_some());
        if controlnet {
            header.extend([
                "control_scale",
                "control_guidance_start",
                "control_guidance_end",
            ]);
        }
        header.extend(axes.iter().copied());
        let mut out = header.join(",") + "\n";
        for c in &self.cells {
            let mut row = vec![
                csv_field(&c.name),
                csv_field(&c.label),
                c.class.clone(),
                c.steps.to_string(),
                c.nfe.to_string(),
                c.samples.to_string(),
                format!("{:.6}", c.wall_s),
                format!("{:.6}", c.model_ms_per_step),
                format!("{:.6}", c.sampler_ms_per_step),
                format!("{:.6}", c.ms_per_sample),
            ];
            row.extend(scores().map(|col| match (c.score(col.key), col.csv) {
                (None, _) => String::new(),
                (Some(v), Csv::Scientific) => format!("{v:.6e}"),
                (Some(v), _) => format!("{v:.6}"),
            }));
            let classes: Vec<String> = c.classes.iter().map(i64::to_string).collect();
            row.extend([
                c.guidance.to_string(),
                c.guidance_rescale.to_string(),
                csv_field(c.guidance_method.as_deref().unwrap_or("cfg")),
                c.shift.map_or(String::new(), |s| s.to_string()),
                c.true_cfg_scale.map_or(String::new(), |s| s.to_string()),
                csv_field(&c.prompts.join(" | ")),
                classes.join(" "),
                csv_field(&c.provider),
                (if c.failed() { "failed" } else { "done" }).to_string(),
                csv_field(c.error.as_deref().unwrap_or("")),
            ]);
            if img2img {
                row.push(c.strength.map_or(String::new(), |s| s.to_string()));
                let rmse = c.score(super::scores::start_distance::RMSE);
                row.push(rmse.map_or(String::new(), |e| format!("{e:.6}")));
            }
            if video {
                let change = c.score(FRAME_CHANGE);
                row.push(change.map_or(String::new(), |v| format!("{v:.6}")));
            }
            if controlnet {
                let windows = c.control_window.as_ref().map(PerControlNet::values);
                let joined = |k: usize| {
                    let values: Option<Vec<f64>> =
                        windows.as_ref().map(|w| w.iter().map(|w| w[k]).collect());
                    values.map_or(String::new(), |v| per_controlnet_text(&v))
                };
                let scale = c.control_scale.as_ref().map(PerControlNet::values);
                row.push(scale.map_or(String::new(), |v| per_controlnet_text(&v)));
                row.extend([joined(0), joined(1)]);
            }
            row.extend(axes.iter().map(|k| match c.axes.get(*k) {
                Some(serde_json::Value::String(v)) => csv_field(v.as_str()),
                Some(v) => v.to_string(),
                None => String::new(),
            }));
            out.push_str(&(row.join(",") + "\n"));
        }
        out
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A value of a ControlNet cell: one for a single ControlNet, a list (one per ControlNet) for several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerControlNet<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerControlNet<T> {
    /// The values of the model's ControlNets, in its order.
    pub fn of(values: Vec<T>) -> Self {
        match <[T; 1]>::try_from(values) {
            Ok([one]) => Self::One(one),
            Err(values) => Self::Each(values),
        }
    }

    pub fn values(&self) -> Vec<T> {
        match self {
            Self::One(v) => vec![v.clone()],
            Self::Each(list) => list.clone(),
        }
    }
}
