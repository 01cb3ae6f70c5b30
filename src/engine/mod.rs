//! Models that predict noise: the [`Denoiser`] trait and its implementations.

pub mod analytic;
mod denoiser;

pub use analytic::{AnalyticDenoiser, GaussianMixture};
pub use denoiser::{DenoiseError, Denoiser, DenoiserInfo};
