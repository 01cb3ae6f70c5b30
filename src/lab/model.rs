//! The experiment's model and feature network, loaded through the engine: a U-Net file (with explicit VAE
//! decoder, text encoder and tokenizer when it has them), a whole pipeline folder, or the analytic model.

use std::path::{Path, PathBuf};

use super::conditioning::{ConditionSources, RunConditions, build, truncation_notes};
use super::latent_preview::LatentPreview;
use super::start_images::{self, ControlImages, StartImages};
use super::tensorrt::{TextLengths, note_if_tensorrt, text_lengths, unet_batch, with_profile};
use crate::engine::flux::FluxDenoiser;
use crate::engine::frames::{clip_shape, frame_shape};
use crate::engine::pipeline_folder::{
    Family, PipelineFolder, VaePart, read_pipeline, read_vae_part,
};
use crate::engine::trt_profile::ShapeHints;
use crate::engine::{
    AnalyticDenoiser, ControlNetPair, Denoiser, DenoiserInfo, ElemType, EngineError,
    GaussianMixture, OnnxDenoiser, OnnxFeatures, OnnxOptions, ProviderKind, ProviderOptions,
    TextEncoder, VaeDecoder, VaeEncoder, describe_attempts, open_sample_shape, summarize_attempts,
};
use crate::experiment::{ConditioningSpec, Experiment, ModelSource};
use crate::sampler::{NoiseSchedule, PredictionType};

/// The model, ready to run, with what to tell the user about where it runs.
pub struct LoadedModel {
    pub denoiser: Box<dyn Denoiser>,
    /// One sample's C, H, W (latent for latent models); a video model's clip is C, F·H, W (see
    /// [`crate::engine::frames`]).
    pub sample_shape: [usize; 3],
    /// Frames per sample: 1 for an image model.
    pub frames: usize,
    /// The provider that runs it.
    pub provider: String,
    /// Every provider tried and what happened to it, in one line.
    pub providers_note: String,
    /// The providers that did not run, in a few words (empty when the first choice runs).
    pub providers_summary: String,
    /// Latents to images, for latent models.
    pub decoder: Option<VaeDecoder>,
    /// One finished image's C, H, W (the sample's for pixel models).
    pub image_shape: [usize; 3],
    /// Images per VAE decoder call.
    pub vae_batch: usize,
    /// The cheap latent→RGB map for live previews of latent models.
    pub preview: Option<LatentPreview>,
    /// What the samples are conditioned on (rows of the denoiser's condition table).
    pub conditions: RunConditions,
    /// Lines for the log: unused parts of a pipeline folder, how the U-Net batches timesteps.
    pub notes: Vec<String>,
    /// What ONNX Runtime warned of while loading the networks: every cell run on them carries it.
    pub runtime_warnings: Vec<String>,
    /// Whether fp32 math on the GPU may use TF32 (`None`: not on a GPU).
    pub tf32: Option<bool>,
    /// What setting the conditioning needs, kept so a changed `[conditioning]` is encoded again with the
    /// loaded encoders; `None` for the analytic model.
    conditioner: Option<Conditioner>,
}

/// The text encoders and what the condition table needs besides them.
struct Conditioner {
    encoders: Vec<TextEncoder>,
    force_zeros: bool,
    num_class_embeds: Option<usize>,
    unet: PathBuf,
    /// The conditioning the U-Net is set up for (`None` inside: none).
    set_for: Option<Option<ConditioningSpec>>,
    /// What encodes img2img's start images: the VAE encoder (loaded at the first start image) of a latent
    /// model; a pixel model takes them as they are.
    start: StartEncoder,
}

struct StartEncoder {
    /// Whether samples are latents (a VAE decodes them).
    latent: bool,
    part: Option<VaePart>,
    loaded: Option<VaeEncoder>,
    options: OnnxOptions,
}

