//! difflab: a terminal lab for diffusion models.
//!
//! Layers, from the bottom up: [`sampler`] (pure math: noise schedules, timestep spacing, DDPM, DDIM,
//! DPM-Solver++), [`engine`] (the models the samplers drive: the [`engine::Denoiser`] trait, the analytic
//! Gaussian-mixture denoiser and ONNX Runtime models), [`lab`] (the denoising loop that joins them),
//! [`tui`] (the dashboard over the lab).

pub mod cli;
pub mod engine;
pub mod experiment;
pub mod lab;
pub mod quality;
pub mod sampler;
pub mod tui;
