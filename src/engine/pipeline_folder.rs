//! A Stable Diffusion pipeline folder as Optimum's ONNX exporter writes it (`optimum-cli export onnx
//! --task text-to-image`): model_index.json lists the components as `[library, class]` pairs, and each
//! has its own folder with a model.onnx and the config.json diffusers or transformers saved. Only the
//! files are read here; the models are loaded elsewhere.
//!
//! Optimum writes `vae_decoder/` and `vae_encoder/` where model_index.json names `vae`, each with the
//! whole VAE config; the scaling factor comes from there and is never assumed.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::path_error;

type Object = Map<String, Value>;

const EXPORT: &str =
    "export the pipeline again with `optimum-cli export onnx --task text-to-image`";
const PROJECTION: &str = "CLIPTextModelWithProjection";
/// Each text encoder and the tokenizer folder that feeds it (SD3's third is T5).
const ENCODERS: [(&str, &str); 3] = [
    ("text_encoder", "tokenizer"),
    ("text_encoder_2", "tokenizer_2"),
    ("text_encoder_3", "tokenizer_3"),
];
/// Keys of model_index.json that difflab reads (the vae_encoder is known and quietly unused).
const USED: [&str; 12] = [
    "unet",
    "transformer",
    "text_encoder_3",
    "tokenizer_3",
    "vae",
    "vae_decoder",
    "vae_encoder",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "scheduler",
];

/// FluxPipeline's default latent size: 128 × its VAE's 8 = 1024 pixels.
const FLUX_DEFAULT_LATENT: usize = 128;

/// A pipeline folder's parts, checked to be on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineFolder {
    pub root: PathBuf,
    /// model_index.json's `_class_name`, e.g. "StableDiffusionXLPipeline".
    pub class_name: String,
    pub family: Family,
    /// root/unet/model.onnx, or root/transformer/model.onnx (SD3, Flux, Sana)
    pub denoiser: PathBuf,
    pub denoiser_config: DenoiserConfig,
    pub vae_decoder: Option<VaePart>,
    /// root/vae_encoder/model.onnx where the export has one (img2img and inpainting encode with it).
    pub vae_encoder: Option<VaePart>,
    /// root/controlnet/model.onnx: a ControlNet exported on its own, whose residuals the U-Net takes.
    pub controlnet: Option<PathBuf>,
    /// text_encoder, text_encoder_2 and text_encoder_3, as listed.
    pub text_encoders: Vec<TextEncoderPart>,
    /// root/scheduler/scheduler_config.json
    pub scheduler_config: Option<PathBuf>,
    /// model_index.json's force_zeros_for_empty_prompt (SDXL); false when absent.
    pub force_zeros_for_empty_prompt: bool,
    /// Components listed that difflab does not use, and other oddities, one line each for the log.
    pub warnings: Vec<String>,
}

/// A bare U-Net given with its parts is taken as Stable Diffusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    #[default]
    StableDiffusion,
    StableDiffusionXl,
    /// StableDiffusion3Pipeline: a transformer on two CLIPs and T5, flow matching.
    StableDiffusion3,
    /// FluxPipeline: a transformer on 2×2-packed latents, CLIP's pooled output and T5, flow matching.
    Flux,
    /// SanaPipeline: a linear-attention transformer on Gemma 2's states and their mask, a DC-AE, flow matching.
    Sana,
    /// DDPMPipeline and other unet-only pipelines
    UnetOnly,
}

/// What difflab needs from the U-Net's or transformer's config.json; all None when the file is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenoiserConfig {
    /// The config's `_class_name`, e.g. "UNet2DConditionModel".
    pub class_name: Option<String>,
    pub in_channels: Option<usize>,
    /// The prediction's channels where they differ from the input's (an inpainting U-Net takes 9, gives 4).
    pub out_channels: Option<usize>,
    pub sample_size: Option<usize>,
    pub cross_attention_dim: Option<usize>,
    pub num_class_embeds: Option<usize>,
    pub addition_embed_type: Option<String>,
    pub addition_time_embed_dim: Option<usize>,
    pub time_cond_proj_dim: Option<usize>,
    /// A transformer's patch size (2 for SD3).
    pub patch_size: Option<usize>,
    /// SD3's pooled text width (both CLIPs' projections side by side).
    pub pooled_projection_dim: Option<usize>,
    /// A transformer's text-state width (SD3: T5's).
    pub joint_attention_dim: Option<usize>,
    /// A motion U-Net's longest clip (AnimateDiff's temporal position embedding).
    pub motion_max_seq_length: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VaePart {
    /// root/vae_decoder/model.onnx
    pub model: PathBuf,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub latent_channels: Option<usize>,
    /// 2^(len(block_out_channels) - 1); 8 when the config has no block_out_channels.
    pub scale_factor: usize,
    /// The config's `force_upcast`: diffusers runs this VAE in float32 even in a float16 pipeline, because
    /// it overflows in float16 (SDXL's). False when absent.
    pub force_upcast: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextEncoderPart {
    /// "text_encoder" or "text_encoder_2"
    pub name: String,
    pub model: PathBuf,
    /// The tokenizer folder: tokenizer/ for text_encoder, tokenizer_2/ for text_encoder_2.
    pub tokenizer: PathBuf,
    /// CLIPTextModelWithProjection (SDXL's text_encoder_2, whose `text_embeds` the U-Net takes).
    pub with_projection: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "{} is not a pipeline folder: {reason}. Give a U-Net .onnx file, or a folder exported with \
         `optimum-cli export onnx --task text-to-image`",
        root.display()
    )]
    NotAPipeline { root: PathBuf, reason: String },
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{} is not valid JSON: {message}; fix the file or {EXPORT}", path.display())]
    Json { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{} lists no unet or transformer: difflab runs the denoiser of a pipeline, and this {class_name} has none", path.display())]
    NoUnet { path: PathBuf, class_name: String },
    #[error("{} is missing: model_index.json lists {component}, so difflab needs it; {hint}", path.display())]
    Missing {
        component: String,
        path: PathBuf,
        hint: String,
    },
    #[error(
        "{}: {reason}. A missing scaling factor is an error, not a guess: add \"scaling_factor\" to that \
         config.json (SD 1.x and 2.x use 0.18215, SDXL 0.13025)",
        path.display()
    )]
    ScalingFactor { path: PathBuf, reason: String },
    #[error(
        "{} lists {encoder} but no {tokenizer}, and a text encoder needs its tokenizer: add \
         \"{tokenizer}\": [\"transformers\", \"CLIPTokenizer\"] and the {tokenizer}/ folder \
         (vocab.json and merges.txt, or tokenizer.json)",
        path.display()
    )]
    NoTokenizer {
        path: PathBuf,
        encoder: String,
        tokenizer: String,
    },
}

