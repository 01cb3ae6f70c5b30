//! The experiment file as written: serde's view of the TOML, before paths resolve and values are
//! checked. Spanned fields are the ones checked afterwards, so errors can point at them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExperimentFile {
    pub name: Option<String>,
    pub output: Option<String>,
    pub model: ModelSection,
    pub conditioning: Option<Spanned<ConditioningSection>>,
    pub sampling: Option<SamplingSection>,
    #[serde(rename = "sampler")]
    pub samplers: Spanned<Vec<SamplerSection>>,
    pub quality: Option<Spanned<QualitySection>>,
    pub training: Option<TrainingSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelSection {
    pub path: Spanned<String>,
    pub providers: Option<Vec<Spanned<String>>>,
    pub fallback: Option<bool>,
    pub device_id: Option<i32>,
    pub prediction_type: Option<Spanned<String>>,
    pub scheduler_config: Option<Spanned<String>>,
    pub runtime: Option<String>,
    pub threads: Option<Spanned<usize>>,
    pub tensorrt: Option<TensorRtSection>,
    pub cuda: Option<CudaSection>,
    pub roles: Option<BTreeMap<Spanned<String>, String>>,
    pub sample_shape: Option<Spanned<Vec<usize>>>,
    pub fps: Option<Spanned<f64>>,
    pub vae_decoder: Option<Spanned<String>>,
    pub vae_encoder: Option<Spanned<String>>,
    /// ControlNets exported on their own: one file, or a list (their residuals are summed).
    pub controlnet: Option<Spanned<ModelFiles>>,
    pub vae_batch: Option<Spanned<usize>>,
    pub text_encoder: Option<Spanned<String>>,
    pub tokenizer: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConditioningSection {
    pub prompts: Option<Spanned<Vec<String>>>,
    pub negative_prompt: Option<Spanned<String>>,
    pub embeddings: Option<Spanned<String>>,
    pub classes: Option<Spanned<Vec<Spanned<i64>>>>,
    pub null_class: Option<Spanned<i64>>,
    /// T5's (SD3, Flux) or Gemma's (Sana) token count.
    pub max_sequence_length: Option<Spanned<usize>>,
    /// Sana's instruction before each prompt: on (the pipeline's own), off, or its lines.
    pub complex_human_instruction: Option<Spanned<Instruction>>,
    /// The image(s) img2img starts from: one for every sample, one per prompt (or class), or one per seed.
    pub init_image: Option<Spanned<ImagePaths>>,
    /// Inpainting: white repaints, black keeps (one mask, or one per start image).
    pub mask: Option<Spanned<ImagePaths>>,
    /// A ControlNet's control image: one for every sample, one per prompt (or class), or one per seed.
    pub control_image: Option<Spanned<ImagePaths>>,
    /// Several ControlNets: one table each, in the order the model takes them.
    pub controlnet: Option<Spanned<Vec<ControlNetTable>>>,
}

/// One ControlNet of several (`[[conditioning.controlnet]]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlNetTable {
    /// Its control image(s), as `control_image` takes them.
    pub image: Spanned<ImagePaths>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`controlnet` must be an .onnx file or a list of them, e.g. \"controlnet/model.onnx\""
)]
pub(super) enum ModelFiles {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`init_image` must be an image file or a list of them, e.g. \"three.png\" or [\"a.png\", \"b.png\"]"
)]
pub(super) enum ImagePaths {
    One(String),
    Many(Vec<String>),
}

impl ImagePaths {
    pub fn list(&self) -> Vec<String> {
        match self {
            Self::One(p) => vec![p.clone()],
            Self::Many(list) => list.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`complex_human_instruction` must be true (Sana's own), false (none) or a list of lines"
)]
pub(super) enum Instruction {
    On(bool),
    Lines(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TensorRtSection {
    pub fp16: Option<bool>,
    pub engine_cache: Option<String>,
    pub max_workspace: Option<usize>,
    pub builder_optimization_level: Option<Spanned<u8>>,
    pub layer_norm_fp32_fallback: Option<bool>,
    pub cuda_graph: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CudaSection {
    pub tf32: Option<bool>,
    pub cudnn_conv_algo_search: Option<Spanned<String>>,
    pub arena_extend_strategy: Option<Spanned<String>>,
    pub gpu_mem_limit: Option<usize>,
    pub prefer_nhwc: Option<bool>,
    pub cuda_graph: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SamplingSection {
    pub seeds: Option<Spanned<Seeds>>,
    pub batch: Option<Spanned<usize>>,
    pub init_noise: Option<Spanned<String>>,
    pub preview: Option<Spanned<PreviewKind>>,
    pub preview_every: Option<Spanned<usize>>,
    pub noise: Option<Spanned<NoiseKind>>,
}

/// `[sampling] noise`: where seed k's initial noise comes from.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    /// difflab's own per-seed generator.
    #[default]
    Difflab,
    /// `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(k))`, as diffusers draws it.
    Torch,
}

/// `[sampling] preview`: how latent models' live previews are made.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum PreviewKind {
    Approx,
    Decode,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`seeds` must be a count (8 means seeds 0 to 7) or a list of seeds, e.g. [3, 7, 11]"
)]
pub(super) enum Seeds {
    Count(u64),
    List(Vec<u64>),
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`steps` must be a step count or a list of step counts, e.g. 50 or [10, 20, 50]"
)]
pub(super) enum Steps {
    One(usize),
    Many(Vec<usize>),
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`guidance` must be a guidance scale or a list of them, e.g. 7.5 or [1.0, 7.5]"
)]
pub(super) enum Guidance {
    One(f64),
    Many(Vec<f64>),
}

#[derive(Deserialize, Clone)]
#[serde(
    untagged,
    expecting = "a name or a list of names, e.g. \"karras\" or [\"karras\", \"kl_optimal\"]"
)]
pub(super) enum Names {
    One(String),
    Many(Vec<String>),
}

