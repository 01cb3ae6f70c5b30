//! Models that predict noise: the [`Denoiser`] trait and its implementations.

mod denoiser;

pub use denoiser::{DenoiseError, Denoiser, DenoiserInfo};
