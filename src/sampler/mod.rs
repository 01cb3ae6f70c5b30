//! Samplers as diffusers runs them: noise schedules, timestep spacing, DDPM, DDIM and DPM-Solver++.

mod prediction;

pub use prediction::PredictionType;
