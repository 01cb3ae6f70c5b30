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
