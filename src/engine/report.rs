//! [`inspect`]: everything `difflab info` shows about a model — the runtime, the inputs and outputs with their
//! roles, what became of each execution provider, where the nodes run, and how long a call takes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::condition::{Condition, ItemTensor};
use super::denoiser::Denoiser;
use super::error::EngineError;
use super::onnx::{OnnxDenoiser, PredictionSource};
use super::providers::{ProviderAttempt, ProviderKind};
use super::roles::{Dim, ModelRoles, Role, TensorSpec, shape_text};
use super::runtime::RuntimeInfo;
use super::session::OnnxOptions;
use crate::sampler::PredictionType;

/// How `inspect` times the model: one warm-up call, then `runs` calls, or as many as fit in `budget`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimingPlan {
    /// The batch to time; 0 times nothing.
    pub batch: usize,
    /// Exactly this many timed calls; `None`: as many as fit in `budget` (at least one).
    pub runs: Option<usize>,
    pub budget: Duration,
}

impl Default for TimingPlan {
    fn default() -> Self {
        TimingPlan {
            batch: 1,
            runs: None,
            budget: Duration::from_secs(10),
        }
    }
}

/// The median time of one `predict` call at one batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub batch: usize,
    pub median: Duration,
    /// Timed calls (after warm-up).
    pub runs: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InfoReport {
    pub model: PathBuf,
    pub runtime: RuntimeInfo,
    pub inputs: Vec<(TensorSpec, Option<Role>)>,
    pub outputs: Vec<(TensorSpec, Option<Role>)>,
    pub sample_shape: [usize; 3],
    /// Frames per clip (a video model's sample is C, F·H, W); 1 for images.
    pub frames: usize,
    /// Input channels beside the sample's (an inpainting U-Net's mask and masked-image latents).
    pub extra_channels: usize,
    /// ControlNets the graph holds, each taking a control image and a scale.
    pub controlnets: usize,
    pub fixed_batch: Option<usize>,
    pub timestep_per_item: bool,
    pub prediction_type: PredictionType,
    pub prediction_source: PredictionSource,
    /// The providers asked for, in order of preference.
    pub requested: Vec<ProviderKind>,
    pub attempts: Vec<ProviderAttempt>,
    pub provider: ProviderKind,
    /// Nodes per provider (ONNX Runtime's provider names), when profiling could tell.
    pub nodes: Option<BTreeMap<String, usize>>,
    pub timings: Vec<Timing>,
    /// What was not finite in the output of the calls made to time the model, if anything.
    pub non_finite: Option<String>,
    /// The process's peak resident memory after loading and timing the model (Linux), in bytes.
    pub peak_rss: Option<u64>,
}