/// True when `dir` holds a model_index.json.
pub fn is_pipeline_folder(dir: &Path) -> bool {
    dir.join("model_index.json").is_file()
}

/// Reads the pipeline folder at `root` and checks that every component difflab uses is there.
pub fn read_pipeline(root: &Path) -> Result<PipelineFolder, PipelineError> {
    let index_path = root.join("model_index.json");
    if !index_path.is_file() {
        return Err(not_a_pipeline(root));
    }
    let index = read_object(&index_path)?;
    let class_name = match index.get("_class_name").and_then(Value::as_str) {
        Some(name) => name.to_string(),
        None => {
            return Err(invalid(
                &index_path,
                "it has no \"_class_name\" (the pipeline's class, e.g. \"StableDiffusionPipeline\")",
            ));
        }
    };
    let folder = match ["unet", "transformer"]
        .into_iter()
        .map(|key| Ok((key, listed(&index, key, &index_path)?)))
        .collect::<Result<Vec<_>, PipelineError>>()?
        .into_iter()
        .find(|(_, entry)| entry.is_some())
    {
        Some((key, _)) => key,
        None => {
            return Err(PipelineError::NoUnet {
                path: index_path,
                class_name,
            });
        }
    };
    let denoiser = model_file(root, folder, folder)?;
    let denoiser_config = read_denoiser_config(&root.join(folder).join("config.json"))?;
    let vae_decoder = read_vae(root, &index, &index_path)?;
    let vae_encoder = read_vae_encoder(root, vae_decoder.is_some())?;
    let controlnet = Some(root.join("controlnet").join("model.onnx")).filter(|p| p.is_file());
    let text_encoders = read_text_encoders(root, &index, &index_path)?;
    let scheduler_config = read_scheduler(root, &index, &index_path)?;
    let force_zeros_for_empty_prompt = force_zeros(&index, &index_path)?;
    let mut warnings = unused_components(&index, &index_path);
    let (family, note) = family(&class_name, !text_encoders.is_empty());
    warnings.extend(note);
    Ok(PipelineFolder {
        root: root.to_path_buf(),
        class_name,
        family,
        denoiser,
        denoiser_config,
        vae_decoder,
        vae_encoder,
        controlnet,
        text_encoders,
        scheduler_config,
        force_zeros_for_empty_prompt,
        warnings,
    })
}

impl PipelineFolder {
    /// One line per component for `difflab info`, e.g.
    /// "unet: unet/model.onnx (UNet2DConditionModel, latents 4×8×8, cross-attention 8)".
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{}: {} ({})",
            self.denoiser_name(),
            self.shown(&self.denoiser),
            denoiser_summary(&self.denoiser_config)
        )];
        if let Some(vae) = &self.vae_decoder {
            lines.push(format!(
                "vae_decoder: {} ({})",
                self.shown(&vae.model),
                vae_summary(vae)
            ));
        }
        if let Some(controlnet) = &self.controlnet {
            lines.push(format!(
                "controlnet: {} (a ControlNet on its own: its outputs feed the {}'s inputs of the same names)",
                self.shown(controlnet),
                self.denoiser_name()
            ));
        }
        if let Some(vae) = &self.vae_encoder {
            lines.push(format!(
                "vae_encoder: {} (images → latents for img2img and inpainting, {}× downscale)",
                self.shown(&vae.model),
                vae.scale_factor
            ));
        }
        for encoder in &self.text_encoders {
            let projection = if encoder.with_projection {
                "with projection, "
            } else {
                ""
            };
            lines.push(format!(
                "{}: {} ({projection}tokenizer {}/)",
                encoder.name,
                self.shown(&encoder.model),
                self.relative(&encoder.tokenizer).display()
            ));
        }
        if let Some(scheduler) = &self.scheduler_config {
            lines.push(format!("scheduler: {}", self.relative(scheduler).display()));
        }
        lines
    }

    /// The denoiser's folder name: "unet", or "transformer" for SD3, Flux and Sana.
    pub fn denoiser_name(&self) -> String {
        self.relative(&self.denoiser)
            .components()
            .next()
            .map_or("unet".into(), |c| {
                c.as_os_str().to_string_lossy().into_owned()
            })
    }

    /// Latent C, H, W from the denoiser's config (in_channels, sample_size) when both are known. FLUX packs
    /// 2×2 latent pixels into its 64 channels and has no sample size: 16 channels at diffusers' default 1024²
    /// (128×128 latents).
    pub fn latent_shape(&self) -> Option<[usize; 3]> {
        if self.family == Family::Flux {
            let channels = self.denoiser_config.in_channels? / 4;
            return Some([channels, FLUX_DEFAULT_LATENT, FLUX_DEFAULT_LATENT]);
        }
        // The sample has the prediction's channels: an inpainting U-Net's other inputs ride on its channels.
        let config = &self.denoiser_config;
        let channels = config.out_channels.or(config.in_channels)?;
        let size = config.sample_size?;
        Some([channels, size, size])
    }

    /// Frames per clip for a video pipeline whose U-Net leaves them open: AnimateDiffPipeline's default
    /// `num_frames`, 16. `None` for image pipelines.
    pub fn default_frames(&self) -> Option<usize> {
        self.class_name.starts_with("AnimateDiff").then_some(16)
    }

    /// Why the folder gives no latent shape, when it gives none: its U-Net config is missing or lacks the keys.
    pub fn no_latent_shape(&self) -> Option<String> {
        if self.latent_shape().is_some() {
            return None;
        }
        let config = self.denoiser.with_file_name("config.json");
        Some(if config.is_file() {
            format!(
                "{} gives no in_channels and sample_size, which fix them",
                config.display()
            )
        } else {
            format!(
                "{} is missing (its in_channels and sample_size fix them)",
                config.display()
            )
        })
    }

    /// The VAE's spatial factor: 2^(len(block_out_channels) - 1) from vae_decoder/config.json, 8 when absent.
    pub fn vae_scale_factor(&self) -> usize {
        self.vae_decoder.as_ref().map_or(8, |vae| vae.scale_factor)
    }

    fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }

    /// A model's path, and its external-data file when the weights are kept beside it.
    fn shown(&self, model: &Path) -> String {
        let data = model.with_extension("onnx_data");
        let mut text = self.relative(model).display().to_string();
        if data.is_file() {
            text.push_str(" + model.onnx_data");
        }
        text
    }
}