impl Names {
    pub fn list(&self) -> Vec<String> {
        match self {
            Self::One(n) => vec![n.clone()],
            Self::Many(list) => list.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`shift` must be a flow shift or a list of them, e.g. 3.0 or [1.0, 3.0, 6.0]"
)]
pub(super) enum Shift {
    One(f64),
    Many(Vec<f64>),
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`strength` must be a number in (0, 1] or a list of them, e.g. 0.6 or [0.3, 0.6, 0.9]"
)]
pub(super) enum Strength {
    One(f64),
    Many(Vec<f64>),
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`control_scale` must be a number or a list of them, e.g. 1.0 or [0.5, 1.0, 1.5]; with several \
                 ControlNets an entry may list one scale per ControlNet, e.g. [[1.0, 0.5], [0.5, 1.0]]"
)]
pub(super) enum ControlScale {
    One(f64),
    Many(Vec<PerControlNet>),
}

/// A number for every ControlNet, or one per ControlNet (as diffusers takes `controlnet_conditioning_scale`,
/// `control_guidance_start` and `_end`).
#[derive(Deserialize, Clone)]
#[serde(
    untagged,
    expecting = "a number, or a list of numbers, one per ControlNet"
)]
pub(super) enum PerControlNet {
    All(f64),
    Each(Vec<f64>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SamplerSection {
    pub name: Spanned<String>,
    pub steps: Spanned<Steps>,
    pub label: Option<String>,
    pub settings: Option<Spanned<toml::Table>>,
    /// The sigma schedule, as ComfyUI's scheduler beside its sampler ("karras", "kl_optimal", ...), or a list
    /// of them (an axis).
    pub schedule: Option<Spanned<Names>>,
    /// The sampler's own sigmas, one per step (a final 0 allowed), instead of a schedule.
    pub sigmas: Option<Spanned<Vec<f64>>>,
    pub samples: Option<Spanned<usize>>,
    pub guidance: Option<Spanned<Guidance>>,
    pub guidance_rescale: Option<Spanned<f64>>,
    /// How the guided prediction is made ("cfg", "apg", "cfg-zero-star", ...), or a list of them (an axis).
    pub guidance_method: Option<Spanned<Names>>,
    /// The guidance method's parameters.
    pub guidance_settings: Option<Spanned<toml::Table>>,
    /// Guidance only inside `[lo, hi]` (sigmas) or `{ start, stop }` (fractions of the steps).
    pub guidance_interval: Option<Spanned<toml::Value>>,
    /// A flow-matching sampler's timestep shift (`shift` of the FlowMatch classes, `flow_shift` of the
    /// multistep ones in flow mode), or a list of them.
    pub shift: Option<Spanned<Shift>>,
    /// img2img's strength (diffusers' `strength`): how much of the schedule runs from the noised start image.
    pub strength: Option<Spanned<Strength>>,
    /// A ControlNet's conditioning scale (diffusers' `controlnet_conditioning_scale`), a number or a list.
    pub control_scale: Option<Spanned<ControlScale>>,
    /// The share of the steps before which, and after which, the ControlNet is off.
    pub control_guidance_start: Option<Spanned<PerControlNet>>,
    pub control_guidance_end: Option<Spanned<PerControlNet>>,
    /// FLUX's true classifier-free guidance beside its embedded guidance (needs a negative prompt).
    pub true_cfg_scale: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QualitySection {
    pub baseline: Option<Spanned<String>>,
    pub features: Option<Spanned<String>>,
    pub reference: Option<Spanned<String>>,
    pub reference_sampler: Option<Spanned<String>>,
    pub reference_settings: Option<Spanned<toml::Table>>,
    pub samples: Option<Spanned<usize>>,
    pub kid_subsets: Option<Spanned<usize>>,
    pub kid_subset_size: Option<Spanned<usize>>,
    pub expected_classes: Option<Spanned<Vec<i64>>>,
    pub logits: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrainingSection {
    pub runs: Spanned<Vec<String>>,
}