impl LoadedModel {
    /// Sets the experiment's `[conditioning]` on the U-Net (encoding its prompts), unless it is set already;
    /// returns the log lines it has (prompts cut at the tokenizer's length).
    pub fn condition(&mut self, experiment: &Experiment) -> Result<Vec<String>, EngineError> {
        let Some(c) = &mut self.conditioner else {
            return Ok(Vec::new());
        };
        let spec = experiment.conditioning.as_ref();
        if c.set_for.as_ref().is_some_and(|set| set.as_ref() == spec) {
            return Ok(Vec::new());
        }
        check_video_conditioning(self.frames, spec)?;
        let sources = ConditionSources {
            encoders: &mut c.encoders,
            force_zeros: c.force_zeros,
            image_hw: (self.image_shape[1], self.image_shape[2]),
            num_class_embeds: c.num_class_embeds,
        };
        let (table, mut conditions) = build(spec, sources).map_err(EngineError::Options)?;
        let mut notes = Vec::new();
        conditions.start = match spec.filter(|s| !s.init_images.is_empty()) {
            Some(spec) => {
                let concat = self.denoiser.info().extra_channels > 0;
                let shapes = (self.image_shape, self.sample_shape);
                Some(
                    c.start
                        .encode(spec, shapes.0, shapes.1, concat, &mut notes)?,
                )
            }
            None => None,
        };
        conditions.control = control_images(&*self.denoiser, self.image_shape, spec, &mut notes)?;
        self.denoiser
            .set_conditions(table)
            .map_err(|e| EngineError::Options(format!("{}: {e}", c.unet.display())))?;
        self.conditions = conditions;
        c.set_for = Some(spec.cloned());
        notes.extend(truncation_notes(&c.encoders, spec));
        Ok(notes)
    }
}

/// Start images, masks and control images are images: a video model's clips take none of them yet.
fn check_video_conditioning(
    frames: usize,
    spec: Option<&ConditioningSpec>,
) -> Result<(), EngineError> {
    let Some(spec) = spec.filter(|_| frames > 1) else {
        return Ok(());
    };
    let given = [
        (!spec.init_images.is_empty(), "init_image"),
        (!spec.masks.is_empty(), "mask"),
        (!spec.controls.is_empty(), "control_image"),
    ];
    match given.iter().find(|(given, _)| *given) {
        Some((_, key)) => Err(EngineError::Options(format!(
            "[conditioning] {key}: this model makes video clips of {frames} frames, and difflab starts or \
             steers clips from images not yet; remove {key}"
        ))),
        None => Ok(()),
    }
}

/// The experiment's control images, read at the run's image size, for a model with ControlNets; an error where
/// one is given without the other, or where their counts differ.
fn control_images(
    denoiser: &dyn Denoiser,
    image_shape: [usize; 3],
    spec: Option<&ConditioningSpec>,
    notes: &mut Vec<String>,
) -> Result<Option<ControlImages>, EngineError> {
    let given = spec.map_or(0, |s| s.controls.len());
    let name = denoiser.info().name;
    let held = denoiser.controlnets();
    let Some(spec) = spec.filter(|_| given > 0) else {
        return match held {
            0 => Ok(None),
            _ => Err(EngineError::Options(format!(
                "{name} holds {} (inputs for control images and their scales): give {}",
                count(held),
                match held {
                    1 => "[conditioning] control_image",
                    _ => "one [[conditioning.controlnet]] table (its image) per ControlNet",
                }
            ))),
        };
    };
    match (given, held) {
        (_, 0) => Err(EngineError::Options(format!(
            "[conditioning] control_image: {name} has no ControlNet inputs (a control image such as \
                 `controlnet_conds` and a scale such as `conditioning_scales`, as diffusers' ControlNet-to-ONNX \
                 export makes them)"
        ))),
        (given, held) if given != held => Err(EngineError::Options(format!(
            "[conditioning] gives control images for {}; {name} holds {}: give one [[conditioning.controlnet]] \
             table per ControlNet, in the order the model takes them",
            count(given),
            count(held)
        ))),
        _ => {
            let read = ControlImages::read(&spec.controls, image_shape, notes);
            Ok(Some(read.map_err(EngineError::Options)?))
        }
    }
}

