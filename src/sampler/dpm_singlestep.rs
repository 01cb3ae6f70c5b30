//! DPMSolverSinglestepScheduler (Lu et al. 2022, singlestep DPM-Solver and DPM-Solver++): steps are
//! grouped into single steps of order 1–3 from one anchor sample, each stage a model call. Orders
//! follow diffusers' `order_list`; DPM++ 2S / 3S, the noise-prediction `dpmsolver` and the SDE variant.

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{
    Common, FamilyConfig, Parsed, Reader, check_time_shift_type, check_unused_variance_type,
    read_ramp_for, read_sigma_list, read_solver_order, read_thresholding,
};
use super::prediction::X0Clip;
use super::schedule::{NoiseSchedule, ScheduleConfig};
use super::settings::FinalSigma;
use super::settings::SolverType;
use super::sigmas::{SigmaRamp, log_sigmas_f32, nearest_timestep, ramp_or_list, sigma_to_t};
use super::sigmas::{SigmaSpace, alpha_sigma_lambda, lambda_clipped_end};
use super::spacing::{TimestepSpacing, dpm_timesteps};
use super::start::call_sigma;
use super::step_checks::{check_step_count, check_timesteps};
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

/// diffusers' `algorithm_type` of the singlestep solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinglestepAlgorithm {
    /// `dpmsolver`: the solver in noise-prediction form.
    DpmSolver,
    /// `dpmsolver++`: the data-prediction solver (DPM++ 2S / 3S).
    DpmSolverPlusPlus,
    /// `sde-dpmsolver++`: the stochastic data-prediction solver, noise at every step.
    SdeDpmSolverPlusPlus,
}

