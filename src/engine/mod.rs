//! Models that predict noise: the [`Denoiser`] trait and its implementations.
//!
//! [`OnnxDenoiser`] runs a U-Net exported to ONNX through ONNX Runtime, on TensorRT, CUDA or the CPU:
//! [`runtime`](mod@runtime) finds and loads the ONNX Runtime library, [`providers`] picks the execution provider,
//! [`roles`] maps the model's inputs and outputs, and [`inspect`] gathers what `difflab info` prints.

pub mod analytic;
pub mod build_lock;
pub mod clip_tokenizer;
mod condition;
mod controlnet;
mod denoiser;
pub mod describe;
mod error;
mod features;
pub mod fingerprint;
mod floats;
pub mod flux;
pub mod frames;
pub mod graph_io;
pub mod limits;
mod model_file;
mod onnx;
pub mod ort_log;
mod packing;
pub mod pipeline_folder;
pub mod prompts;
pub mod providers;
mod report;
pub mod roles;
pub mod runtime;
mod sana_prompts;
mod session;
pub mod text_encoder;
pub mod trt_profile;
pub mod vae;
mod vae_encoder;

pub use analytic::{AnalyticDenoiser, GaussianMixture};
pub use condition::{Condition, ItemTensor};
pub use controlnet::ControlNetPair;
pub use denoiser::{DenoiseError, Denoiser, DenoiserInfo, NonFinite};
pub use error::{EngineError, open_sample_shape};
pub use features::OnnxFeatures;
pub use onnx::{OnnxDenoiser, PredictionSource, scheduler_config_of};
pub use prompts::{PromptEmbedding, PromptOptions, PromptSide, cut_off, encode_prompts, is_sana};
pub use providers::{
    AttemptOutcome, ProviderAttempt, ProviderKind, ProviderOptions, describe_attempts,
    summarize_attempts,
};
pub use report::{InfoReport, Timing, TimingPlan, inspect};
pub use roles::{Dim, ElemType, ModelRoles, Role, RoleError, RoleOverrides, TensorSpec};
pub use runtime::{RuntimeError, RuntimeInfo, RuntimeSource, runtime};
pub use sana_prompts::{DEFAULT_INSTRUCTION, DEFAULT_MAX_SEQUENCE_LENGTH};
pub use session::{OnnxModel, OnnxOptions};
pub use text_encoder::{EncoderOutput, TextEncoder};
pub use vae::VaeDecoder;
pub use vae_encoder::{EncodedImage, VaeEncoder};