/// "1 ControlNet", "2 ControlNets".
fn count(n: usize) -> String {
    match n {
        1 => "1 ControlNet".into(),
        n => format!("{n} ControlNets"),
    }
}

impl StartEncoder {
    /// Loads a latent model's VAE encoder, unless it is loaded.
    fn load(&mut self) -> Result<(), EngineError> {
        if !self.latent || self.loaded.is_some() {
            return Ok(());
        }
        let Some(part) = &self.part else {
            return Err(EngineError::Options(
                "[conditioning] init_image needs the VAE encoder of this latent model: the pipeline folder has no \
                 vae_encoder/ (optimum-cli export onnx writes one), or give [model] vae_encoder beside a U-Net file"
                    .into(),
            ));
        };
        let encoder = VaeEncoder::load(
            &part.model,
            part.scaling_factor,
            part.shift_factor,
            &self.options,
        )?;
        self.loaded = Some(encoder);
        Ok(())
    }

    /// The spec's start images, encoded (the encoder loaded the first time).
    fn encode(
        &mut self,
        spec: &ConditioningSpec,
        image_shape: [usize; 3],
        sample_shape: [usize; 3],
        concat: bool,
        notes: &mut Vec<String>,
    ) -> Result<StartImages, EngineError> {
        self.load()?;
        let [_, h, w] = sample_shape;
        let loaded = self.loaded.as_mut();
        let start = start_images::prepare(spec, image_shape, [h, w], loaded, concat, notes)
            .map_err(EngineError::Options)?;
        if let Some(image) = start.images.iter().find(|i| i.shape != sample_shape) {
            let [c, h, w] = image.shape;
            let [sc, sh, sw] = sample_shape;
            return Err(EngineError::Options(format!(
                "[conditioning] init_image: the VAE encoder makes {c}×{h}×{w} latents of a start image, the model \
                 takes {sc}×{sh}×{sw}: the encoder is not this pipeline's"
            )));
        }
        Ok(start)
    }
}

/// ONNX options from the experiment's [model] section.
pub fn onnx_options(experiment: &Experiment) -> OnnxOptions {
    let m = &experiment.model;
    OnnxOptions {
        providers: ProviderOptions {
            preference: m.providers.clone(),
            fallback: m.fallback,
            device_id: m.device_id,
            trt_fp16: m.tensorrt_fp16,
            trt_engine_cache: m.tensorrt_engine_cache.clone(),
            trt_max_workspace: m.tensorrt_max_workspace,
            trt_profile: None,
            trt_builder_optimization_level: m.tensorrt_builder_optimization_level,
            trt_layer_norm_fp32_fallback: m.tensorrt_layer_norm_fp32_fallback,
            trt_cuda_graph: m.tensorrt_cuda_graph,
            cuda: m.cuda.clone(),
        },
        prediction_type: m.prediction_type,
        roles: m.roles.clone(),
        sample_shape: m.sample_shape,
        frames: m.frames,
        runtime_path: m.runtime.clone(),
        output_dir: Some(experiment.output_dir.clone()),
        intra_threads: m.threads,
        profile_nodes: false,
        fed_inputs: Vec::new(),
    }
}

/// Loads the experiment's model; `loading` hears each network as its load starts ("loading unet (3.4 GB)").
pub fn load_model(
    experiment: &Experiment,
    loading: &dyn Fn(String),
) -> Result<LoadedModel, EngineError> {
    let mut loaded = match &experiment.model.source {
        ModelSource::Analytic => analytic(experiment),
        ModelSource::Onnx(path) => {
            let parts = explicit_parts(experiment).map_err(EngineError::Options)?;
            assemble(experiment, path, parts, loading)?
        }
        ModelSource::Pipeline(dir) => {
            let folder = read_pipeline(dir).map_err(|e| EngineError::Options(e.to_string()))?;
            let unet = folder.denoiser.clone();
            let mut parts = Parts::of_folder(folder);
            // A pipeline's U-Net predicts what its scheduler/ config says.
            parts.prediction_type = Some(experiment.samplers[0].resolved.config.prediction_type());
            assemble(experiment, &unet, parts, loading)?
        }
    };
    loaded.runtime_warnings = crate::engine::ort_log::take();
    loaded.notes.extend(loaded.runtime_warnings.iter().cloned());
    Ok(loaded)
}