impl SinglestepAlgorithm {
    pub const NAMES: [&'static str; 3] = ["dpmsolver", "dpmsolver++", "sde-dpmsolver++"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "dpmsolver" => Some(Self::DpmSolver),
            "dpmsolver++" => Some(Self::DpmSolverPlusPlus),
            "sde-dpmsolver++" => Some(Self::SdeDpmSolverPlusPlus),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinglestepConfig {
    pub schedule: ScheduleConfig,
    pub prediction_type: PredictionType,
    /// Dynamic thresholding (the class has no clip_sample).
    pub thresholding: X0Clip,
    pub solver_order: usize,
    pub algorithm: SinglestepAlgorithm,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub ramp: SigmaRamp,
    /// `sigmas`: the user's own, one per step.
    pub sigmas: Option<Vec<f64>>,
    /// `final_sigmas_type = "sigma_min"`: the last step lands on the smallest training sigma, not 0.
    pub final_sigma_min: bool,
    pub lambda_min_clipped: f64,
}

pub struct DpmSinglestep {
    config: SinglestepConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    /// `steps + 1` sigmas, float32 as in diffusers.
    sigmas: Vec<f32>,
    orders: Vec<usize>,
    index: usize,
    /// The last `solver_order` converted model outputs, oldest first (empty: none yet).
    history: Vec<Vec<f32>>,
    /// The sample each single step starts from (stored at its order-1 stage).
    anchor: Vec<f32>,
    noise: Vec<f32>,
}

/// diffusers' `get_order_list`: the stage of every step within its single step.
pub fn order_list(steps: usize, order: usize, lower_order_final: bool) -> Vec<usize> {
    let group: Vec<usize> = (1..=order).collect();
    let repeat = |k: usize| group.iter().copied().cycle().take(k * order);
    let n = steps;
    if !lower_order_final {
        return repeat(n / order).collect();
    }
    let tail: &[usize] = match (order, n % order) {
        (3, 0) => &[1, 2, 1],
        (2, 0) => &[1, 1],
        (_, 1) => &[1],
        (3, 2) => &[1, 2],
        _ => &[],
    };
    let full = (n - tail.len()) / order;
    repeat(full).chain(tail.iter().copied()).collect()
}

impl DpmSinglestep {
    pub fn new(config: SinglestepConfig) -> Self {
        Self {
            schedule: NoiseSchedule::new(&config.schedule),
            history: vec![Vec::new(); config.solver_order],
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            orders: Vec::new(),
            index: 0,
            anchor: Vec::new(),
            noise: Vec::new(),
        }
    }

    /// The `steps` integer timesteps and their sigmas (the final sigma not yet appended).
    fn schedule_for(&self, steps: usize) -> Result<(Vec<i64>, Vec<f32>), ConfigError> {
        let n = self.schedule.num_train_timesteps();
        let train = self.schedule.train_sigmas();
        let ramp = ramp_or_list(
            self.config.ramp,
            self.config.sigmas.as_deref(),
            &train,
            steps,
        )?;
        let (timesteps, sigmas): (Vec<i64>, Vec<f32>) = match ramp {
            None => {
                let end = lambda_clipped_end(&self.schedule, self.config.lambda_min_clipped);
                let t = dpm_timesteps(TimestepSpacing::Linspace, n, end, steps, 0);
                check_timesteps(&t, n, steps)?;
                let s = t.iter().map(|&t| train[t as usize]).collect();
                (t, s)
            }
            Some(ramp) => {
                let log_sigmas = log_sigmas_f32(&train);
                // A web UI's schedule calls the model at the nearest timestep, as ComfyUI does.
                let karras = nearest_timestep(self.config.ramp, self.config.sigmas.is_some());
                // Karras timesteps are rounded; the others are truncated by the int64 cast.
                let t = ramp
                    .iter()
                    .map(|&s| sigma_to_t(s, &log_sigmas))
                    .map(|t| if karras { t.round_ties_even() } else { t.trunc() } as i64)
                    .collect();
                (t, ramp.iter().map(|&s| s as f32).collect())
            }
        };
        check_timesteps(&timesteps, n, steps)?;
        Ok((timesteps, sigmas))
    }

    /// The data prediction (x0) and the value the solver works with (x0, or epsilon for `dpmsolver`).
    fn convert(&mut self, model_output: &[f32], sample: &[f32], x0: &mut [f32], batch: usize) {
        let (alpha, sigma, _) = alpha_sigma_lambda(self.sigmas[self.index] as f64);
        let prediction = self.config.prediction_type;
        for ((x0, &out), &x) in x0.iter_mut().zip(model_output).zip(sample) {
            *x0 = prediction.x0_eps(out as f64, x as f64, alpha, sigma).0 as f32;
        }
        self.config.thresholding.apply(x0, batch);
        self.history.rotate_left(1);
        let Some(newest) = self.history.last_mut() else {
            return;
        };
        newest.clear();
        if self.config.algorithm == SinglestepAlgorithm::DpmSolver {
            // Epsilon from the (possibly thresholded) x0: equal to the model's epsilon without thresholding.
            newest.extend(
                x0.iter()
                    .zip(sample)
                    .map(|(&d, &x)| ((x as f64 - alpha * d as f64) / sigma) as f32),
            );
        } else {
            newest.extend_from_slice(x0);
        }
    }

    /// The order of step `i`, lowered while the history is too short (a run always starts at 1).
    fn order_now(&self, i: usize) -> usize {
        let k = self.history.len();
        let mut order = self.orders[i];
        while order > 1 && self.history[k - order].is_empty() {
            order -= 1;
        }
        order
    }

    /// The weights of `x = ca·anchor + w[0]·m0 + w[1]·m1 + w[2]·m2 + cz·z` at step `i` (m0 newest).
    fn weights(&self, i: usize, order: usize) -> (f64, [f64; 3], f64) {
        let lam = |k: usize| alpha_sigma_lambda(self.sigmas[k] as f64);
        let (alpha_t, sigma_t, lambda_t) = lam(i + 1);
        let (alpha_a, sigma_a, lambda_a) = lam(i + 1 - order);
        let h = lambda_t - lambda_a;
        // The differences D1, D1_1 (order 3 midpoint) and D2 as weights on (m0, m1, m2).
        let (d0, d1, d2) = match order {
            1 => ([1.0, 0.0, 0.0], [0.0; 3], [0.0; 3]),
            2 => {
                let r0 = (lam(i).2 - lambda_a) / h;
                ([0.0, 1.0, 0.0], [1.0 / r0, -1.0 / r0, 0.0], [0.0; 3])
            }
            _ => {
                let (r0, r1) = ((lam(i).2 - lambda_a) / h, (lam(i - 1).2 - lambda_a) / h);
                let d1_0 = [0.0, 1.0 / r1, -1.0 / r1];
                let d1_1 = [1.0 / r0, 0.0, -1.0 / r0];
                let d1 = match self.config.solver_type {
                    SolverType::Midpoint => d1_1,
                    SolverType::Heun => combine(r0 / (r0 - r1), d1_0, -r1 / (r0 - r1), d1_1),
                };
                let d2 = combine(2.0 / (r0 - r1), d1_1, -2.0 / (r0 - r1), d1_0);
                ([0.0, 0.0, 1.0], d1, d2)
            }
        };
        let (ca, p, q, r, cz) = self.scalars(order, h, (alpha_t, sigma_t), (alpha_a, sigma_a));
        // Order 1 has no D1 term: its weight is 0/0 for a step of size zero (Karras sigmas ending
        // on sigma_min), where the step must leave the anchor as it is.
        let mut w = if order == 1 {
            [p, 0.0, 0.0]
        } else {
            combine(p, d0, q, d1)
        };
        if order == 3 && self.config.solver_type == SolverType::Heun {
            w = combine(1.0, w, r, d2);
        }
        (ca, w, cz)
    }

    /// The anchor weight, the weights of D0, D1 and D2, and the noise weight, for step size `h`.
    fn scalars(
        &self,
        order: usize,
        h: f64,
        (alpha_t, sigma_t): (f64, f64),
        (alpha_a, sigma_a): (f64, f64),
    ) -> (f64, f64, f64, f64, f64) {
        let midpoint2 = order == 2 && self.config.solver_type == SolverType::Midpoint;
        match self.config.algorithm {
            SinglestepAlgorithm::DpmSolverPlusPlus => {
                let e = (-h).exp() - 1.0;
                let q = if midpoint2 {
                    -0.5 * alpha_t * e
                } else {
                    alpha_t * (e / h + 1.0)
                };
                let r = -alpha_t * ((e + h) / (h * h) - 0.5);
                (sigma_t / sigma_a, -alpha_t * e, q, r, 0.0)
            }
            SinglestepAlgorithm::DpmSolver => {
                let e = h.exp() - 1.0;
                let q = if midpoint2 {
                    -0.5 * sigma_t * e
                } else {
                    -sigma_t * (e / h - 1.0)
                };
                let r = -sigma_t * ((e - h) / (h * h) - 0.5);
                (alpha_t / alpha_a, -sigma_t * e, q, r, 0.0)
            }
            SinglestepAlgorithm::SdeDpmSolverPlusPlus => {
                let e2 = 1.0 - (-2.0 * h).exp();
                let q = if midpoint2 {
                    0.5 * alpha_t * e2
                } else {
                    alpha_t * (e2 / (-2.0 * h) + 1.0)
                };
                // diffusers' sign (as its multistep SDE), recorded in the goldens.
                let r = alpha_t * ((e2 - 2.0 * h) / (2.0 * h).powi(2) - 0.5);
                let ca = sigma_t / sigma_a * (-h).exp();
                (ca, alpha_t * e2, q, r, sigma_t * e2.sqrt())
            }
        }
    }
}

/// `a·u + b·v` for weight triples.
fn combine(a: f64, u: [f64; 3], b: f64, v: [f64; 3]) -> [f64; 3] {
    [
        a * u[0] + b * v[0],
        a * u[1] + b * v[1],
        a * u[2] + b * v[2],
    ]
}

impl Scheduler for DpmSinglestep {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        check_step_count(steps, self.schedule.num_train_timesteps())?;
        let (timesteps, mut sigmas) = self.schedule_for(steps)?;
        let c = &self.config;
        sigmas.push(if c.final_sigma_min {
            self.schedule.train_sigmas()[0]
        } else {
            0.0
        });
        // diffusers forces lower_order_final when the groups do not fit or the last step goes to 0.
        let lower_order_final =
            c.lower_order_final || !steps.is_multiple_of(c.solver_order) || !c.final_sigma_min;
        let mut orders = order_list(steps, c.solver_order, lower_order_final);
        if !c.final_sigma_min
            && let Some(last) = orders.last_mut()
        {
            *last = 1;
        }
        self.orders = orders;
        self.timesteps = timesteps.iter().map(|&t| t as f64).collect();
        self.sigmas = sigmas;
        self.index = 0;
        for h in &mut self.history {
            h.clear();
        }
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn order_at(&self, i: usize) -> usize {
        self.orders.get(i).copied().unwrap_or(1)
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        call_sigma(&self.sigmas, self.timesteps.len(), call)
            .map(|s| Noising::solver(SigmaSpace::Vp, s))
    }

    fn start_at(&mut self, call: usize) -> Option<Noising> {
        let noising = self.noising_at(call)?;
        self.index = call;
        Some(noising)
    }

    fn is_stochastic(&self) -> bool {
        self.config.algorithm == SinglestepAlgorithm::SdeDpmSolverPlusPlus
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
        self.convert(model_output, sample, x0, batch);
        let order = self.order_now(i);
        if order == 1 {
            self.anchor.clear();
            self.anchor.extend_from_slice(sample);
        }
        let sde = self.is_stochastic();
        if sde {
            self.noise.resize(sample.len(), 0.0);
            noise.fill(i, &mut self.noise);
        }
        let (ca, w, cz) = self.weights(i, order);
        let k = self.history.len();
        let m = |j: usize| &self.history[k - 1 - j.min(order - 1)];
        let (m0, m1, m2) = (m(0), m(1), m(2));
        for (j, x) in sample.iter_mut().enumerate() {
            let mut v = ca * self.anchor[j] as f64 + w[0] * m0[j] as f64;
            if order >= 2 {
                v += w[1] * m1[j] as f64;
            }
            if order >= 3 {
                v += w[2] * m2[j] as f64;
            }
            if sde {
                v += cz * self.noise[j] as f64;
            }
            *x = v as f32;
        }
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for SinglestepConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(DpmSinglestep::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn singlestep_defaults() -> Value {
    json!({
        "solver_order": 2,
        "thresholding": false,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": false,
        "use_karras_sigmas": false,
        "use_exponential_sigmas": false,
        "use_beta_sigmas": false,
        "sigma_schedule": null,
        "sigmas": null,
        "use_flow_sigmas": false,
        "flow_shift": 1.0,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": "-inf",
        "variance_type": null,
        "use_dynamic_shifting": false,
        "time_shift_type": "exponential",
    })
}

/// Rejects a `true` for settings difflab does not implement.
pub(super) fn refuse_true(r: &mut Reader, keys: &[&str], reason: &str) -> Result<(), ConfigError> {
    for &key in keys {
        if r.bool(key)? {
            return Err(ConfigError::Unsupported {
                key: key.into(),
                got: "true".into(),
                reason: reason.into(),
            });
        }
    }
    Ok(())
}

/// `final_sigmas_type`: true for "sigma_min", false for "zero".
pub(super) fn read_final_sigma_min(r: &mut Reader) -> Result<bool, ConfigError> {
    Ok(r.pick::<FinalSigma>("final_sigmas_type")? == FinalSigma::SigmaMin)
}

pub(super) fn parse_singlestep(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    refuse_true(
        r,
        &["use_flow_sigmas", "use_dynamic_shifting"],
        "difflab implements the VP sigmas (default, Karras, exponential, beta)",
    )?;
    check_unused_variance_type(r)?;
    check_time_shift_type(r)?;
    let thresholding = read_thresholding(r)?;
    let solver_order = read_solver_order(r)?;
    let algorithm = r.choice(
        "algorithm_type",
        &SinglestepAlgorithm::NAMES,
        SinglestepAlgorithm::from_name,
    )?;
    let solver_type = r.pick::<SolverType>("solver_type")?;
    let final_sigma_min = read_final_sigma_min(r)?;
    if algorithm == SinglestepAlgorithm::DpmSolver && !final_sigma_min {
        // diffusers refuses this pair: the noise-prediction step to sigma 0 divides by zero.
        return Err(ConfigError::InvalidValue {
            key: "final_sigmas_type".into(),
            got: "\"zero\"".into(),
            expected: "\"sigma_min\" with algorithm_type \"dpmsolver\"".into(),
        });
    }
    let ramp = read_ramp_for(r, &c.schedule)?;
    let sigmas = read_sigma_list(r, ramp, false)?;
    Ok(Arc::new(SinglestepConfig {
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        thresholding,
        solver_order,
        algorithm,
        solver_type,
        lower_order_final: r.bool("lower_order_final")?,
        ramp,
        sigmas,
        final_sigma_min,
        lambda_min_clipped: r.lambda("lambda_min_clipped")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplerConfig;
    use serde_json::json;

    fn resolve(name: &str, settings: serde_json::Value) -> Result<SamplerConfig, ConfigError> {
        let settings = settings.as_object().cloned().unwrap_or_default();
        SamplerConfig::resolve(name, None, &settings).map(|r| r.config)
    }

    #[test]
    fn one_model_call_per_step_and_the_forced_lower_order_final() {
        let mut s = resolve("dpm++3s", json!({})).unwrap().build();
        s.set_steps(12).unwrap();
        assert_eq!(s.timesteps().len(), 12);
        assert_eq!(s.sigmas().unwrap().len(), 13);
        // final_sigmas_type "zero" forces lower_order_final: the last group is [1, 2, 1].
        let orders: Vec<usize> = (0..12).map(|i| s.order_at(i)).collect();
        assert_eq!(orders, [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 1]);
        assert!(!s.is_stochastic());
        let sde = resolve("dpm++2s", json!({"algorithm_type": "sde-dpmsolver++"})).unwrap();
        assert!(sde.build().is_stochastic());
    }

    #[test]
    fn bad_settings_name_their_key() {
        let e = resolve("dpm++2s", json!({"solver_order": 4})).unwrap_err();
        assert!(e.to_string().contains("`solver_order`"), "{e}");
        let e = resolve("dpm++2s", json!({"algorithm_type": "dpmsolver"})).unwrap_err();
        assert!(e.to_string().contains("`final_sigmas_type`"), "{e}");
        let e = resolve("dpm++2s", json!({"use_flow_sigmas": true})).unwrap_err();
        assert!(e.to_string().contains("`use_flow_sigmas`"), "{e}");
        let e = resolve("dpm++2s-karras", json!({"use_exponential_sigmas": true})).unwrap_err();
        assert!(e.to_string().contains("`use_exponential_sigmas`"), "{e}");
        assert!(resolve("dpm++2s", json!({"timestep_spacing": "leading"})).is_ok());
    }

    #[test]
    fn order_lists_match_diffusers() {
        assert_eq!(order_list(10, 2, true), [1, 2, 1, 2, 1, 2, 1, 2, 1, 1]);
        assert_eq!(order_list(11, 2, true), [1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1]);
        assert_eq!(
            order_list(12, 3, true),
            [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 1]
        );
        assert_eq!(order_list(10, 3, true), [1, 2, 3, 1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(order_list(11, 3, true), [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2]);
        assert_eq!(order_list(6, 3, false), [1, 2, 3, 1, 2, 3]);
        assert_eq!(order_list(4, 1, true), [1, 1, 1, 1]);
        assert_eq!(order_list(1, 2, true), [1]);
        assert_eq!(order_list(2, 3, true), [1, 2]);
    }
}