fn denoiser_summary(config: &DenoiserConfig) -> String {
    let mut parts: Vec<String> = config.class_name.iter().cloned().collect();
    match (config.in_channels, config.sample_size) {
        (Some(c), Some(s)) => {
            let c = config.out_channels.unwrap_or(c);
            parts.push(format!("latents {c}×{s}×{s}"))
        }
        (Some(c), None) => parts.push(format!("{c} input channels")),
        _ => {}
    }
    if let (Some(9), Some(4)) = (config.in_channels, config.out_channels) {
        parts.push("inpainting: latents, mask and masked-image latents on 9 input channels".into());
    }
    if let Some(dim) = config.cross_attention_dim {
        parts.push(format!("cross-attention {dim}"));
    }
    if let Some(n) = config.num_class_embeds {
        parts.push(format!("{n} class embeddings"));
    }
    if let Some(kind) = &config.addition_embed_type {
        parts.push(format!("added conditioning {kind}"));
    }
    if let Some(dim) = config.time_cond_proj_dim {
        parts.push(format!("guidance embedding {dim}"));
    }
    if let Some(p) = config.patch_size {
        parts.push(format!("patch {p}"));
    }
    if let Some(dim) = config.joint_attention_dim {
        parts.push(format!("text width {dim}"));
    }
    if let Some(dim) = config.pooled_projection_dim {
        parts.push(format!("pooled {dim}"));
    }
    if parts.is_empty() {
        return "no config.json".into();
    }
    parts.join(", ")
}

fn vae_summary(vae: &VaePart) -> String {
    let mut parts = vec![format!("scaling factor {}", vae.scaling_factor)];
    if let Some(shift) = vae.shift_factor {
        parts.push(format!("shift factor {shift}"));
    }
    if let Some(c) = vae.latent_channels {
        parts.push(format!("{c} latent channels"));
    }
    parts.push(format!("{}× upscale", vae.scale_factor));
    parts.join(", ")
}

