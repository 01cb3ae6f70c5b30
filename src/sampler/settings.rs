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

/// diffusers' `variance_type` (the learned variants need a model with twice the channels and are not
/// supported).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[allow(
    clippy::enum_variant_names,
    reason = "the names are diffusers' variance_type values"
)]
pub enum DdpmVariance {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
    FixedLargeLog,
}

impl DdpmVariance {
    /// Every name, as diffusers' configs spell them.
    pub const NAMES: &'static [&'static str] = <Self as strum::VariantNames>::VARIANTS;

    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}
