//! difflab: a terminal lab for diffusion models.
//!
//! Layers, from the bottom up: [`sampler`] (pure math: noise schedules, timestep spacing, DDPM, DDIM,
//! DPM-Solver++), [`engine`] (the models the samplers drive: the [`engine::Denoiser`] trait, the analytic
//! Gaussian-mixture denoiser and ONNX Runtime models), [`lab`] (the denoising loop that joins them),
//! [`tui`] (the dashboard over the lab).
//!
//! Beside them, [`metrics`] reads training logs (JSON lines, CSV, TensorBoard event files) once or
//! live, [`plot`] draws them, [`path_error`] words I/O failures, [`cache_dir`] says where recomputable files go, and [`cli`] holds the subcommands.

pub mod atomic_file;
pub mod cache_dir;
pub mod cli;
pub mod engine;
pub mod experiment;
pub mod guidance;
pub mod lab;
pub mod metrics;
pub mod path_error;
pub mod plot;
pub mod quality;
pub mod sampler;
pub mod tui;
