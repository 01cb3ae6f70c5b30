//! DPMSolverMultistepScheduler with the DPM-Solver++ data-prediction updates (Lu et al. 2022):
//! orders 1–3, midpoint and heun, Karras sigmas, and the SDE variant (DPM++ 2M SDE).

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{
    Common, ConfigError, FamilyConfig, Parsed, Reader, check_unused_variance_type, read_ramp_for,
    read_sigma_list, read_solver_order, read_thresholding, with_vp,
};
use super::flow_shift::{FlowGrid, FlowSigmas, read_flow_mode, truncated_timesteps};
use super::multistep::multistep_order;
use super::prediction::X0Clip;
use super::schedule::{NoiseSchedule, ScheduleConfig};
use super::sigmas::{SigmaRamp, nearest_timestep, ramp_or_list, sigma_to_t};
use super::sigmas::{SigmaSpace, lambda_clipped_end};
use super::spacing::{TimestepSpacing, dpm_timesteps};
use super::start::call_sigma;
use super::step_checks::{check_step_count, check_timesteps};
use super::{NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

/// diffusers' `algorithm_type` (the deprecated noise-prediction variants are not supported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpmAlgorithm {
    /// `dpmsolver++`: the deterministic ODE solver.
    DpmSolverPlusPlus,
    /// `sde-dpmsolver++`: the stochastic solver (DPM++ 2M SDE), noise at every step.
    SdeDpmSolverPlusPlus,
}

