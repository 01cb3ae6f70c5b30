//! `[model]`: which model, on which execution providers, with which training schedule.

use std::path::PathBuf;

use serde_json::{Map, Value};
use toml::Spanned;

use super::schema::{ModelFiles, ModelSection, TensorRtSection};
use super::{ExperimentError, ModelSource, ModelSpec, Reading, closest};
use crate::engine::limits::{cap_threads, frame_shape};
use crate::engine::providers::CudaOptions;
use crate::engine::{ProviderKind, Role, RoleOverrides, scheduler_config_of};
use crate::sampler::PredictionType;
use crate::sampler::config::read_training_schedule;
use crate::sampler::score_sde_ve::CLASS as SCORE_SDE_VE;

/// The VAE decoder, text encoder and tokenizer given beside a U-Net file.
/// `vae_decoder`, `vae_encoder`, `text_encoder`, `tokenizer` and `controlnet` beside a bare U-Net file.
type Parts = ([Option<PathBuf>; 4], Vec<PathBuf>);

impl Reading<'_> {
    /// `[model]`, and the model's training schedule that every sampler starts from.
    pub(super) fn model(
        &mut self,
        m: &ModelSection,
    ) -> Result<(ModelSpec, Map<String, Value>), ExperimentError> {
        let source = self.source(m)?;
        let prediction_type = self.prediction_type(m)?;
        self.flux = is_flux(&source);
        let (scheduler_config, base) = self.schedule(m, &source, prediction_type)?;
        let (sample_shape, frames) = match &m.sample_shape {
            Some(s) => {
                let (shape, frames) = frame_shape(s.get_ref())
                    .map_err(|e| self.error(s.span(), "model.sample_shape", e))?;
                (Some(shape), frames)
            }
            None => (None, None),
        };
        let ([vae_decoder, vae_encoder, text_encoder, tokenizer], controlnet) =
            self.parts(m, &source)?;
        let trt = m.tensorrt.as_ref();
        let spec = ModelSpec {
            source,
            providers: self.providers(m)?,
            fallback: m.fallback.unwrap_or(true),
            device_id: m.device_id.unwrap_or(0),
            prediction_type,
            scheduler_config,
            runtime: m.runtime.as_deref().map(|r| self.resolve(r)),
            threads: self.threads(m)?,
            tensorrt_fp16: trt.and_then(|t| t.fp16).unwrap_or(false),
            tensorrt_engine_cache: trt
                .and_then(|t| t.engine_cache.as_deref())
                .map(|p| self.resolve(p)),
            tensorrt_max_workspace: trt.and_then(|t| t.max_workspace),
            tensorrt_builder_optimization_level: self.trt_level(trt)?,
            tensorrt_layer_norm_fp32_fallback: trt.and_then(|t| t.layer_norm_fp32_fallback),
            tensorrt_cuda_graph: trt.and_then(|t| t.cuda_graph).unwrap_or(false),
            cuda: self.cuda(m)?,
            roles: self.roles(m)?,
            sample_shape,
            frames,
            fps: self.fps(m)?,
            vae_decoder,
            vae_encoder,
            controlnet,
            vae_batch: self.vae_batch(m)?,
            text_encoder,
            tokenizer,
        };
        Ok((spec, base))
    }

    /// `model.path`: "analytic", a U-Net .onnx file or a pipeline folder (with model_index.json).
    fn source(&self, m: &ModelSection) -> Result<ModelSource, ExperimentError> {
        if m.path.get_ref() == "analytic" {
            return Ok(ModelSource::Analytic);
        }
        let p = self.resolve(m.path.get_ref());
        if p.is_dir() {
            if crate::engine::pipeline_folder::is_pipeline_folder(&p) {
                return Ok(ModelSource::Pipeline(p));
            }
            let message = format!(
                "{} is a folder without model_index.json; give the U-Net .onnx file or a pipeline folder as `optimum-cli export onnx --task text-to-image` writes it",
                p.display()
            );
            return Err(self.error(m.path.span(), "model.path", message));
        }
        if !p.is_file() {
            let message = format!(
                "no model file at {} (give the path of an ONNX file, relative to this experiment, or \"analytic\")",
                p.display()
            );
            return Err(self.error(m.path.span(), "model.path", message));
        }
        Ok(ModelSource::Onnx(p))
    }

    fn prediction_type(&self, m: &ModelSection) -> Result<Option<PredictionType>, ExperimentError> {
        let Some(p) = &m.prediction_type else {
            return Ok(None);
        };
        PredictionType::from_name(p.get_ref())
            .map(Some)
            .ok_or_else(|| {
                let names = PredictionType::NAMES.join(", ");
                self.error(
                    p.span(),
                    "model.prediction_type",
                    format!("{:?} is not one of {names}", p.get_ref()),
                )
            })
    }

    /// The training schedule: `model.scheduler_config`, else the one diffusers keeps with the model
    /// (beside a U-Net file, in a pipeline's scheduler/ folder, also for the pipeline's `unet/model.onnx` given
    /// as a file); a set prediction type wins over it.
    fn schedule(
        &self,
        m: &ModelSection,
        source: &ModelSource,
        prediction_type: Option<PredictionType>,
    ) -> Result<(Option<PathBuf>, Map<String, Value>), ExperimentError> {
        let scheduler_config = match (&m.scheduler_config, source) {
            (Some(s), _) => Some(self.existing_file(s, "model.scheduler_config", "file")?),
            (None, ModelSource::Onnx(model)) => {
                Some(scheduler_config_of(model)).filter(|p| p.is_file())
            }
            (None, ModelSource::Pipeline(dir)) => {
                Some(dir.join("scheduler").join("scheduler_config.json")).filter(|p| p.is_file())
            }
            (None, ModelSource::Analytic) => None,
        };
        let mut base = match &scheduler_config {
            Some(p) => read_training_schedule(p).map_err(|e| {
                let span = m
                    .scheduler_config
                    .as_ref()
                    .map_or(m.path.span(), Spanned::span);
                self.error(span, "model.scheduler_config", e.to_string())
            })?,
            None => Map::new(),
        };
        match prediction_type {
            // A score model is a VE one: diffusers' ScoreSdeVeScheduler holds its σ range.
            Some(PredictionType::Score) => {
                let class = base.entry("_class_name").or_insert(SCORE_SDE_VE.into());
                if class != SCORE_SDE_VE {
                    let message = format!(
                        "\"score\" is the prediction of a variance-exploding model, whose scheduler_config.json is \
                         a {SCORE_SDE_VE} (sigma_min, sigma_max); this one is a {class}"
                    );
                    return Err(self.error(m.path.span(), "model.prediction_type", message));
                }
            }
            Some(p) => {
                base.insert("prediction_type".into(), p.name().into());
            }
            None => {}
        }
        if self.flux {
            let shape = m
                .sample_shape
                .as_ref()
                .and_then(|s| frame_shape(s.get_ref()).ok());
            flux_timesteps(shape.map(|(shape, _)| shape), &mut base);
        }
        Ok((scheduler_config, base))
    }

    /// `model.vae_decoder`, `text_encoder` and `tokenizer`: the other parts of a pipeline, named one
    /// by one beside a bare U-Net file (a pipeline folder holds its own).
    fn parts(&mut self, m: &ModelSection, source: &ModelSource) -> Result<Parts, ExperimentError> {
        let given = [
            ("vae_decoder", m.vae_decoder.as_ref().map(Spanned::span)),
            ("vae_encoder", m.vae_encoder.as_ref().map(Spanned::span)),
            ("controlnet", m.controlnet.as_ref().map(Spanned::span)),
            ("text_encoder", m.text_encoder.as_ref().map(Spanned::span)),
            ("tokenizer", m.tokenizer.as_ref().map(Spanned::span)),
        ];
        for (name, span) in given {
            let Some(span) = span else { continue };
            let message = match source {
                ModelSource::Onnx(_) => continue,
                ModelSource::Pipeline(_) => format!(
                    "the pipeline folder has its own {name}; leave this key out, or give the U-Net .onnx file as `path`"
                ),
                ModelSource::Analytic => format!("the analytic model has no {name}"),
            };
            return Err(self.error(span, &format!("model.{name}"), message));
        }
        let file = |v: &Option<Spanned<String>>, key: &str, what: &str| {
            v.as_ref()
                .map(|p| self.existing_file(p, key, what))
                .transpose()
        };
        let vae_decoder = file(&m.vae_decoder, "model.vae_decoder", "VAE decoder file")?;
        let vae_encoder = file(&m.vae_encoder, "model.vae_encoder", "VAE encoder file")?;
        let controlnet = self.controlnet_files(m)?;
        let text_encoder = file(&m.text_encoder, "model.text_encoder", "text encoder file")?;
        let tokenizer = m
            .tokenizer
            .as_ref()
            .map(|t| self.tokenizer(t))
            .transpose()?;
        match (&m.text_encoder, &m.tokenizer) {
            (Some(t), None) => {
                let message = "a text encoder needs its tokenizer: add `tokenizer`, the folder with vocab.json and merges.txt (or tokenizer.json)";
                return Err(self.error(t.span(), "model.text_encoder", message));
            }
            (None, Some(t)) => self.warn(
                None,
                t.span(),
                "model.tokenizer",
                "a tokenizer without `text_encoder` is not used".into(),
            ),
            _ => {}
        }
        Ok((
            [vae_decoder, vae_encoder, text_encoder, tokenizer],
            controlnet,
        ))
    }

    /// `model.controlnet`: one file or a list, each existing.
    fn controlnet_files(&self, m: &ModelSection) -> Result<Vec<PathBuf>, ExperimentError> {
        let Some(given) = &m.controlnet else {
            return Ok(Vec::new());
        };
        let list = match given.get_ref() {
            ModelFiles::One(one) => vec![one.clone()],
            ModelFiles::Many(many) => many.clone(),
        };
        if list.is_empty() {
            let message = "list at least one ControlNet file";
            return Err(self.error(given.span(), "model.controlnet", message));
        }
        list.into_iter()
            .map(|p| {
                let p = Spanned::new(given.span(), p);
                self.existing_file(&p, "model.controlnet", "ControlNet file")
            })
            .collect()
    }

    /// `model.tokenizer`: a folder with a tokenizer.json, or a CLIP vocab.json and merges.txt.
    fn tokenizer(&self, t: &Spanned<String>) -> Result<PathBuf, ExperimentError> {
        let dir = self.resolve(t.get_ref());
        let message = if !dir.is_dir() {
            format!("no tokenizer folder at {}", dir.display())
        } else if dir.join("tokenizer.json").is_file()
            || (dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file())
        {
            return Ok(dir);
        } else {
            format!(
                "{} holds neither tokenizer.json nor vocab.json with merges.txt",
                dir.display()
            )
        };
        Err(self.error(t.span(), "model.tokenizer", message))
    }

    /// `model.providers`, parsed once; none given means all, best first.
    fn providers(&mut self, m: &ModelSection) -> Result<Vec<ProviderKind>, ExperimentError> {
        let Some(list) = &m.providers else {
            return Ok(ProviderKind::ALL.to_vec());
        };
        let mut providers = Vec::new();
        for p in list {
            let kind: ProviderKind = p.get_ref().parse().map_err(|_| {
                self.error(
                    p.span(),
                    "model.providers",
                    format!(
                        "unknown execution provider {:?}; use tensorrt, cuda or cpu",
                        p.get_ref()
                    ),
                )
            })?;
            if providers.contains(&kind) {
                self.warn(
                    None,
                    p.span(),
                    "model.providers",
                    format!("{kind} is listed twice; it is tried once"),
                );
            } else {
                providers.push(kind);
            }
        }
        if providers.is_empty() {
            let span = m.path.span();
            return Err(self.error(
                span,
                "model.providers",
                "list at least one provider: tensorrt, cuda or cpu",
            ));
        }
        Ok(providers)
    }

    /// `model.tensorrt.builder_optimization_level`: 0 to 5, as TensorRT's builder takes it.
    fn trt_level(&self, trt: Option<&TensorRtSection>) -> Result<Option<u8>, ExperimentError> {
        let Some(level) = trt.and_then(|t| t.builder_optimization_level.as_ref()) else {
            return Ok(None);
        };
        match *level.get_ref() {
            l @ 0..=5 => Ok(Some(l)),
            _ => Err(self.error(
                level.span(),
                "model.tensorrt.builder_optimization_level",
                "must be from 0 to 5 (TensorRT's default is 3; higher builds slower, may run faster)",
            )),
        }
    }

    /// `[model.cuda]`, with ONNX Runtime's key names; a choice outside ONNX Runtime's is an error at its key.
    fn cuda(&self, m: &ModelSection) -> Result<CudaOptions, ExperimentError> {
        let Some(c) = &m.cuda else {
            return Ok(CudaOptions::default());
        };
        let choice = |value: &Option<Spanned<String>>, key: &str, allowed: &[&str]| {
            let Some(v) = value else { return Ok(None) };
            if allowed.contains(&v.get_ref().as_str()) {
                return Ok(Some(v.get_ref().clone()));
            }
            let message = format!("{:?} is not one of {}", v.get_ref(), allowed.join(", "));
            Err(self.error(v.span(), key, message))
        };
        Ok(CudaOptions {
            tf32: c.tf32.unwrap_or(false),
            cudnn_conv_algo_search: choice(
                &c.cudnn_conv_algo_search,
                "model.cuda.cudnn_conv_algo_search",
                &CudaOptions::CONV_SEARCH,
            )?,
            arena_extend_strategy: choice(
                &c.arena_extend_strategy,
                "model.cuda.arena_extend_strategy",
                &CudaOptions::ARENA,
            )?,
            gpu_mem_limit: c.gpu_mem_limit,
            prefer_nhwc: c.prefer_nhwc.unwrap_or(false),
            cuda_graph: c.cuda_graph.unwrap_or(false),
        })
    }

    /// `model.vae_batch`: at least 1.
    fn vae_batch(&self, m: &ModelSection) -> Result<Option<usize>, ExperimentError> {
        let Some(b) = &m.vae_batch else {
            return Ok(None);
        };
        if *b.get_ref() == 0 {
            return Err(self.error(
                b.span(),
                "model.vae_batch",
                "must be at least 1 (images per VAE decoder call)",
            ));
        }
        Ok(Some(*b.get_ref()))
    }

    /// `model.threads`: at least 1, at most the cores this machine has (capped, with a warning).
    fn threads(&mut self, m: &ModelSection) -> Result<Option<usize>, ExperimentError> {
        let Some(t) = &m.threads else { return Ok(None) };
        if *t.get_ref() == 0 {
            return Err(self.error(t.span(), "model.threads", "must be at least 1"));
        }
        let (threads, note) = cap_threads(*t.get_ref());
        if let Some(note) = note {
            self.warn(None, t.span(), "model.threads", note);
        }
        Ok(Some(threads))
    }

    /// `[model] fps`: a frame rate a GIF and a terminal can play, 1 to 50 frames a second.
    fn fps(&self, m: &ModelSection) -> Result<Option<f64>, ExperimentError> {
        let Some(fps) = &m.fps else { return Ok(None) };
        let value = *fps.get_ref();
        if !(1.0..=50.0).contains(&value) {
            let message = format!(
                "{value} is not a frame rate clips can play at: give 1 to 50 frames a second"
            );
            return Err(self.error(fps.span(), "model.fps", message));
        }
        Ok(Some(value))
    }

    /// `[model.roles]`: each key a role difflab knows.
    fn roles(&self, m: &ModelSection) -> Result<RoleOverrides, ExperimentError> {
        let mut roles = RoleOverrides::new();
        for (key, name) in m.roles.iter().flatten() {
            let Some(role) = Role::from_key(key.get_ref()) else {
                let known: Vec<String> = Role::ALL.iter().map(|r| r.key().to_string()).collect();
                let mut message = format!(
                    "unknown role `{}`; the roles are {}",
                    key.get_ref(),
                    known.join(", ")
                );
                if let Some(best) = closest(key.get_ref(), &known) {
                    message.push_str(&format!("; did you mean `{best}`?"));
                }
                return Err(self.error(key.span(), "model.roles", message));
            };
            roles.insert(role, name.clone());
        }
        Ok(roles)
    }
}