/// TF32 on the GPU: the CUDA provider uses it as `[model.cuda] tf32` says; TensorRT builds its fp32 layers
/// with it by default.
fn tf32_of(provider: ProviderKind, options: &ProviderOptions) -> Option<bool> {
    match provider {
        ProviderKind::Cuda => Some(options.cuda.tf32),
        ProviderKind::TensorRt => Some(true),
        ProviderKind::Cpu => None,
    }
}

/// One finished image's C, H, W as the configs give it, without loading a network: the latent shape (from
/// `sample_shape` or the U-Net's config) times the VAE's scale, with the frames per sample (a clip's image is
/// C, F·H, W). `None` where only a loaded U-Net can tell.
pub fn image_shape_unloaded(experiment: &Experiment) -> Option<([usize; 3], usize)> {
    let m = &experiment.model;
    let (latent, frames, vae) = match &m.source {
        ModelSource::Analytic => return Some((m.sample_shape.unwrap_or([1, 8, 8]), 1)),
        ModelSource::Pipeline(dir) => {
            let folder = read_pipeline(dir).ok()?;
            (
                m.sample_shape.or(folder.latent_shape())?,
                m.frames.or(folder.default_frames()),
                folder.vae_decoder,
            )
        }
        ModelSource::Onnx(_) => {
            let vae = match &m.vae_decoder {
                Some(path) => Some(read_vae_part(path).ok()?),
                None => None,
            };
            (m.sample_shape?, m.frames, vae)
        }
    };
    let [_, h, w] = latent;
    let frame = match vae {
        Some(v) => [3, h * v.scale_factor, w * v.scale_factor],
        None => latent,
    };
    let frames = frames.unwrap_or(1);
    Some((clip_shape(frame, frames), frames))
}

/// A motion U-Net's temporal position embedding holds `max` frames: a longer clip fails inside the graph.
fn check_frames(frames: usize, max: Option<usize>, unet: &Path) -> Result<(), EngineError> {
    match max {
        Some(max) if frames > max => Err(EngineError::Options(format!(
            "{}: clips of {frames} frames are longer than this motion U-Net's motion_max_seq_length, {max}; give \
             at most {max} frames ([model] sample_shape = [C, F, H, W])",
            unet.display()
        ))),
        _ => Ok(()),
    }
}

/// "loading unet (3.4 GB)": the network by its folder in a pipeline (else its file name) and the size of
/// every file it reads.
fn loading_line(model: &Path) -> String {
    let name = match model.file_name().and_then(|f| f.to_str()) {
        Some("model.onnx") => model.parent().and_then(|p| p.file_name()),
        _ => model.file_name(),
    };
    let name = name.map_or(model.display().to_string(), |n| {
        n.to_string_lossy().into_owned()
    });
    let bytes: u64 = crate::engine::fingerprint::network_files(model)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    match bytes {
        b if b >= 1 << 30 => format!("loading {name} ({:.1} GB)", b as f64 / 1e9),
        b => format!("loading {name} ({:.0} MB)", (b as f64 / 1e6).max(0.1)),
    }
}

fn analytic(experiment: &Experiment) -> LoadedModel {
    let shape = experiment.model.sample_shape.unwrap_or([1, 8, 8]);
    let schedule = NoiseSchedule::new(experiment.samplers[0].resolved.config.schedule());
    let prediction = experiment
        .model
        .prediction_type
        .unwrap_or(experiment.samplers[0].resolved.config.prediction_type());
    // A VE model's data live in [0, 1], as ScoreSdeVePipeline returns them.
    let mixture = match prediction {
        PredictionType::Score => GaussianMixture::patterns(shape).in_unit_range(),
        _ => GaussianMixture::patterns(shape),
    };
    LoadedModel {
        denoiser: Box::new(AnalyticDenoiser::new(mixture, schedule, shape, prediction)),
        sample_shape: shape,
        frames: 1,
        provider: "builtin".into(),
        providers_note: "the analytic model runs in difflab itself".into(),
        providers_summary: String::new(),
        decoder: None,
        image_shape: shape,
        vae_batch: experiment.batch,
        preview: None,
        conditions: RunConditions::default(),
        notes: Vec::new(),
        runtime_warnings: Vec::new(),
        tf32: None,
        conditioner: None,
    }
}