impl DpmAlgorithm {
    pub const NAMES: [&'static str; 2] = ["dpmsolver++", "sde-dpmsolver++"];
}

pub use super::settings::{FinalSigma, SolverType};

#[derive(Debug, Clone, PartialEq)]
pub struct DpmSolverConfig {
    pub schedule: ScheduleConfig,
    pub prediction_type: PredictionType,
    /// Only dynamic thresholding applies here (DPM-Solver has no clip_sample).
    pub thresholding: X0Clip,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub solver_order: usize,
    pub algorithm: DpmAlgorithm,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    /// Karras, exponential or beta sigmas instead of the training sigmas at the spaced timesteps.
    pub ramp: SigmaRamp,
    /// `sigmas`: the user's own, one per step.
    pub sigmas: Option<Vec<f64>>,
    pub final_sigmas_type: FinalSigma,
    pub lambda_min_clipped: f64,
    /// `use_flow_sigmas`: a flow-matching model's sigmas and their shift.
    pub flow: Option<FlowSigmas>,
}

pub struct DpmSolver {
    config: DpmSolverConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<i64>,
    /// `timesteps` as the model sees them.
    model_timesteps: Vec<f64>,
    /// `steps + 1` sigmas, float32 as in diffusers.
    sigmas: Vec<f32>,
    index: usize,
    /// The step the run started at (0, or later for img2img).
    begin: usize,
    /// The last `solver_order` x0 predictions, oldest first.
    history: Vec<Vec<f32>>,
    noise: Vec<f32>,
}

impl DpmSolver {
    pub fn new(config: DpmSolverConfig) -> Self {
        let mut alphas_cumprod = NoiseSchedule::new(&config.schedule)
            .alphas_cumprod()
            .to_vec();
        if config.schedule.rescale_betas_zero_snr {
            // Zero terminal SNR makes sigma_max infinite; diffusers nudges ᾱ_T to 2^-24.
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        Self {
            history: vec![Vec::new(); config.solver_order],
            config,
            schedule: NoiseSchedule::from_alphas_cumprod(alphas_cumprod),
            timesteps: Vec::new(),
            model_timesteps: Vec::new(),
            sigmas: Vec::new(),
            index: 0,
            begin: 0,
            noise: Vec::new(),
        }
    }

    fn space(&self) -> SigmaSpace {
        SigmaSpace::of(self.config.flow.is_some())
    }

    /// The last training timestep that `lambda_min_clipped` allows, plus one.
    fn last_timestep(&self) -> usize {
        lambda_clipped_end(&self.schedule, self.config.lambda_min_clipped)
    }

    /// The solver order diffusers uses at step `i` of `n` (it is fixed by the position alone).
    fn order_for(&self, i: usize, n: usize) -> usize {
        let c = &self.config;
        let final_zero = c.final_sigmas_type == FinalSigma::Zero;
        multistep_order(
            i,
            self.begin,
            n,
            c.solver_order,
            c.lower_order_final,
            c.euler_at_final,
            final_zero,
        )
    }

    /// Coefficients of `x_next = cx·x + c[0]·m0 + c[1]·m1 + c[2]·m2 + cz·z` at step `i`
    /// (m0 the newest x0 prediction).
    fn update_coefficients(&self, i: usize, order: usize) -> (f64, [f64; 3], f64) {
        let sigma = |k: usize| self.sigmas[k] as f64;
        let alpha_sigma_lambda = |s: f64| self.space().alpha_sigma_lambda(s);
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(sigma(i + 1));
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(sigma(i));
        let h = lambda_t - lambda_s0;
        let sde = self.config.algorithm == DpmAlgorithm::SdeDpmSolverPlusPlus;
        // First-order part and the weights of the first and second differences D1, D2.
        let (cx, p, q, r, cz) = if sde {
            let e2 = 1.0 - (-2.0 * h).exp();
            (
                sigma_t / sigma_s0 * (-h).exp(),
                alpha_t * e2,
                match self.config.solver_type {
                    SolverType::Midpoint if order == 2 => 0.5 * alpha_t * e2,
                    _ => alpha_t * (e2 / (-2.0 * h) + 1.0),
                },
                // diffusers' sign (see SUMMARY: k-diffusion's 3M SDE uses +0.5).
                alpha_t * ((e2 - 2.0 * h) / (2.0 * h).powi(2) - 0.5),
                sigma_t * e2.sqrt(),
            )
        } else {
            let e1 = (-h).exp() - 1.0;
            (
                sigma_t / sigma_s0,
                -alpha_t * e1,
                match self.config.solver_type {
                    SolverType::Midpoint if order == 2 => -0.5 * alpha_t * e1,
                    _ => alpha_t * (e1 / h + 1.0),
                },
                -alpha_t * ((e1 + h) / (h * h) - 0.5),
                0.0,
            )
        };
        let c = match order {
            1 => [p, 0.0, 0.0],
            2 => {
                let (_, _, lambda_s1) = alpha_sigma_lambda(sigma(i - 1));
                let r0 = (lambda_s0 - lambda_s1) / h;
                [p + q / r0, -q / r0, 0.0]
            }
            _ => {
                let (_, _, lambda_s1) = alpha_sigma_lambda(sigma(i - 1));
                let (_, _, lambda_s2) = alpha_sigma_lambda(sigma(i - 2));
                let (r0, r1) = ((lambda_s0 - lambda_s1) / h, (lambda_s1 - lambda_s2) / h);
                // D1 = (1+w)·D1_0 − w·D1_1 and D2 = g·(D1_0 − D1_1), D1_0 = (m0−m1)/r0, D1_1 = (m1−m2)/r1.
                let (a, b) = (1.0 / r0, 1.0 / r1);
                let (w, g) = (r0 / (r0 + r1), 1.0 / (r0 + r1));
                [
                    p + q * (1.0 + w) * a + r * g * a,
                    -q * (1.0 + w) * a - q * w * b - r * g * a - r * g * b,
                    q * w * b + r * g * b,
                ]
            }
        };
        (cx, c, cz)
    }
}

impl Scheduler for DpmSolver {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let n = self.schedule.num_train_timesteps();
        check_step_count(steps, n)?;
        let train_sigmas = self.schedule.train_sigmas();
        let c = &self.config;
        let ramp = ramp_or_list(c.ramp, c.sigmas.as_deref(), &train_sigmas, steps)?;
        let (timesteps, mut sigmas): (Vec<i64>, Vec<f32>) = if let Some(flow) = &c.flow {
            let sigmas = flow.sigmas(steps, n);
            let timesteps = truncated_timesteps(&sigmas, n);
            (timesteps, sigmas.iter().map(|&s| s as f32).collect())
        } else if let Some(ramp) = ramp {
            let log_sigmas: Vec<f64> = train_sigmas.iter().map(|&s| (s as f64).ln()).collect();
            // diffusers rounds Karras timesteps, except on the cosine schedule, and truncates the others
            // (its int64 cast); a web UI's schedule calls the model at the nearest timestep, as ComfyUI does.
            let cosine = c.schedule.beta_schedule == super::schedule::BetaSchedule::SquaredcosCapV2
                && c.schedule.trained_betas.is_none();
            let round = nearest_timestep(c.ramp, c.sigmas.is_some()) && !cosine;
            let timesteps = ramp
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if round {
                        t.round_ties_even() as i64
                    } else {
                        t as i64
                    }
                })
                .collect();
            (timesteps, ramp.iter().map(|&s| s as f32).collect())
        } else {
            let timesteps = dpm_timesteps(
                c.timestep_spacing,
                n,
                self.last_timestep(),
                steps,
                c.steps_offset,
            );
            check_timesteps(&timesteps, n, steps)?;
            let sigmas = timesteps
                .iter()
                .map(|&t| train_sigmas[t as usize])
                .collect();
            (timesteps, sigmas)
        };
        check_timesteps(&timesteps, n, steps)?;
        sigmas.push(match c.final_sigmas_type {
            FinalSigma::Zero => 0.0,
            // With flow sigmas too diffusers ends at the VP training schedule's smallest sigma.
            FinalSigma::SigmaMin if c.ramp != SigmaRamp::Interpolated || c.sigmas.is_some() => {
                *sigmas.last().unwrap_or(&0.0)
            }
            FinalSigma::SigmaMin => train_sigmas[0],
        });
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.model_timesteps = self.timesteps.iter().map(|&t| t as f64).collect();
        self.index = 0;
        self.begin = 0;
        for h in &mut self.history {
            h.clear();
        }
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.model_timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn order_at(&self, i: usize) -> usize {
        self.order_for(i, self.timesteps.len())
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        call_sigma(&self.sigmas, self.timesteps.len(), call)
            .map(|s| Noising::solver(self.space(), s))
    }