/// Whether the model is a FLUX pipeline folder.
fn is_flux(source: &ModelSource) -> bool {
    match source {
        ModelSource::Pipeline(dir) => crate::engine::pipeline_folder::read_pipeline(dir)
            .is_ok_and(|p| p.family == crate::engine::pipeline_folder::Family::Flux),
        _ => false,
    }
}

/// What `FluxPipeline` passes its scheduler besides the config: its own sigmas, `linspace(1, 1/n, n)`, and
/// under dynamic shifting the `mu` of the image size, from the packed token count (H/16 · W/16) as its
/// `calculate_shift`. Added to the base config of a FLUX pipeline folder, where the sampler's keys take them.
fn flux_timesteps(sample_shape: Option<[usize; 3]>, base: &mut Map<String, Value>) {
    base.insert("sigmas".into(), "flux".into());
    if base.get("use_dynamic_shifting") != Some(&Value::Bool(true)) {
        return;
    }
    let number = |key: &str, default: f64| base.get(key).and_then(Value::as_f64).unwrap_or(default);
    // FluxPipeline's default image is 1024², latents 128×128.
    let [_, h, w] = sample_shape.unwrap_or([16, 128, 128]);
    let mu = crate::sampler::flow_shift::calculate_shift(
        (h / 2) * (w / 2),
        number("base_image_seq_len", 256.0) as usize,
        number("max_image_seq_len", 4096.0) as usize,
        number("base_shift", 0.5),
        number("max_shift", 1.15),
    );
    base.insert("mu".into(), mu.into());
}
