//! Settings several sampler families read under the same diffusers key, each one enum whose variants are its
//! config values ([`Reader::pick`](super::family::Reader::pick) parses any of them by key).

/// diffusers' `final_sigmas_type`: where the last step lands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
pub enum FinalSigma {
    /// sigma = 0: the clean sample (forces a first-order last step in the multistep solvers).
    Zero,
    /// The smallest training sigma (or a ramp's last sigma repeated).
    SigmaMin,
}

/// diffusers' `solver_type`: how a second-order correction is formed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
pub enum SolverType {
    Midpoint,
    Heun,
}