/// The parts around a U-Net: from a pipeline folder, or given one by one beside a U-Net file.
#[derive(Default)]
struct Parts {
    vae: Option<VaePart>,
    vae_encoder: Option<VaePart>,
    /// ControlNets exported on their own, in the order their control images are given.
    controlnet: Vec<PathBuf>,
    /// (encoder model, its tokenizer folder), in the pipeline's order.
    encoders: Vec<(PathBuf, PathBuf)>,
    force_zeros: bool,
    family: Family,
    num_class_embeds: Option<usize>,
    latent_shape: Option<[usize; 3]>,
    /// Frames per clip where a video pipeline's U-Net leaves them open, and the most it takes.
    frames: Option<usize>,
    max_frames: Option<usize>,
    /// Why a pipeline folder gives no latent shape.
    no_latent_shape: Option<String>,
    prediction_type: Option<PredictionType>,
    notes: Vec<String>,
}

impl Parts {
    fn of_folder(folder: PipelineFolder) -> Self {
        Parts {
            latent_shape: folder.latent_shape(),
            frames: folder.default_frames(),
            max_frames: folder.denoiser_config.motion_max_seq_length,
            no_latent_shape: folder.no_latent_shape(),
            num_class_embeds: folder.denoiser_config.num_class_embeds,
            family: folder.family,
            force_zeros: folder.force_zeros_for_empty_prompt,
            encoders: folder
                .text_encoders
                .iter()
                .map(|t| (t.model.clone(), t.tokenizer.clone()))
                .collect(),
            vae: folder.vae_decoder,
            vae_encoder: folder.vae_encoder,
            controlnet: folder.controlnet.into_iter().collect(),
            notes: folder.warnings,
            prediction_type: None,
        }
    }
}

