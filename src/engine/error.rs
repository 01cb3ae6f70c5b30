//! What can go wrong loading or running an ONNX model, in words that say what to do.

use std::fmt;
use std::path::{Path, PathBuf};

use super::denoiser::DenoiseError;
use super::providers::{ProviderAttempt, ProviderKind, clean_ort_message, describe_attempts};
use super::roles::RoleError;
use super::runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{}: no such model file", path.display())]
    ModelMissing { path: PathBuf },
    #[error("{} is not an ONNX model: {reason}", path.display())]
    NotOnnx { path: PathBuf, reason: String },
    #[error("ONNX Runtime could not load {}: {message}", path.display())]
    ModelLoad { path: PathBuf, message: String },
    #[error("{}: {problem}", path.display())]
    Roles { path: PathBuf, problem: RoleError },
    #[error(
        "execution provider {provider} did not run the model and fallback is off ({})",
        describe_attempts(attempts)
    )]
    ProviderFailed {
        provider: ProviderKind,
        attempts: Vec<ProviderAttempt>,
    },
    #[error(
        "no execution provider could run the model ({})",
        describe_attempts(attempts)
    )]
    NoProvider { attempts: Vec<ProviderAttempt> },
    #[error("{0}")]
    Options(String),
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    #[error(transparent)]
    Denoise(#[from] DenoiseError),
}

/// A U-Net whose sample input leaves C, H, W open: the `setting` that gives them, and `why` nothing else
/// did (a pipeline folder without a U-Net config), in place of the generic advice.
pub fn open_sample_shape(e: EngineError, why: Option<&str>, setting: &str) -> EngineError {
    let EngineError::Roles {
        path,
        problem: RoleError::DynamicSampleShape { name, shape },
    } = e
    else {
        return e;
    };
    let why = why.map(|w| format!(" and {w}")).unwrap_or_default();
    EngineError::Options(format!(
        "{}: the sample input '{name}' has dynamic dims {shape}{why}; give them as {setting}",
        path.display()
    ))
}

pub(super) fn ort_error(e: impl fmt::Display) -> EngineError {
    EngineError::Ort(e.to_string())
}

/// Is this ONNX Runtime failure about the model itself (so no other provider will do better)?
pub(super) fn is_model_error(e: &ort::Error) -> bool {
    matches!(
        e.code(),
        ort::ErrorCode::NoSuchFile
            | ort::ErrorCode::InvalidProtobuf
            | ort::ErrorCode::InvalidGraph
            | ort::ErrorCode::NoModel
    )
}

pub(super) fn model_load_error(path: &Path, e: &ort::Error) -> EngineError {
    let mut message = clean_ort_message(e.message());
    if e.code() == ort::ErrorCode::InvalidProtobuf {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        message.push_str(&format!(
            " (the file, {size} bytes, is not a complete ONNX model: truncated or corrupt?)"
        ));
    }
    EngineError::ModelLoad {
        path: path.to_path_buf(),
        message,
    }
}