    fn start_at(&mut self, call: usize) -> Option<Noising> {
        let noising = self.noising_at(call)?;
        self.index = call;
        self.begin = call;
        Some(noising)
    }

    fn is_stochastic(&self) -> bool {
        self.config.algorithm == DpmAlgorithm::SdeDpmSolverPlusPlus
    }

    fn step(
        &mut self,
        model_output: &[f32],
        sample: &mut [f32],
        x0: &mut [f32],
        batch: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<(), StepError> {
        let i = self.index;
        check_step(i, self.timesteps.len(), model_output, sample, x0, batch)?;
        let (alpha_s0, sigma_s0, _) = self.space().alpha_sigma_lambda(self.sigmas[i] as f64);
        let prediction = self.config.prediction_type;
        for ((x0, &out), &x) in x0.iter_mut().zip(model_output).zip(sample.iter()) {
            *x0 = prediction
                .x0_eps(out as f64, x as f64, alpha_s0, sigma_s0)
                .0 as f32;
        }
        self.config.thresholding.apply(x0, batch);
        // The history shifts before the update, so m0 is this step's x0.
        self.history.rotate_left(1);
        if let Some(newest) = self.history.last_mut() {
            newest.clear();
            newest.extend_from_slice(x0);
        }

        let order = self.order_for(i, self.timesteps.len());
        let sde = self.is_stochastic();
        if sde {
            self.noise.resize(sample.len(), 0.0);
            noise.fill(i, &mut self.noise);
        }
        if self.sigmas[i + 1] != self.sigmas[i] {
            let (cx, c, cz) = self.update_coefficients(i, order);
            let k = self.history.len();
            let m0 = &self.history[k - 1];
            let m1 = if order >= 2 { &self.history[k - 2] } else { m0 };
            let m2 = if order >= 3 { &self.history[k - 3] } else { m0 };
            for (j, x) in sample.iter_mut().enumerate() {
                let mut v = cx * *x as f64 + c[0] * m0[j] as f64;
                if order >= 2 {
                    v += c[1] * m1[j] as f64;
                }
                if order >= 3 {
                    v += c[2] * m2[j] as f64;
                }
                if sde {
                    v += cz * self.noise[j] as f64;
                }
                *x = v as f32;
            }
        }
        // A step of size zero (Karras sigmas with final_sigmas_type "sigma_min") leaves the sample as
        // it is: the limit of every update as h -> 0. diffusers gives NaN there for heun and order 3.
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for DpmSolverConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(DpmSolver::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
}

pub(super) fn dpm_defaults() -> Value {
    with_vp(json!({
        "solver_order": 2,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": true,
        "euler_at_final": false,
        "use_karras_sigmas": false,
        "use_exponential_sigmas": false,
        "use_beta_sigmas": false,
        "sigma_schedule": null,
        "sigmas": null,
        "use_lu_lambdas": false,
        "use_flow_sigmas": false,
        "flow_shift": 1.0,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": "-inf",
        "variance_type": null,
        "timestep_spacing": "linspace",
        "use_dynamic_shifting": false,
        "time_shift_type": "exponential",
        // set_timesteps' argument: flow_shift = exp(mu) under use_dynamic_shifting.
        "mu": null,
    }))
}

pub(super) fn parse_dpm(r: &mut Reader, c: Common, warnings: &mut Vec<String>) -> Parsed {
    let thresholding = read_thresholding(r)?;
    if r.bool("use_lu_lambdas")? {
        return Err(ConfigError::Unsupported {
            key: "use_lu_lambdas".into(),
            got: "true".into(),
            reason: "difflab implements the default, Karras, exponential, beta and flow sigmas"
                .into(),
        });
    }
    check_unused_variance_type(r)?;
    let flow = read_flow_mode(r, &c, FlowGrid::Multistep, warnings)?;
    let solver_order = read_solver_order(r)?;
    let algorithm = match r.string("algorithm_type")? {
        "dpmsolver++" => DpmAlgorithm::DpmSolverPlusPlus,
        "sde-dpmsolver++" => DpmAlgorithm::SdeDpmSolverPlusPlus,
        other @ ("dpmsolver" | "sde-dpmsolver") => {
            return Err(ConfigError::Unsupported {
                key: "algorithm_type".into(),
                got: format!("{other:?}"),
                reason: "the deprecated noise-prediction solvers are not implemented; use \"dpmsolver++\" or \"sde-dpmsolver++\"".into(),
            });
        }
        other => {
            return Err(ConfigError::InvalidValue {
                key: "algorithm_type".into(),
                got: format!("{other:?}"),
                expected: format!("one of {}", DpmAlgorithm::NAMES.join(", ")),
            });
        }
    };
    let solver_type = r.pick::<SolverType>("solver_type")?;
    let final_sigmas_type = r.pick::<FinalSigma>("final_sigmas_type")?;
    if algorithm == DpmAlgorithm::SdeDpmSolverPlusPlus && solver_order == 3 {
        warnings.push(
            "sde-dpmsolver++ with solver_order 3 follows diffusers, whose third-order SDE term has the opposite sign of k-diffusion's DPM++ 3M SDE".into(),
        );
    }
    let ramp = read_ramp_for(r, &c.schedule)?;
    let sigmas = read_sigma_list(r, ramp, flow.is_some())?;
    Ok(Arc::new(DpmSolverConfig {
        thresholding,
        solver_order,
        algorithm,
        solver_type,
        lower_order_final: r.bool("lower_order_final")?,
        euler_at_final: r.bool("euler_at_final")?,
        ramp,
        sigmas,
        final_sigmas_type,
        lambda_min_clipped: r.lambda("lambda_min_clipped")?,
        flow,
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
    }))
}
