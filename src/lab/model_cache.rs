//! Networks kept loaded from one run to the next (the dashboard's reloads): a run takes them when what they
//! were loaded from is unchanged, and hands them back when it ends, however it ends.

use std::fmt;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::model::LoadedModel;
use super::plan::model_fingerprint;
use super::tensorrt::unet_batch;
use crate::engine::fingerprint;
use crate::engine::providers::ProviderKind;
use crate::experiment::{Experiment, ModelSource};

#[derive(Clone, Default)]
pub struct ModelCache(Arc<Mutex<Option<(String, LoadedModel)>>>);

impl fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.0.lock().is_ok_and(|m| m.is_some());
        write!(f, "ModelCache {{ kept: {kept} }}")
    }
}

impl ModelCache {
    /// The kept model when it was loaded for `key`; another is dropped, so its memory is free for the load
    /// that comes next.
    pub fn take(&self, key: &str) -> Option<LoadedModel> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match kept.take() {
            Some((k, model)) if k == key => Some(model),
            _ => None,
        }
    }

    pub fn keep(&self, key: String, model: LoadedModel) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, model));
    }
}

/// What the loaded networks depend on: the `[model]` table, every file they read (by fingerprint), what the
/// U-Net is told it predicts, the analytic model's schedule, the kind of conditioning (the checks made at
/// load), and under TensorRT the shapes its profiles are built for. Prompts, samplers, steps, guidance and
/// quality settings are not part of it.
pub fn model_key(experiment: &Experiment) -> std::io::Result<String> {
    let mut hash = Sha256::new();
    hash.update(model_fingerprint(experiment)?);
    hash.update(format!("{:?}", experiment.model));
    let config = &experiment.samplers[0].resolved.config;
    hash.update(format!("{:?}", config.prediction_type()));
    if experiment.model.source == ModelSource::Analytic {
        hash.update(format!("{:?}", config.schedule()));
    }
    let c = experiment.conditioning.as_ref();
    let kind = c.map(|c| {
        (
            !c.prompts.is_empty(),
            c.embeddings.is_some(),
            !c.classes.is_empty(),
        )
    });
    hash.update(format!("{kind:?}"));
    if experiment.model.providers.contains(&ProviderKind::TensorRt) {
        let prompts = c.map_or(0, |c| c.prompts.len());
        hash.update(format!(
            "{:?} {prompts} {}",
            unet_batch(experiment),
            experiment.batch
        ));
    }
    Ok(fingerprint::hex(&hash.finalize()))
}
