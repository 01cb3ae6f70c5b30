//! The experiment's model and feature network, loaded through the engine.

use crate::engine::{
    AnalyticDenoiser, Denoiser, EngineError, GaussianMixture, OnnxDenoiser, OnnxFeatures,
    OnnxOptions, ProviderOptions, describe_attempts, summarize_attempts,
};
use crate::experiment::{Experiment, ModelSource};
use crate::sampler::{NoiseSchedule, PredictionType};

/// The model, ready to run, with what to tell the user about where it runs.
pub struct LoadedModel {
    pub denoiser: Box<dyn Denoiser>,
    pub sample_shape: [usize; 3],
    /// The provider that runs it.
    pub provider: String,
    /// Every provider tried and what happened to it, in one line.
    pub providers_note: String,
    /// The providers that did not run, in a few words (empty when the first choice runs).
    pub providers_summary: String,
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
        },
        prediction_type: m.prediction_type,
        roles: m.roles.clone(),
        sample_shape: m.sample_shape,
        runtime_path: m.runtime.clone(),
        output_dir: Some(experiment.output_dir.clone()),
        intra_threads: m.threads,
        profile_nodes: false,
    }
}

pub fn load_model(experiment: &Experiment) -> Result<LoadedModel, EngineError> {
    match &experiment.model.source {
        ModelSource::Analytic => {
            let shape = experiment.model.sample_shape.unwrap_or([1, 8, 8]);
            let schedule = NoiseSchedule::new(experiment.samplers[0].resolved.config.schedule());
            let prediction = experiment
                .model
                .prediction_type
                .unwrap_or(PredictionType::Epsilon);
            Ok(LoadedModel {
                denoiser: Box::new(AnalyticDenoiser::new(
                    GaussianMixture::patterns(shape),
                    schedule,
                    shape,
                    prediction,
                )),
                sample_shape: shape,
                provider: "builtin".into(),
                providers_note: "the analytic model runs in difflab itself".into(),
                providers_summary: String::new(),
            })
        }
        ModelSource::Pipeline(dir) => Err(EngineError::Options(format!(
            "{}: pipeline folders do not run yet; give the U-Net's unet/model.onnx as `model.path`",
            dir.display()
        ))),
        ModelSource::Onnx(path) => {
            let model = OnnxDenoiser::load(path, &onnx_options(experiment))?;
            let info = model.info();
            Ok(LoadedModel {
                sample_shape: info.sample_shape,
                provider: model.provider().to_string(),
                providers_note: describe_attempts(model.attempts()),
                providers_summary: summarize_attempts(model.attempts()),
                denoiser: Box::new(model),
            })
        }
    }
}

/// The feature network of `[quality]`, on the CPU unless the model's providers say otherwise.
pub fn load_features(experiment: &Experiment) -> Option<Result<OnnxFeatures, EngineError>> {
    let q = experiment.quality.as_ref()?;
    let mut options = onnx_options(experiment);
    options.roles.clear();
    options.sample_shape = None;
    options.prediction_type = None;
    Some(OnnxFeatures::load(&q.features, &options))
}
