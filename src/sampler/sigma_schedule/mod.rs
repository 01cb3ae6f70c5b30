//! The sigma schedules of the web UIs (ComfyUI's scheduler names): which noise levels a k-diffusion style
//! sampler visits, from the model's own sigma table or closed forms between two bounds. Every schedule returns
//! float32 sigmas, descending, as ComfyUI hands them to its samplers (most end in an appended 0).
//!
//! - `model_table`: simple, normal, sgm_uniform, ddim_uniform, beta, linear_quadratic (read the model's table);
//! - `ramps`: karras, exponential, polyexponential, kl_optimal, laplace, vp (closed forms);
//! - `published`: Align Your Steps, GITS and OptimalSteps (published tables, log-linear interpolation).

mod model_table;
mod published;
mod ramps;

pub use model_table::ModelSigmas;

/// A schedule by the name ComfyUI gives it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
pub enum SigmaSchedule {
    Simple,
    Normal,
    SgmUniform,
    DdimUniform,
    Beta,
    LinearQuadratic,
    Karras,
    Exponential,
    Polyexponential,
    KlOptimal,
    Laplace,
    Vp,
    #[strum(serialize = "align_your_steps", serialize = "ays")]
    AlignYourSteps,
    Gits,
    OptimalSteps,
}

/// A schedule's parameters where it has them; `None` takes ComfyUI's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleParams {
    /// Bounds of the closed forms (default: the model's table's).
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// Karras (7), polyexponential (1).
    pub rho: Option<f64>,
    /// Beta's shape (0.6, 0.6).
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    /// Laplace's location and scale (0, 0.5).
    pub mu: Option<f64>,
    /// VP's `beta_d`, `beta_min`, `eps_s` (19.9, 0.1, 0.001).
    pub beta_d: Option<f64>,
    pub beta_min: Option<f64>,
    pub eps_s: Option<f64>,
    /// Align Your Steps' and OptimalSteps' table ("SD1", "SDXL", "SVD"; "FLUX", "Wan", "Chroma").
    pub model_type: Option<String>,
    /// GITS' coefficient, 0.80 to 1.50 (1.20).
    pub coeff: Option<f64>,
    /// Run the last `denoise` part of the schedule (1: all of it).
    pub denoise: Option<f64>,
}

impl SigmaSchedule {
    /// Every name (and alias) the schedule is known by.
    pub const NAMES: &'static [&'static str] = <Self as strum::VariantNames>::VARIANTS;

    pub fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }

    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The sigmas for `steps` steps, as ComfyUI computes them, with `denoise` applied as its scheduler nodes do.
    pub fn sigmas(
        self,
        steps: usize,
        model: &ModelSigmas,
        params: &ScheduleParams,
    ) -> Result<Vec<f32>, String> {
        if steps == 0 {
            return Err("a schedule needs at least one step".into());
        }
        let denoise = params.denoise.unwrap_or(1.0);
        if !(denoise > 0.0 && denoise <= 1.0) {
            return Err(format!("denoise is {denoise}; it must be in (0, 1]"));
        }
        if self.is_published() {
            // The table keeps its steps; denoise keeps the last round(steps × denoise) of them.
            let kept = (steps as f64 * denoise).round_ties_even() as usize;
            let mut sigmas = published::sigmas(self, steps, params)?;
            return Ok(sigmas.split_off(sigmas.len() - (kept + 1).min(sigmas.len())));
        }
        // As ComfyUI's KSampler: the whole schedule (ddim_uniform's may be longer than steps + 1), or, to
        // denoise part of the way, the last steps + 1 values of a longer one.
        if denoise > 0.9999 {
            return self.full(steps, model, params);
        }
        let mut sigmas = self.full((steps as f64 / denoise) as usize, model, params)?;
        Ok(sigmas.split_off(sigmas.len().saturating_sub(steps + 1)))
    }

    fn is_published(self) -> bool {
        matches!(self, Self::AlignYourSteps | Self::Gits | Self::OptimalSteps)
    }

    fn full(
        self,
        n: usize,
        model: &ModelSigmas,
        params: &ScheduleParams,
    ) -> Result<Vec<f32>, String> {
        let lo = params.sigma_min.unwrap_or(f64::from(model.sigma_min()));
        let hi = params.sigma_max.unwrap_or(f64::from(model.sigma_max()));
        Ok(match self {
            Self::Simple => model_table::simple(model, n),
            Self::Normal => model_table::normal(model, n, false),
            Self::SgmUniform => model_table::normal(model, n, true),
            Self::DdimUniform => model_table::ddim_uniform(model, n),
            Self::Beta => model_table::beta(
                model,
                n,
                params.alpha.unwrap_or(0.6),
                params.beta.unwrap_or(0.6),
            ),
            Self::LinearQuadratic => model_table::linear_quadratic(model, n),
            Self::Karras => ramps::karras(n, lo, hi, params.rho.unwrap_or(7.0)),
            Self::Exponential => ramps::exponential(n, lo, hi),
            Self::Polyexponential => ramps::polyexponential(n, lo, hi, params.rho.unwrap_or(1.0)),
            Self::KlOptimal => ramps::kl_optimal(n, lo, hi),
            Self::Laplace => ramps::laplace(
                n,
                lo,
                hi,
                params.mu.unwrap_or(0.0),
                params.beta.unwrap_or(0.5),
            ),
            Self::Vp => ramps::vp(
                n,
                params.beta_d.unwrap_or(19.9),
                params.beta_min.unwrap_or(0.1),
                params.eps_s.unwrap_or(1e-3),
            ),
            Self::AlignYourSteps | Self::Gits | Self::OptimalSteps => {
                return published::sigmas(self, n, params);
            }
        })
    }
}

/// `sigmas` with 0 appended, as k-diffusion's `append_zero`.
fn append_zero(mut sigmas: Vec<f32>) -> Vec<f32> {
    sigmas.push(0.0);
    sigmas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_comfyuis_and_ays_is_an_alias() {
        assert_eq!(
            SigmaSchedule::from_name("kl_optimal"),
            Some(SigmaSchedule::KlOptimal)
        );
        assert_eq!(
            SigmaSchedule::from_name("ays"),
            Some(SigmaSchedule::AlignYourSteps)
        );
        assert_eq!(SigmaSchedule::AlignYourSteps.name(), "align_your_steps");
        assert!(SigmaSchedule::NAMES.contains(&"linear_quadratic"));
        assert_eq!(SigmaSchedule::from_name("Karras"), None);
    }

    #[test]
    fn bad_steps_and_denoise_are_refused() {
        let model = ModelSigmas::sd1();
        let none = ScheduleParams::default();
        assert!(SigmaSchedule::Simple.sigmas(0, &model, &none).is_err());
        let bad = ScheduleParams {
            denoise: Some(1.5),
            ..ScheduleParams::default()
        };
        assert!(SigmaSchedule::Karras.sigmas(10, &model, &bad).is_err());
    }
}