fn not_a_pipeline(root: &Path) -> PipelineError {
    let reason = if root.is_dir() {
        "it has no model_index.json"
    } else if root.exists() {
        "it is a file, not a folder with a model_index.json"
    } else {
        "no such folder"
    };
    PipelineError::NotAPipeline {
        root: root.to_path_buf(),
        reason: reason.into(),
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> PipelineError {
    PipelineError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_object(path: &Path) -> Result<Object, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Read {
        path: path.to_path_buf(),
        reason: path_error::reason(path, &e),
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(invalid(
            path,
            format!("it holds {}, not a JSON object", kind(&other)),
        )),
        Err(e) => Err(PipelineError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Configs beside a model are optional unless a value in them is needed.
fn read_optional_object(path: &Path) -> Result<Option<Object>, PipelineError> {
    if path.exists() {
        read_object(path).map(Some)
    } else {
        Ok(None)
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value as the user wrote it, or its kind when that would be long.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 40 {
        text
    } else {
        kind(value).into()
    }
}

/// A `[library, class]` entry that is not `[null, null]`: its class, if named.
fn listed(index: &Object, key: &str, path: &Path) -> Result<Option<Option<String>>, PipelineError> {
    let value = match index.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let text_or_null = |v: &Value| v.is_string() || v.is_null();
    match value.as_array().map(Vec::as_slice) {
        Some([library, class]) if text_or_null(library) && text_or_null(class) => {
            let absent = library.is_null() && class.is_null();
            Ok((!absent).then(|| class.as_str().map(str::to_string)))
        }
        _ => Err(invalid(
            path,
            format!(
                "\"{key}\" is {}, not a [library, class] pair such as [\"diffusers\", \"UNet2DConditionModel\"] \
                 (or [null, null] when the pipeline has none)",
                shown(value)
            ),
        )),
    }
}

/// `root/folder/model.onnx`, or an error naming the first part of that path that is missing.
fn model_file(root: &Path, component: &str, folder: &str) -> Result<PathBuf, PipelineError> {
    let dir = root.join(folder);
    let model = dir.join("model.onnx");
    if model.is_file() {
        return Ok(model);
    }
    let hint = if holds_pytorch_weights(&dir) {
        format!("{folder}/ holds PyTorch weights, not ONNX: {EXPORT}")
    } else {
        EXPORT.to_string()
    };
    Err(PipelineError::Missing {
        component: component.into(),
        path: if dir.is_dir() { model } else { dir },
        hint,
    })
}

/// A diffusers (PyTorch) folder given where an ONNX export was expected.
fn holds_pytorch_weights(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.ends_with(".safetensors") || name.ends_with(".bin")
    })
}

fn read_denoiser_config(path: &Path) -> Result<DenoiserConfig, PipelineError> {
    let Some(config) = read_optional_object(path)? else {
        return Ok(DenoiserConfig::default());
    };
    Ok(DenoiserConfig {
        class_name: text(&config, "_class_name", path)?,
        in_channels: whole(&config, "in_channels", path)?,
        out_channels: whole(&config, "out_channels", path)?,
        sample_size: per_block(&config, "sample_size", path)?,
        cross_attention_dim: per_block(&config, "cross_attention_dim", path)?,
        num_class_embeds: whole(&config, "num_class_embeds", path)?,
        addition_embed_type: text(&config, "addition_embed_type", path)?,
        addition_time_embed_dim: whole(&config, "addition_time_embed_dim", path)?,
        time_cond_proj_dim: whole(&config, "time_cond_proj_dim", path)?,
        patch_size: whole(&config, "patch_size", path)?,
        pooled_projection_dim: whole(&config, "pooled_projection_dim", path)?,
        joint_attention_dim: whole(&config, "joint_attention_dim", path)?,
        motion_max_seq_length: whole(&config, "motion_max_seq_length", path)?,
    })
}

fn as_whole(value: &Value) -> Option<usize> {
    value.as_u64().and_then(|n| usize::try_from(n).ok())
}

fn whole(config: &Object, key: &str, path: &Path) -> Result<Option<usize>, PipelineError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => as_whole(value).map(Some).ok_or_else(|| {
            invalid(
                path,
                format!("\"{key}\" is {}, not a whole number", shown(value)),
            )
        }),
    }
}

/// A whole number, or one per block or side as diffusers allows ([8, 8]): the shared value, or None
/// when they differ.
fn per_block(config: &Object, key: &str, path: &Path) -> Result<Option<usize>, PipelineError> {
    let Some(Value::Array(items)) = config.get(key) else {
        return whole(config, key, path);
    };
    let values: Option<Vec<usize>> = items.iter().map(as_whole).collect();
    match values {
        Some(values) => Ok(values
            .first()
            .copied()
            .filter(|v| values.iter().all(|x| x == v))),
        None => Err(invalid(
            path,
            format!(
                "\"{key}\" is {}, not a list of whole numbers",
                shown(&Value::Array(items.clone()))
            ),
        )),
    }
}

fn text(config: &Object, key: &str, path: &Path) -> Result<Option<String>, PipelineError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(value) => Err(invalid(
            path,
            format!("\"{key}\" is {}, not a string", shown(value)),
        )),
    }
}

/// `vae` (what Optimum's model_index.json says) or `vae_decoder` (older ONNX exports) is the decoder.
fn read_vae(
    root: &Path,
    index: &Object,
    index_path: &Path,
) -> Result<Option<VaePart>, PipelineError> {
    let component = if listed(index, "vae", index_path)?.is_some() {
        "vae"
    } else if listed(index, "vae_decoder", index_path)?.is_some() {
        "vae_decoder"
    } else {
        return Ok(None);
    };
    let model = model_file(root, component, "vae_decoder")?;
    read_vae_part(&model).map(Some)
}

/// Optimum's `vae_encoder/` beside a VAE decoder: the same VAE's config, its other half. A folder without
/// one is fine until an experiment starts from an image.
fn read_vae_encoder(root: &Path, has_decoder: bool) -> Result<Option<VaePart>, PipelineError> {
    let model = root.join("vae_encoder").join("model.onnx");
    match has_decoder && model.is_file() {
        true => read_vae_part(&model).map(Some),
        false => Ok(None),
    }
}

/// A VAE decoder's model.onnx and the config.json beside it (which holds the scaling factor), as a pipeline
/// folder has them or as `[model] vae_decoder` names them.
pub fn read_vae_part(model: &Path) -> Result<VaePart, PipelineError> {
    let path = model.with_file_name("config.json");
    let Some(config) = read_optional_object(&path)? else {
        let reason = "no such file, and the VAE's scaling factor is kept there (Optimum writes the whole VAE config)";
        return Err(PipelineError::ScalingFactor {
            path,
            reason: reason.into(),
        });
    };
    Ok(VaePart {
        model: model.to_path_buf(),
        scaling_factor: scaling_factor(&config, &path)?,
        shift_factor: number(&config, "shift_factor", &path)?,
        latent_channels: whole(&config, "latent_channels", &path)?,
        scale_factor: vae_scale(&config, &path)?,
        force_upcast: flag(&config, "force_upcast", &path)?.unwrap_or(false),
    })
}