/// Loads the model (with node profiling), runs it once at batch 1 to see where its nodes run (which warms
/// it up), then times `predict` at the plan's batch: one more warm-up call when that batch is larger, then
/// the plan's runs.
pub fn inspect(
    path: impl Into<PathBuf>,
    options: &OnnxOptions,
    plan: &TimingPlan,
) -> Result<InfoReport, EngineError> {
    let path = path.into();
    let mut options = options.clone();
    options.profile_nodes = true;
    let mut model = OnnxDenoiser::load(&path, &options)?;
    model.set_conditions(vec![timing_condition(model.roles())])?;
    let info = model.info();
    let per_item: usize = info.sample_shape.iter().product();
    // An inpainting U-Net takes its extra channels beside each sample.
    let per_input = per_item / info.sample_shape[0] * (info.sample_shape[0] + info.extra_channels);

    let input = |batch: usize| -> (Vec<f32>, Vec<f64>) {
        let sample = (0..batch * per_input)
            .map(|i| ((i as f32) * 0.618).sin())
            .collect();
        (sample, vec![500.0; batch])
    };

    // A ControlNet graph times with blank control images at full scale.
    let control = |model: &mut OnnxDenoiser, batch: usize| {
        // A U-Net another network feeds (a ControlNet's residuals) times with zeros there.
        let fed = model.fed_zeros(batch);
        model.set_fed(fed);
        let nets = model.controlnets();
        if nets > 0 {
            let [_, h, w] = info.sample_shape;
            model.set_control(
                &vec![0.0; nets * batch * 3 * 64 * h * w],
                &vec![1.0; nets * batch],
            );
        }
    };
    let (sample, timesteps) = input(1);
    control(&mut model, 1);
    let mut out = vec![0.0; per_item];
    model.predict(&sample, &timesteps, &mut out)?;
    let mut non_finite = non_finite_note(&out, 1);
    let nodes = model.nodes_per_provider()?;

    let mut timings = Vec::new();
    if plan.batch > 0 {
        let (sample, timesteps) = input(plan.batch);
        control(&mut model, plan.batch);
        let mut out = vec![0.0; plan.batch * per_item];
        if plan.batch > 1 {
            model.predict(&sample, &timesteps, &mut out)?;
        }
        let started = Instant::now();
        let mut times = Vec::new();
        while plan
            .runs
            .map_or(times.is_empty() || started.elapsed() < plan.budget, |n| {
                times.len() < n.max(1)
            })
        {
            let start = Instant::now();
            model.predict(&sample, &timesteps, &mut out)?;
            times.push(start.elapsed());
        }
        non_finite = non_finite.or_else(|| non_finite_note(&out, plan.batch));
        times.sort();
        timings.push(Timing {
            batch: plan.batch,
            median: times[times.len() / 2],
            runs: times.len(),
        });
    }

    let roles = model.roles();
    let with_roles = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|s| (s.clone(), roles.role_of(&s.name)))
            .collect()
    };
    Ok(InfoReport {
        inputs: with_roles(model.inputs()),
        outputs: with_roles(model.outputs()),
        sample_shape: roles.sample_shape,
        frames: roles.frames,
        extra_channels: roles.extra_channels,
        controlnets: roles.controlnets,
        fixed_batch: roles.fixed_batch,
        timestep_per_item: roles.timestep_per_item,
        prediction_type: info.prediction_type,
        prediction_source: model.prediction_source().clone(),
        requested: options.providers.preference.clone(),
        attempts: model.attempts().to_vec(),
        provider: model.provider(),
        runtime: model.runtime().clone(),
        model: path,
        nodes,
        timings,
        non_finite,
        peak_rss: peak_rss(),
    })
}

/// The process's peak resident set size (VmHWM), where the system tells.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A warning when a timing call's output holds NaN or ±Inf: sampling with the model would fail.
fn non_finite_note(out: &[f32], batch: usize) -> Option<String> {
    super::NonFinite::count(out).map(|n| {
        format!(
            "the model's output is not finite (batch {batch}, t = 500, a smooth test input): {n}; a lab run with it fails"
        )
    })
}

fn duration_text(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.1} µs", secs * 1e6)
    }
}