/// `[model] vae_decoder`, `text_encoder` and `tokenizer` beside a bare U-Net file.
fn explicit_parts(experiment: &Experiment) -> Result<Parts, String> {
    let m = &experiment.model;
    let vae = match &m.vae_decoder {
        Some(path) => Some(read_vae_part(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let vae_encoder = match &m.vae_encoder {
        Some(path) => Some(read_vae_part(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let encoders = match (&m.text_encoder, &m.tokenizer) {
        (Some(model), Some(tokenizer)) => vec![(model.clone(), tokenizer.clone())],
        _ => Vec::new(),
    };
    Ok(Parts {
        vae,
        vae_encoder,
        controlnet: m.controlnet.clone(),
        encoders,
        ..Parts::default()
    })
}

/// Loads the U-Net and its parts, encodes the conditioning and sets it on the U-Net.
fn assemble(
    experiment: &Experiment,
    unet: &Path,
    parts: Parts,
    loading: &dyn Fn(String),
) -> Result<LoadedModel, EngineError> {
    let mut notes = parts.notes.clone();
    let mut options = onnx_options(experiment);
    options.sample_shape = options.sample_shape.or(parts.latent_shape);
    options.frames = options.frames.or(parts.frames);
    options.prediction_type = options.prediction_type.or(parts.prediction_type);
    // Only TensorRT's shape profiles need the text lengths, which read the tokenizer files.
    let lengths = match options
        .providers
        .preference
        .contains(&ProviderKind::TensorRt)
    {
        true => {
            let tokenizers: Vec<&Path> = parts.encoders.iter().map(|e| e.1.as_path()).collect();
            text_lengths(experiment, parts.family, &tokenizers)
        }
        false => TextLengths::default(),
    };
    let hints = ShapeHints {
        batch: unet_batch(experiment),
        sample: options.sample_shape,
        frames: options.frames,
        sequence: lengths.denoiser,
    };
    let (options, unet_note) = with_profile(&options, unet, hints);
    loading(loading_line(unet));
    let model = load_denoiser(experiment, unet, &parts, &options)?;
    note_if_tensorrt(model.provider, unet_note, &mut notes);
    let DenoiserInfo {
        sample_shape,
        frames,
        ..
    } = model.denoiser.info();
    check_frames(frames, parts.max_frames, unet)?;
    let part_options = parts_options(experiment);
    let scale = parts.vae.as_ref().map_or(1, |v| v.scale_factor);
    let [c, h, w] = sample_shape;
    let vae_batch = experiment
        .model
        .vae_batch
        .unwrap_or_else(|| default_vae_batch(h * scale, w * scale));
    let decoder = match &parts.vae {
        Some(v) => {
            let hints = ShapeHints {
                batch: [1, vae_batch, vae_batch],
                // The decoder takes a clip's frames as images.
                sample: Some(frame_shape(sample_shape, frames)),
                frames: None,
                sequence: None,
            };
            let mut decoder = load_vae(v, &part_options, hints, loading, &mut notes)?;
            decoder.set_frames(frames);
            Some(decoder)
        }
        None => None,
    };
    let image_shape = match decoder {
        Some(_) => [3, h * scale, w * scale],
        None => sample_shape,
    };
    let prompts = experiment
        .conditioning
        .as_ref()
        .map_or(1, |c| c.prompts.len().max(1));
    let text_hints = ShapeHints {
        batch: [1, prompts, prompts],
        sample: None,
        frames: None,
        sequence: None,
    };
    let encoders = load_text_encoders(
        &parts.encoders,
        &part_options,
        (text_hints, &lengths.encoders),
        loading,
        &mut notes,
    )?;
    notes.extend(model.timestep_note);
    let mut loaded = LoadedModel {
        sample_shape,
        frames,
        provider: model.provider.to_string(),
        providers_note: model.providers_note,
        providers_summary: model.providers_summary,
        preview: decoder
            .as_ref()
            .and_then(|_| LatentPreview::for_family(parts.family, c)),
        decoder,
        image_shape,
        vae_batch,
        conditions: RunConditions::default(),
        notes,
        runtime_warnings: Vec::new(),
        tf32: tf32_of(model.provider, &options.providers),
        denoiser: model.denoiser,
        conditioner: Some(Conditioner {
            encoders,
            force_zeros: parts.force_zeros,
            num_class_embeds: parts.num_class_embeds,
            unet: unet.to_path_buf(),
            set_for: None,
            start: StartEncoder {
                latent: parts.vae.is_some(),
                part: parts.vae_encoder.clone(),
                loaded: None,
                options: part_options.clone(),
            },
        }),
    };
    // Start images come with the experiment: the VAE encoder loads now, with its status line, not on the first
    // cell.
    let starts = (experiment.conditioning.as_ref()).is_some_and(|c| !c.init_images.is_empty());
    if let (true, Some(Conditioner { start, .. })) = (starts, &mut loaded.conditioner) {
        if let Some(part) = &start.part {
            loading(loading_line(&part.model));
        }
        start.load()?;
    }
    let cut = loaded.condition(experiment)?;
    loaded.notes.extend(cut);
    Ok(loaded)
}

/// The denoiser, loaded, and what the rest of the loading needs to know of it.
struct LoadedDenoiser {
    denoiser: Box<dyn Denoiser>,
    provider: ProviderKind,
    providers_note: String,
    providers_summary: String,
    /// Why cells at different timesteps run in separate calls, when they do.
    timestep_note: Option<String>,
}

/// A FLUX transformer (packed latents, ids, embedded guidance), or any other denoiser by its inputs' roles.
fn load_denoiser(
    experiment: &Experiment,
    path: &Path,
    parts: &Parts,
    options: &OnnxOptions,
) -> Result<LoadedDenoiser, EngineError> {
    if parts.family == Family::Flux {
        let shape = options.sample_shape.unwrap_or([16, 128, 128]);
        let model = FluxDenoiser::load(path, shape, options)?;
        if experiment
            .conditioning
            .as_ref()
            .is_none_or(|c| c.prompts.is_empty())
        {
            return Err(EngineError::Options(format!(
                "{} is a FLUX transformer, which takes prompts: give [conditioning] prompts",
                path.display()
            )));
        }
        return Ok(LoadedDenoiser {
            provider: model.model().provider(),
            providers_note: describe_attempts(model.model().attempts()),
            providers_summary: summarize_attempts(model.model().attempts()),
            timestep_note: None,
            denoiser: Box::new(model),
        });
    }
    if !parts.controlnet.is_empty() {
        let pair = ControlNetPair::load(path, &parts.controlnet, options)?;
        let unet = pair.unet();
        return Ok(LoadedDenoiser {
            provider: unet.provider(),
            providers_note: describe_attempts(unet.attempts()),
            providers_summary: summarize_attempts(unet.attempts()),
            timestep_note: Some(
                "the ControlNet(s) and the U-Net run once for each group of items at one timestep and one \
                 set of ControlNet scales"
                    .into(),
            ),
            denoiser: Box::new(pair),
        });
    }
    let model = OnnxDenoiser::load(path, options).map_err(|e| {
        let setting = "`[model] sample_shape = [C, H, W]` in the experiment";
        open_sample_shape(e, parts.no_latent_shape.as_deref(), setting)
    })?;
    // Before the text encoders load: prompts for a U-Net that takes none would fail there, unexplained.
    check_conditional(&model, experiment.conditioning.as_ref())?;
    Ok(LoadedDenoiser {
        provider: model.provider(),
        providers_note: describe_attempts(model.attempts()),
        providers_summary: summarize_attempts(model.attempts()),
        timestep_note: timestep_note(&model),
        denoiser: Box::new(model),
    })
}

/// The pipeline's VAE decoder, with a note when TensorRT or an fp32 upcast is involved.
fn load_vae(
    vae: &VaePart,
    options: &OnnxOptions,
    hints: ShapeHints,
    loading: &dyn Fn(String),
    notes: &mut Vec<String>,
) -> Result<VaeDecoder, EngineError> {
    let (options, note) = with_profile(options, &vae.model, hints);
    loading(loading_line(&vae.model));
    let decoder = VaeDecoder::load(&vae.model, vae.scaling_factor, vae.shift_factor, &options)?;
    note_if_tensorrt(decoder.model().provider(), note, notes);
    notes.extend(upcast_note(vae, &decoder));
    Ok(decoder)
}

/// The pipeline's text encoders (model and tokenizer each), in order.
/// The text encoders, each with the shape profile of its own text length.
fn load_text_encoders(
    encoders: &[(PathBuf, PathBuf)],
    options: &OnnxOptions,
    (hints, lengths): (ShapeHints, &[Option<[usize; 3]>]),
    loading: &dyn Fn(String),
    notes: &mut Vec<String>,
) -> Result<Vec<TextEncoder>, EngineError> {
    encoders
        .iter()
        .enumerate()
        .map(|(i, (model, tokenizer))| {
            let hints = ShapeHints {
                sequence: lengths.get(i).copied().flatten(),
                ..hints
            };
            let (options, note) = with_profile(options, model, hints);
            loading(loading_line(model));
            let encoder = TextEncoder::load(model, tokenizer, &options)?;
            note_if_tensorrt(encoder.model().provider(), note, notes);
            Ok(encoder)
        })
        .collect()
}

/// Images per VAE decoder call when the experiment does not say: about a megapixel per call (1 at 1024²,
/// 4 at 512²), which a 24 GB card decodes even for SDXL's VAE.
pub fn default_vae_batch(height: usize, width: usize) -> usize {
    ((1 << 20) / (height * width).max(1)).max(1)
}

/// Conditioning for a model that takes none, or none for one that needs text, is the user's mistake to see;
/// the advice names what the model does take.
fn check_conditional(
    model: &OnnxDenoiser,
    spec: Option<&ConditioningSpec>,
) -> Result<(), EngineError> {
    let roles = model.roles();
    let inputs: Vec<&str> = model.inputs().iter().map(|s| s.name.as_str()).collect();
    let text = spec.is_some_and(|s| !s.prompts.is_empty() || s.embeddings.is_some());
    let classes = spec.is_some_and(|s| !s.classes.is_empty());
    let problem = if (text || classes) && !roles.is_conditional() {
        "is unconditional: it takes no prompts, embeddings or classes; remove [conditioning] from the experiment"
    } else if text && roles.conditioning.is_none() {
        "is class-conditional: it takes class labels, not text (it has no encoder_hidden_states input); \
         give [conditioning] classes instead of prompts or embeddings"
    } else if !text && !classes && roles.conditioning.is_some() {
        "is text-conditional (encoder_hidden_states); give [conditioning] prompts (or embeddings)"
    } else if classes && roles.class_labels.is_none() {
        "takes no class labels; give [conditioning] prompts instead of classes"
    } else {
        return Ok(());
    };
    Err(EngineError::Options(format!(
        "{} {problem} (its inputs: {})",
        model.path().display(),
        inputs.join(", ")
    )))
}

/// A U-Net with one timestep per call runs cells at different timesteps in separate calls, and a graph holding a
/// ControlNet cells at different scales: say so.
fn timestep_note(model: &OnnxDenoiser) -> Option<String> {
    let roles = model.roles();
    let timesteps = (!roles.timestep_per_item).then(|| {
        format!(
            "the U-Net takes one timestep per call ({}): cells at different timesteps run in separate model calls",
            roles.timestep.describe()
        )
    });
    let scales = (roles.control_image.is_some()).then_some(
        "the ControlNet takes one scale per call: cells at different ControlNet scales run in separate model calls",
    );
    match (timesteps, scales) {
        (Some(t), Some(s)) => Some(format!("{t}; {s}")),
        (t, s) => t.or(s.map(String::from)),
    }
}

/// A VAE whose config asks for float32 (`force_upcast`) but whose graph takes float16 runs as exported: an
/// ONNX graph's precision is fixed at export. Say so, since such a VAE can return NaN.
fn upcast_note(part: &VaePart, vae: &VaeDecoder) -> Option<String> {
    let elem = vae.input_elem();
    (part.force_upcast && elem != ElemType::F32 && elem != ElemType::F64).then(|| {
        format!(
            "{}: its config sets force_upcast (diffusers decodes it in float32) but the graph takes {elem}; \
             it runs as exported, and if it overflows the cell fails naming it: a float32 export of the VAE \
             (`[model] vae_decoder`) avoids that",
            part.model.display()
        )
    })
}

/// The VAE and text encoders run where the U-Net does, without its role and shape settings.
fn parts_options(experiment: &Experiment) -> OnnxOptions {
    let mut options = onnx_options(experiment);
    options.roles.clear();
    options.sample_shape = None;
    options.prediction_type = None;
    options
}

/// The feature network of `[quality]`, on the CPU unless the model's providers say otherwise.
pub fn load_features(experiment: &Experiment) -> Option<Result<OnnxFeatures, EngineError>> {
    let q = experiment.quality.as_ref()?;
    Some(OnnxFeatures::load(
        &q.features.as_ref()?.network,
        &parts_options(experiment),
        q.logits.as_deref(),
    ))
}

#[cfg(test)]
mod tf32_tests {
    use super::*;

    #[test]
    fn tf32_is_recorded_as_the_gpu_provider_uses_it() {
        let mut options = ProviderOptions::default();
        assert_eq!(tf32_of(ProviderKind::Cpu, &options), None);
        assert_eq!(tf32_of(ProviderKind::Cuda, &options), Some(false));
        assert_eq!(tf32_of(ProviderKind::TensorRt, &options), Some(true));
        options.cuda.tf32 = true;
        assert_eq!(tf32_of(ProviderKind::Cuda, &options), Some(true));
    }
}
