//! Models that predict noise: the [`Denoiser`] trait and its implementations.
//!
//! [`OnnxDenoiser`] runs a U-Net exported to ONNX through ONNX Runtime, on TensorRT, CUDA or the CPU:
//! [`runtime`](mod@runtime) finds and loads the ONNX Runtime library, [`providers`] picks the execution provider,
//! [`roles`] maps the model's inputs and outputs, and [`inspect`] gathers what `difflab info` prints.

pub mod analytic;
pub mod clip_tokenizer;
mod denoiser;
mod features;
pub mod limits;
mod onnx;
pub mod providers;
mod report;
pub mod roles;
pub mod runtime;

pub use analytic::{AnalyticDenoiser, GaussianMixture};
pub use denoiser::{DenoiseError, Denoiser, DenoiserInfo, NonFinite};
pub use features::OnnxFeatures;
pub use onnx::{EngineError, OnnxDenoiser, OnnxOptions, PredictionSource};
pub use providers::{
    AttemptOutcome, ProviderAttempt, ProviderKind, ProviderOptions, describe_attempts,
    summarize_attempts,
};
pub use report::{InfoReport, Timing, inspect};
pub use roles::{Dim, ElemType, ModelRoles, Role, RoleError, RoleOverrides, TensorSpec};
pub use runtime::{RuntimeError, RuntimeInfo, RuntimeSource, runtime};