impl fmt::Display for InfoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rt = &self.runtime;
        writeln!(f, "model     {}", self.model.display())?;
        writeln!(
            f,
            "runtime   ONNX Runtime {} at {}",
            rt.version,
            rt.path.display()
        )?;
        writeln!(f, "          found via {}", rt.source)?;
        for skipped in &rt.passed_over {
            writeln!(f, "          passed over {skipped}")?;
        }
        writeln!(
            f,
            "          providers in this build: {}",
            rt.providers.join(", ")
        )?;

        write_tensors(f, "inputs", &self.inputs, "(fed by the ControlNet)")?;
        write_tensors(f, "outputs", &self.outputs, "(unused)")?;
        let [c, h, w] = self.sample_shape;
        let shape = match self.frames {
            1 => format!("{c}×{h}×{w}"),
            f => format!("{c}×{f}×{}×{w} (C×F×H×W, a clip of {f} frames)", h / f),
        };
        let batch = match self.fixed_batch {
            Some(b) => format!("fixed batch {b} (larger batches are split)"),
            None => "dynamic batch".to_string(),
        };
        let timestep = if self.timestep_per_item {
            "one timestep per item"
        } else {
            "one timestep per call (split where timesteps differ)"
        };
        writeln!(f, "sample    {shape}, {batch}, {timestep}")?;
        if self.extra_channels > 0 {
            let extra = self.extra_channels;
            writeln!(
                f,
                "          and {extra} more input channels beside it: an inpainting U-Net's mask and masked-image latents"
            )?;
        }
        match self.controlnets {
            0 => {}
            1 => writeln!(
                f,
                "control   1 ControlNet in the graph: [conditioning] control_image, [[sampler]] control_scale"
            )?,
            n => writeln!(
                f,
                "control   {n} ControlNets in the graph, in this order: one [[conditioning.controlnet]] table each \
                 (its image); [[sampler]] control_scale per ControlNet as [[a, b]]"
            )?,
        }
        writeln!(
            f,
            "predicts  {} ({})",
            self.prediction_type, self.prediction_source
        )?;

        writeln!(f, "execution providers (in order of preference)")?;
        for attempt in &self.attempts {
            let note = if self.requested.contains(&attempt.provider) {
                ""
            } else {
                " (fallback; not requested)"
            };
            writeln!(
                f,
                "  {:<9} {}{note}",
                attempt.provider.key(),
                attempt.outcome
            )?;
        }
        writeln!(
            f,
            "runs on   {} ({})",
            self.provider,
            self.provider.ort_name()
        )?;
        match &self.nodes {
            Some(nodes) if !nodes.is_empty() => {
                let parts: Vec<String> = nodes
                    .iter()
                    .map(|(provider, n)| format!("{n} on {provider}"))
                    .collect();
                writeln!(
                    f,
                    "nodes     {} (as run, after graph optimisation)",
                    parts.join(", ")
                )?;
            }
            _ => writeln!(f, "nodes     (the profile recorded no nodes)")?,
        }
        if let Some(bytes) = self.peak_rss {
            writeln!(
                f,
                "memory    peak {:.2} GB resident in this process (the model loaded and timed)",
                bytes as f64 / 1e9
            )?;
        }
        if !self.timings.is_empty() {
            writeln!(f, "timing    one predict call, median after warm-up")?;
            for t in &self.timings {
                writeln!(
                    f,
                    "  batch {:<4} {:>10}  ({} runs)",
                    t.batch,
                    duration_text(t.median),
                    t.runs
                )?;
            }
        }
        Ok(())
    }
}

/// One table of `difflab info`: each tensor's name, shape, element type and role.
fn write_tensors(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    tensors: &[(TensorSpec, Option<Role>)],
    no_role: &str,
) -> fmt::Result {
    writeln!(f, "{title}")?;
    for (spec, role) in tensors {
        let role = role.map_or(no_role.to_string(), |r| r.to_string());
        writeln!(
            f,
            "  {:<24} {:<20} {:<8} -> {role}",
            spec.name,
            shape_text(&spec.dims),
            spec.elem.to_string()
        )?;
    }
    Ok(())
}

/// Zero conditioning to time a conditional model with: a symbolic token count becomes CLIP's 77 and any other
/// symbolic dim 1, so a text-conditional U-Net can be called without a prompt.
fn timing_condition(roles: &ModelRoles) -> Condition {
    let mut condition = Condition::default();
    for (role, spec) in roles.tensor_conditions() {
        let rank = spec.dims.len();
        let shape: Vec<usize> = spec.dims[1..]
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Fixed(n) => *n,
                Dim::Symbolic(_) if rank == 3 && i == 0 => 77,
                Dim::Symbolic(_) => 1,
            })
            .collect();
        let value = Some(ItemTensor::zeros(shape));
        match role {
            Role::Conditioning => condition.hidden_states = value,
            Role::TextEmbeds => condition.text_embeds = value,
            Role::TimeIds => condition.time_ids = value,
            // A mask of zeros hides every token, which attention turns into NaN.
            Role::TextMask => {
                condition.text_mask =
                    value.map(|m| ItemTensor::new(m.shape, vec![1.0; m.data.len()]))
            }
            _ => condition.timestep_cond = value,
        }
    }
    condition
}
