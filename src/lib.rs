//! difflab: a terminal lab for diffusion models.
//!
//! Layers, from the bottom up: [`sampler`] (pure math: noise schedules, timestep spacing, DDPM, DDIM,
//! DPM-Solver++), [`engine`] (the models the samplers drive: the [`engine::Denoiser`] trait, the analytic
//! Gaussian-mixture denoiser and ONNX Runtime models).
//!
//! Beside them, [`metrics`] reads training logs (JSON lines, CSV, TensorBoard event files) once or
//! live and [`plot`] draws them.

pub mod engine;
pub mod metrics;
pub mod plot;
pub mod sampler;