fn scaling_factor(config: &Object, path: &Path) -> Result<f64, PipelineError> {
    let reason = match config.get("scaling_factor") {
        None => "it has no \"scaling_factor\"".to_string(),
        Some(Value::Null) => "its \"scaling_factor\" is null".to_string(),
        Some(value) => match value.as_f64() {
            Some(s) if s.is_finite() && s > 0.0 => return Ok(s),
            _ => format!(
                "its \"scaling_factor\" is {}, not a positive number",
                shown(value)
            ),
        },
    };
    Err(PipelineError::ScalingFactor {
        path: path.to_path_buf(),
        reason,
    })
}

fn number(config: &Object, key: &str, path: &Path) -> Result<Option<f64>, PipelineError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(path, format!("\"{key}\" is {}, not a number", shown(value)))),
    }
}

/// Each VAE block but the last halves the resolution; Sana's DC-AE names its blocks
/// `encoder_block_out_channels`, as its pipeline reads them.
fn vae_scale(config: &Object, path: &Path) -> Result<usize, PipelineError> {
    let present = |key: &str| config.get(key).filter(|v| !v.is_null());
    let value = match present("block_out_channels").or(present("encoder_block_out_channels")) {
        None => return Ok(8),
        Some(value) => value,
    };
    let blocks = value.as_array().map_or(0, Vec::len);
    let factor = blocks
        .checked_sub(1)
        .and_then(|n| u32::try_from(n).ok())
        .and_then(|n| 1usize.checked_shl(n))
        .filter(|_| blocks <= 16);
    factor.ok_or_else(|| {
        invalid(
            path,
            format!(
                "\"block_out_channels\" is {}, not a list of 1 to 16 channel counts",
                shown(value)
            ),
        )
    })
}

fn read_text_encoders(
    root: &Path,
    index: &Object,
    index_path: &Path,
) -> Result<Vec<TextEncoderPart>, PipelineError> {
    let mut parts = Vec::new();
    for (name, tokenizer_key) in ENCODERS {
        let tokenizer = read_tokenizer(root, index, index_path, tokenizer_key)?;
        let Some(class) = listed(index, name, index_path)? else {
            continue;
        };
        let model = model_file(root, name, name)?;
        let tokenizer = tokenizer.ok_or_else(|| PipelineError::NoTokenizer {
            path: index_path.to_path_buf(),
            encoder: name.into(),
            tokenizer: tokenizer_key.into(),
        })?;
        let config = read_optional_object(&root.join(name).join("config.json"))?;
        parts.push(TextEncoderPart {
            name: name.into(),
            model,
            tokenizer,
            with_projection: class.as_deref() == Some(PROJECTION)
                || has_projection(config.as_ref()),
        });
    }
    Ok(parts)
}

/// transformers' `architectures`, for exports whose model_index.json names another class.
fn has_projection(config: Option<&Object>) -> bool {
    config
        .and_then(|c| c.get("architectures"))
        .and_then(Value::as_array)
        .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(PROJECTION)))
}

/// The tokenizer folder when listed: tokenizer.json, or the slow tokenizer's vocab.json and merges.txt.
fn read_tokenizer(
    root: &Path,
    index: &Object,
    index_path: &Path,
    key: &str,
) -> Result<Option<PathBuf>, PipelineError> {
    if listed(index, key, index_path)?.is_none() {
        return Ok(None);
    }
    let dir = root.join(key);
    let missing = |path: PathBuf| PipelineError::Missing {
        component: key.into(),
        path,
        hint: format!(
            "a tokenizer folder holds tokenizer.json, or vocab.json and merges.txt; {EXPORT}"
        ),
    };
    if !dir.is_dir() {
        return Err(missing(dir));
    }
    if dir.join("tokenizer.json").is_file() {
        return Ok(Some(dir));
    }
    match ["vocab.json", "merges.txt"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| !p.is_file())
    {
        Some(path) => Err(missing(path)),
        None => Ok(Some(dir)),
    }
}

fn read_scheduler(
    root: &Path,
    index: &Object,
    index_path: &Path,
) -> Result<Option<PathBuf>, PipelineError> {
    if listed(index, "scheduler", index_path)?.is_none() {
        return Ok(None);
    }
    let path = root.join("scheduler").join("scheduler_config.json");
    if path.is_file() {
        return Ok(Some(path));
    }
    Err(PipelineError::Missing {
        component: "scheduler".into(),
        path,
        hint: EXPORT.into(),
    })
}

fn force_zeros(index: &Object, path: &Path) -> Result<bool, PipelineError> {
    Ok(flag(index, "force_zeros_for_empty_prompt", path)?.unwrap_or(false))
}

/// A true/false setting; `None` when absent or null.
fn flag(config: &Object, key: &str, path: &Path) -> Result<Option<bool>, PipelineError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(value) => Err(invalid(
            path,
            format!("\"{key}\" is {}, not true or false", shown(value)),
        )),
    }
}

/// Listed components difflab has no use for, so the log says they are left out.
fn unused_components(index: &Object, path: &Path) -> Vec<String> {
    index
        .keys()
        .filter(|key| !key.starts_with('_') && !USED.contains(&key.as_str()))
        .filter_map(|key| match listed(index, key, path) {
            // Settings such as requires_safety_checker are not pairs.
            Err(_) | Ok(None) => None,
            Ok(Some(class)) => {
                let class = class.map(|c| format!(" ({c})")).unwrap_or_default();
                Some(format!(
                    "model_index.json lists {key}{class}; difflab does not use it"
                ))
            }
        })
        .collect()
}

/// The family from the pipeline's class, and a warning when the class is one difflab does not know.
fn family(class_name: &str, has_text_encoders: bool) -> (Family, Option<String>) {
    if class_name.starts_with("StableDiffusion3") {
        (Family::StableDiffusion3, None)
    } else if class_name.starts_with("Flux") {
        (Family::Flux, None)
    } else if class_name.starts_with("Sana") {
        (Family::Sana, None)
    } else if class_name.contains("XL") {
        (Family::StableDiffusionXl, None)
    } else if class_name.contains("StableDiffusion")
        || class_name == "LatentConsistencyModelPipeline"
        || class_name == "AnimateDiffPipeline"
    {
        (Family::StableDiffusion, None)
    } else if has_text_encoders {
        let note = format!(
            "model_index.json's _class_name {class_name:?} is not a pipeline difflab knows; it has text encoders, \
             so difflab runs it as Stable Diffusion"
        );
        (Family::StableDiffusion, Some(note))
    } else {
        (Family::UnetOnly, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/pipelines")
            .join(name)
    }

    fn read(name: &str) -> PipelineFolder {
        read_pipeline(&fixture(name)).unwrap()
    }

    /// A copy of a test pipeline (without its references) to break.
    fn copy_of(name: &str) -> tempfile::TempDir {
        fn copy(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                let target = to.join(entry.file_name());
                if entry.file_type().unwrap().is_dir() {
                    if entry.file_name() != "reference" {
                        copy(&entry.path(), &target);
                    }
                } else {
                    std::fs::copy(entry.path(), target).unwrap();
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        copy(&fixture(name), dir.path());
        dir
    }

    fn edit_json(path: &Path, edit: impl FnOnce(&mut Object)) {
        let mut object = read_object(path).unwrap();
        edit(&mut object);
        std::fs::write(path, serde_json::to_string(&object).unwrap()).unwrap();
    }

    /// The error for `root`, checked to name `file`.
    fn error_naming(root: &Path, file: &Path) -> String {
        let message = read_pipeline(root).unwrap_err().to_string();
        assert!(
            message.contains(&file.display().to_string()),
            "{message:?} does not name {}",
            file.display()
        );
        message
    }

    #[test]
    fn sd1_reads_as_optimum_writes_it() {
        let root = fixture("sd1");
        let p = read("sd1");
        assert_eq!(p.class_name, "StableDiffusionPipeline");
        assert_eq!(p.family, Family::StableDiffusion);
        assert_eq!(p.denoiser, root.join("unet/model.onnx"));
        assert_eq!(
            p.denoiser_config,
            DenoiserConfig {
                class_name: Some("UNet2DConditionModel".into()),
                in_channels: Some(4),
                out_channels: Some(4),
                sample_size: Some(8),
                cross_attention_dim: Some(8),
                ..DenoiserConfig::default()
            }
        );
        let vae = p.vae_decoder.clone().unwrap();
        assert_eq!(vae.model, root.join("vae_decoder/model.onnx"));
        assert_eq!(vae.scaling_factor, 0.18215);
        assert_eq!(
            (vae.shift_factor, vae.latent_channels, vae.scale_factor),
            (None, Some(4), 8)
        );
        assert_eq!(
            p.text_encoders,
            vec![TextEncoderPart {
                name: "text_encoder".into(),
                model: root.join("text_encoder/model.onnx"),
                tokenizer: root.join("tokenizer"),
                with_projection: false,
            }]
        );
        assert_eq!(
            p.scheduler_config,
            Some(root.join("scheduler/scheduler_config.json"))
        );
        assert!(!p.force_zeros_for_empty_prompt);
        assert_eq!(
            p.warnings,
            Vec::<String>::new(),
            "[null, null] components are absent"
        );
        assert_eq!(p.latent_shape(), Some([4, 8, 8]));
        assert_eq!(p.vae_scale_factor(), 8);
    }

    #[test]
    fn sd2v_is_stable_diffusion_with_the_sd_scaling_factor() {
        let p = read("sd2v");
        assert_eq!(p.family, Family::StableDiffusion);
        assert_eq!(p.vae_decoder.as_ref().unwrap().scaling_factor, 0.18215);
        assert_eq!(p.text_encoders.len(), 1);
        assert_eq!(p.latent_shape(), Some([4, 8, 8]));
    }

    #[test]
    fn sdxl_has_two_encoders_and_zeros_for_empty_prompts() {
        let root = fixture("sdxl");
        let p = read("sdxl");
        assert_eq!(p.class_name, "StableDiffusionXLPipeline");
        assert_eq!(p.family, Family::StableDiffusionXl);
        assert_eq!(p.vae_decoder.as_ref().unwrap().scaling_factor, 0.13025);
        assert!(p.force_zeros_for_empty_prompt);
        let names: Vec<_> = p.text_encoders.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["text_encoder", "text_encoder_2"]);
        let second = &p.text_encoders[1];
        assert_eq!(second.model, root.join("text_encoder_2/model.onnx"));
        assert_eq!(second.tokenizer, root.join("tokenizer_2"));
        assert!(second.with_projection && !p.text_encoders[0].with_projection);
        let unet = &p.denoiser_config;
        assert_eq!(unet.cross_attention_dim, Some(16));
        assert_eq!(unet.addition_embed_type.as_deref(), Some("text_time"));
        assert_eq!(unet.addition_time_embed_dim, Some(4));
        assert_eq!(p.latent_shape(), Some([4, 8, 8]));
        assert_eq!(p.vae_scale_factor(), 8);
    }

    #[test]
    fn classcond_is_unet_only_with_eleven_classes() {
        let p = read("classcond");
        assert_eq!(p.class_name, "DDPMPipeline");
        assert_eq!(p.family, Family::UnetOnly);
        assert_eq!(p.denoiser_config.num_class_embeds, Some(11));
        assert_eq!(p.denoiser_config.sample_size, Some(16));
        assert_eq!(p.denoiser_config.cross_attention_dim, None);
        assert_eq!(p.latent_shape(), Some([3, 16, 16]));
        assert!(p.vae_decoder.is_none() && p.text_encoders.is_empty());
        assert_eq!(p.vae_scale_factor(), 8);
        assert!(p.scheduler_config.is_some());
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn a_controlnet_exported_on_its_own_is_part_of_its_folder() {
        let p = read("sd1-controlnet-split");
        assert_eq!(
            p.controlnet,
            Some(fixture("sd1-controlnet-split").join("controlnet/model.onnx"))
        );
        assert!(read("sd1").controlnet.is_none());
    }

    #[test]
    fn describe_gives_one_line_per_component() {
        assert_eq!(
            read("sdxl").describe(),
            [
                "unet: unet/model.onnx (UNet2DConditionModel, latents 4×8×8, cross-attention 16, added conditioning text_time)",
                "vae_decoder: vae_decoder/model.onnx (scaling factor 0.13025, 4 latent channels, 8× upscale)",
                "vae_encoder: vae_encoder/model.onnx (images → latents for img2img and inpainting, 8× downscale)",
                "text_encoder: text_encoder/model.onnx (tokenizer tokenizer/)",
                "text_encoder_2: text_encoder_2/model.onnx (with projection, tokenizer tokenizer_2/)",
                "scheduler: scheduler/scheduler_config.json",
            ]
        );
        assert_eq!(
            read("classcond").describe()[0],
            "unet: unet/model.onnx (UNet2DModel, latents 3×16×16, 11 class embeddings)"
        );
    }

    #[test]
    fn describe_mentions_external_data() {
        let dir = copy_of("classcond");
        std::fs::write(dir.path().join("unet/model.onnx_data"), b"").unwrap();
        let p = read_pipeline(dir.path()).unwrap();
        assert!(p.describe()[0].starts_with("unet: unet/model.onnx + model.onnx_data ("));
    }

    #[test]
    fn only_folders_with_model_index_are_pipeline_folders() {
        assert!(is_pipeline_folder(&fixture("sd1")));
        assert!(!is_pipeline_folder(&fixture("sd1/unet")));
        assert!(!is_pipeline_folder(&fixture("sd1/unet/model.onnx")));
    }

    #[test]
    fn without_model_index_it_is_not_a_pipeline_folder() {
        let dir = copy_of("sd1");
        std::fs::remove_file(dir.path().join("model_index.json")).unwrap();
        let message = error_naming(dir.path(), dir.path());
        assert!(message.contains("has no model_index.json"), "{message}");
        assert!(
            message.contains("optimum-cli export onnx --task text-to-image"),
            "{message}"
        );
        let file = fixture("sd1/unet/model.onnx");
        assert!(error_naming(&file, &file).contains("is a file"));
    }

    #[test]
    fn invalid_json_gives_the_file_and_the_parser_message() {
        let dir = copy_of("sd1");
        let index = dir.path().join("model_index.json");
        std::fs::write(&index, "{\"_class_name\": \"StableDiffusionPipeline\",").unwrap();
        let message = error_naming(dir.path(), &index);
        assert!(
            message.contains("not valid JSON: EOF while parsing"),
            "{message}"
        );
        let config = dir.path().join("unet/config.json");
        std::fs::copy(fixture("sd1/model_index.json"), &index).unwrap();
        std::fs::write(&config, "[1, 2").unwrap();
        error_naming(dir.path(), &config);
        std::fs::write(&index, "[]").unwrap();
        assert!(error_naming(dir.path(), &index).contains("a list, not a JSON object"));
    }

    #[test]
    fn a_missing_vae_decoder_model_is_named() {
        let dir = copy_of("sd1");
        let model = dir.path().join("vae_decoder/model.onnx");
        std::fs::remove_file(&model).unwrap();
        let message = error_naming(dir.path(), &model);
        assert!(message.contains("lists vae"), "{message}");
        std::fs::remove_dir_all(dir.path().join("vae_decoder")).unwrap();
        let message = error_naming(dir.path(), &dir.path().join("vae_decoder"));
        assert!(!message.contains("model.onnx"), "{message}");
    }

    #[test]
    fn pytorch_weights_are_told_apart_from_a_missing_export() {
        let dir = copy_of("classcond");
        let unet = dir.path().join("unet");
        std::fs::remove_file(unet.join("model.onnx")).unwrap();
        std::fs::write(unet.join("diffusion_pytorch_model.safetensors"), b"").unwrap();
        let message = error_naming(dir.path(), &unet.join("model.onnx"));
        assert!(
            message.contains("holds PyTorch weights, not ONNX"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_scaling_factor_is_an_error_not_a_guess() {
        let dir = copy_of("sdxl");
        let config = dir.path().join("vae_decoder/config.json");
        for (value, said) in [
            (None, "has no \"scaling_factor\""),
            (Some(Value::Null), "is null"),
            (Some(Value::from("0.13")), "\"0.13\", not a positive number"),
            (Some(Value::from(0.0)), "0.0, not a positive number"),
        ] {
            edit_json(&config, |c| match value {
                Some(v) => drop(c.insert("scaling_factor".into(), v)),
                None => drop(c.remove("scaling_factor")),
            });
            let message = error_naming(dir.path(), &config);
            assert!(message.contains(said), "{message}");
            assert!(
                message.contains("not a guess") && message.contains("0.18215"),
                "{message}"
            );
            assert!(message.contains("SDXL 0.13025"), "{message}");
        }
        std::fs::remove_file(&config).unwrap();
        assert!(error_naming(dir.path(), &config).contains("no such file"));
    }

    #[test]
    fn shift_factor_and_block_count_come_from_the_vae_config() {
        let dir = copy_of("sd1");
        let config = dir.path().join("vae_decoder/config.json");
        edit_json(&config, |c| {
            c.insert("shift_factor".into(), Value::from(0.1159));
            c.insert("block_out_channels".into(), serde_json::json!([4, 8, 8]));
        });
        let vae = read_pipeline(dir.path()).unwrap().vae_decoder.unwrap();
        assert_eq!((vae.shift_factor, vae.scale_factor), (Some(0.1159), 4));
        edit_json(&config, |c| {
            drop(c.insert("block_out_channels".into(), serde_json::json!([])))
        });
        assert!(error_naming(dir.path(), &config).contains("block_out_channels"));
        edit_json(&config, |c| drop(c.remove("block_out_channels")));
        assert_eq!(read_pipeline(dir.path()).unwrap().vae_scale_factor(), 8);
    }

    #[test]
    fn a_text_encoder_without_its_tokenizer_is_an_error() {
        let dir = copy_of("sdxl");
        let tokenizer_2 = dir.path().join("tokenizer_2");
        std::fs::remove_file(tokenizer_2.join("merges.txt")).unwrap();
        error_naming(dir.path(), &tokenizer_2.join("merges.txt"));
        std::fs::remove_dir_all(&tokenizer_2).unwrap();
        error_naming(dir.path(), &tokenizer_2);
        let index = dir.path().join("model_index.json");
        edit_json(&index, |c| drop(c.remove("tokenizer_2")));
        let message = error_naming(dir.path(), &index);
        assert!(
            message.contains("lists text_encoder_2 but no tokenizer_2"),
            "{message}"
        );
    }

    #[test]
    fn a_tokenizer_json_alone_is_enough() {
        let dir = copy_of("sd1");
        let tokenizer = dir.path().join("tokenizer");
        std::fs::remove_file(tokenizer.join("vocab.json")).unwrap();
        std::fs::write(tokenizer.join("tokenizer.json"), "{}").unwrap();
        assert_eq!(
            read_pipeline(dir.path()).unwrap().text_encoders[0].tokenizer,
            tokenizer
        );
    }

    #[test]
    fn the_unet_is_required_and_components_are_pairs() {
        let dir = copy_of("sd1");
        let index = dir.path().join("model_index.json");
        edit_json(&index, |c| {
            drop(c.insert("unet".into(), serde_json::json!([null, null])))
        });
        assert!(error_naming(dir.path(), &index).contains("lists no unet"));
        edit_json(&index, |c| {
            drop(c.insert("unet".into(), Value::from("UNet2DConditionModel")))
        });
        assert!(error_naming(dir.path(), &index).contains("not a [library, class] pair"));
        std::fs::copy(fixture("sd1/model_index.json"), &index).unwrap();
        let scheduler = dir.path().join("scheduler/scheduler_config.json");
        std::fs::remove_file(&scheduler).unwrap();
        error_naming(dir.path(), &scheduler);
    }

    #[test]
    fn a_wrongly_typed_unet_field_names_the_config() {
        let dir = copy_of("sd1");
        let config = dir.path().join("unet/config.json");
        edit_json(&config, |c| {
            drop(c.insert("in_channels".into(), Value::from("4")))
        });
        let message = error_naming(dir.path(), &config);
        assert!(
            message.contains("\"in_channels\" is \"4\", not a whole number"),
            "{message}"
        );
        edit_json(&config, |c| {
            c.insert("in_channels".into(), Value::from(4));
            c.insert("sample_size".into(), serde_json::json!([8, 16]));
        });
        assert_eq!(read_pipeline(dir.path()).unwrap().latent_shape(), None);
        std::fs::remove_file(&config).unwrap();
        let p = read_pipeline(dir.path()).unwrap();
        assert_eq!(
            (p.denoiser_config.clone(), p.describe()[0].as_str()),
            (
                DenoiserConfig::default(),
                "unet: unet/model.onnx (no config.json)"
            )
        );
    }

    #[test]
    fn unused_components_and_unknown_classes_are_warned_about() {
        let dir = copy_of("sd1");
        let index = dir.path().join("model_index.json");
        edit_json(&index, |c| {
            c.insert("_class_name".into(), Value::from("MyPipeline"));
            c.insert(
                "safety_checker".into(),
                serde_json::json!(["stable_diffusion", "StableDiffusionSafetyChecker"]),
            );
        });
        let p = read_pipeline(dir.path()).unwrap();
        assert_eq!(p.family, Family::StableDiffusion);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("safety_checker (StableDiffusionSafetyChecker)"));
        assert!(p.warnings[1].contains("\"MyPipeline\""));
    }

    #[test]
    fn families_follow_the_class_name() {
        assert_eq!(
            family("StableDiffusionXLImg2ImgPipeline", true).0,
            Family::StableDiffusionXl
        );
        assert_eq!(
            family("LatentConsistencyModelPipeline", true),
            (Family::StableDiffusion, None)
        );
        assert_eq!(
            family("OnnxStableDiffusionPipeline", true),
            (Family::StableDiffusion, None)
        );
        assert_eq!(family("DDPMPipeline", false), (Family::UnetOnly, None));
    }
}
