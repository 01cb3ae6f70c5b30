//! The EDM classes (Karras et al. 2022): EDMEulerScheduler and EDMDPMSolverMultistepScheduler. The
//! model is preconditioned: it sees `x·c_in(σ)` and `c_noise = 0.25·log σ` as its timestep, and its
//! output F becomes the denoised sample `c_skip(σ)·x + c_out(σ)·F` inside `step` (so the Scheduler
//! trait needs nothing more than its input divisor and timesteps).

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{
    Common, FamilyConfig, Parsed, Reader, merged, read_solver_order, read_thresholding,
};
use super::kdiff::Churn;
use super::kdiff::{number_or_inf, unsupported_prediction};
use super::multistep::multistep_order;
use super::prediction::X0Clip;
use super::schedule::{ScheduleConfig, torch_linspace_f32};
use super::settings::{FinalSigma, SolverType};
use super::sigmas::karras;
use super::start::call_sigma;
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

/// diffusers' `sigma_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdmSchedule {
    Karras,
    Exponential,
}

/// The settings both EDM classes share.
#[derive(Debug, Clone, PartialEq)]
pub struct EdmConfig {
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub sigma_data: f64,
    pub rho: f64,
    pub sigma_schedule: EdmSchedule,
    /// Epsilon or v (the sign of c_out); `sample` is refused when parsing.
    pub prediction_type: PredictionType,
    /// `final_sigmas_type = "sigma_min"`.
    pub final_sigma_min: bool,
    /// The common training-schedule keys: unused by the EDM steps, kept for what reads every
    /// class's schedule (`num_train_timesteps`, the analytic model).
    pub schedule: ScheduleConfig,
}

impl EdmConfig {
    /// The `steps` sigmas, descending, in f32. `f32_ramp`: EDM-DPM's Karras ramp is f32 torch arithmetic,
    /// EDMEuler's is f64 numpy.
    fn sigmas(&self, steps: usize, f32_ramp: bool) -> Vec<f32> {
        match self.sigma_schedule {
            EdmSchedule::Karras if f32_ramp => {
                let (lo, hi) = (
                    self.sigma_min.powf(1.0 / self.rho),
                    self.sigma_max.powf(1.0 / self.rho),
                );
                let (lo, hi) = (lo as f32, hi as f32);
                torch_linspace_f32(0.0, 1.0, steps)
                    .into_iter()
                    .map(|r| (hi + r * (lo - hi)).powf(self.rho as f32))
                    .collect()
            }
            EdmSchedule::Karras => karras(self.sigma_min, self.sigma_max, steps, self.rho)
                .into_iter()
                .map(|s| s as f32)
                .collect(),
            EdmSchedule::Exponential => {
                let (lo, hi) = (self.sigma_min.ln() as f32, self.sigma_max.ln() as f32);
                torch_linspace_f32(lo, hi, steps)
                    .into_iter()
                    .rev()
                    .map(f32::exp)
                    .collect()
            }
        }
    }

    /// c_noise = 0.25·log σ (f32) for each sigma: the model's timesteps.
    fn timesteps(sigmas: &[f32]) -> Vec<f64> {
        sigmas.iter().map(|&s| (0.25 * s.ln()) as f64).collect()
    }

    /// sqrt(σ² + σ_data²) in f32: the model input is x divided by it (x·c_in).
    fn divisor(&self, s: f32) -> f32 {
        let sd = self.sigma_data as f32;
        (s * s + sd * sd).sqrt()
    }

    /// c_skip and c_out at sigma `s`.
    fn scalings(&self, s: f64) -> (f64, f64) {
        let sd = self.sigma_data;
        let sign = if self.prediction_type == PredictionType::VPrediction {
            -1.0
        } else {
            1.0
        };
        (
            sd * sd / (s * s + sd * sd),
            sign * s * sd / (s * s + sd * sd).sqrt(),
        )
    }

    /// diffusers' `init_noise_sigma`: sqrt(σ_max² + 1) (not σ_max).
    fn init_noise_sigma(&self) -> f32 {
        (self.sigma_max * self.sigma_max + 1.0).sqrt() as f32
    }

    fn check(steps: usize) -> Result<(), ConfigError> {
        if steps == 0 {
            return Err(ConfigError::Steps {
                steps,
                reason: "at least one step is needed".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EdmEulerConfig {
    pub edm: EdmConfig,
    pub churn: Churn,
}

/// EDMEulerScheduler: Euler steps on the preconditioned denoiser, with diffusers' churn.
pub struct EdmEuler {
    config: EdmEulerConfig,
    sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    index: usize,
    noise: Vec<f32>,
}

impl EdmEuler {
    pub fn new(config: EdmEulerConfig) -> Self {
        Self {
            config,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            index: 0,
            noise: Vec::new(),
        }
    }

    fn gamma(&self, s: f64) -> f64 {
        self.config.churn.gamma(s, self.sigmas.len() - 1)
    }
}

impl Scheduler for EdmEuler {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        EdmConfig::check(steps)?;
        let edm = &self.config.edm;
        let mut sigmas = edm.sigmas(steps, false);
        self.timesteps = EdmConfig::timesteps(&sigmas);
        let last = sigmas[steps - 1];
        sigmas.push(if edm.final_sigma_min { last } else { 0.0 });
        self.sigmas = sigmas;
        self.index = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn model_input_divisor(&self) -> f32 {
        self.sigmas
            .get(self.index)
            .map_or(1.0, |&s| self.config.edm.divisor(s))
    }

    fn init_noise_sigma(&self) -> f32 {
        self.config.edm.init_noise_sigma()
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        call_sigma(&self.sigmas, self.timesteps.len(), call).map(Noising::sigma)
    }

    fn start_at(&mut self, call: usize) -> Option<Noising> {
        let noising = self.noising_at(call)?;
        self.index = call;
        Some(noising)
    }

    fn is_stochastic(&self) -> bool {
        self.config.churn.s_churn > 0.0
    }

    fn draws_noise_at(&self, i: usize) -> bool {
        self.sigmas
            .get(i)
            .is_some_and(|&s| self.gamma(s as f64) > 0.0)
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
        let s = self.sigmas[i];
        let gamma = self.gamma(s as f64);
        let sigma_hat = self
            .config
            .churn
            .add_noise(i, s, gamma, sample, &mut self.noise, noise);
        // The output preconditioning uses sigma_hat (the model itself saw the un-churned sample).
        let (c_skip, c_out) = self.config.edm.scalings(sigma_hat as f64);
        let dt = (self.sigmas[i + 1] - sigma_hat) as f64;
        for ((x, d), &out) in sample.iter_mut().zip(x0.iter_mut()).zip(model_output) {
            let xv = *x as f64;
            let den = c_skip * xv + c_out * out as f64;
            *d = den as f32;
            *x = (xv + (xv - den) / sigma_hat as f64 * dt) as f32;
        }
        self.index += 1;
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EdmDpmConfig {
    pub edm: EdmConfig,
    pub thresholding: X0Clip,
    pub solver_order: usize,
    /// `algorithm_type = "sde-dpmsolver++"`.
    pub sde: bool,
    /// `solver_type = "heun"` (else midpoint).
    pub heun: bool,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
}

/// EDMDPMSolverMultistepScheduler: DPM-Solver++ multistep (orders 1–3, or the SDE variant) with
/// alpha = 1 and sigma the EDM sigma, so lambda = −log σ.
pub struct EdmDpm {
    config: EdmDpmConfig,
    sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    index: usize,
    /// The step the run started at (0, or later for img2img).
    begin: usize,
    /// The last `solver_order` denoised predictions, oldest first.
    history: Vec<Vec<f32>>,
    noise: Vec<f32>,
}

/// `a·u + b·v` for weight triples.
fn combine(a: f64, u: [f64; 3], b: f64, v: [f64; 3]) -> [f64; 3] {
    [
        a * u[0] + b * v[0],
        a * u[1] + b * v[1],
        a * u[2] + b * v[2],
    ]
}

impl EdmDpm {
    pub fn new(config: EdmDpmConfig) -> Self {
        Self {
            history: vec![Vec::new(); config.solver_order],
            config,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            index: 0,
            begin: 0,
            noise: Vec::new(),
        }
    }

    /// The order diffusers uses at step `i` of `n` (warm-up, lower_order_final, euler_at_final).
    fn order_for(&self, i: usize, n: usize) -> usize {
        let c = &self.config;
        let final_zero = !c.edm.final_sigma_min;
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

    /// The weights of `x_next = cx·x + w[0]·m0 + w[1]·m1 + w[2]·m2 + cz·z` at step `i` (m0 newest).
    fn weights(&self, i: usize, order: usize) -> (f64, [f64; 3], f64) {
        let lam = |k: usize| -(self.sigmas[k] as f64).ln();
        let (s_t, s_0) = (self.sigmas[i + 1] as f64, self.sigmas[i] as f64);
        let h = lam(i + 1) - lam(i);
        let eh = (-h).exp();
        let (cx, p, q, cz) = if self.config.sde {
            let e2 = 1.0 - (-2.0 * h).exp();
            let q = if self.config.heun {
                e2 / (-2.0 * h) + 1.0
            } else {
                0.5 * e2
            };
            (s_t / s_0 * eh, e2, q, s_t * e2.sqrt())
        } else {
            let q = if self.config.heun || order == 3 {
                (eh - 1.0) / h + 1.0
            } else {
                -0.5 * (eh - 1.0)
            };
            (s_t / s_0, -(eh - 1.0), q, 0.0)
        };
        let w = match order {
            1 => [p, 0.0, 0.0],
            2 => {
                let r0 = (lam(i) - lam(i - 1)) / h;
                [p + q / r0, -q / r0, 0.0]
            }
            _ => {
                let (r0, r1) = ((lam(i) - lam(i - 1)) / h, (lam(i - 1) - lam(i - 2)) / h);
                let d1_0 = [1.0 / r0, -1.0 / r0, 0.0];
                let d1_1 = [0.0, 1.0 / r1, -1.0 / r1];
                let g = 1.0 / (r0 + r1);
                let d1 = combine(1.0 + r0 * g, d1_0, -r0 * g, d1_1);
                let d2 = combine(g, d1_0, -g, d1_1);
                let r = -((eh - 1.0 + h) / (h * h) - 0.5);
                combine(1.0, combine(1.0, [p, 0.0, 0.0], q, d1), r, d2)
            }
        };
        (cx, w, cz)
    }
}

impl Scheduler for EdmDpm {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        EdmConfig::check(steps)?;
        let edm = &self.config.edm;
        let mut sigmas = edm.sigmas(steps, true);
        self.timesteps = EdmConfig::timesteps(&sigmas);
        sigmas.push(if edm.final_sigma_min {
            edm.sigma_min as f32
        } else {
            0.0
        });
        self.sigmas = sigmas;
        self.index = 0;
        self.begin = 0;
        for h in &mut self.history {
            h.clear();
        }
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn model_input_divisor(&self) -> f32 {
        self.sigmas
            .get(self.index)
            .map_or(1.0, |&s| self.config.edm.divisor(s))
    }

    fn init_noise_sigma(&self) -> f32 {
        self.config.edm.init_noise_sigma()
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn order_at(&self, i: usize) -> usize {
        self.order_for(i, self.timesteps.len())
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        call_sigma(&self.sigmas, self.timesteps.len(), call).map(Noising::sigma)
    }

    fn start_at(&mut self, call: usize) -> Option<Noising> {
        let noising = self.noising_at(call)?;
        self.index = call;
        self.begin = call;
        Some(noising)
    }

    fn is_stochastic(&self) -> bool {
        self.config.sde
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
        let (c_skip, c_out) = self.config.edm.scalings(self.sigmas[i] as f64);
        for ((d, &out), &x) in x0.iter_mut().zip(model_output).zip(sample.iter()) {
            *d = (c_skip * x as f64 + c_out * out as f64) as f32;
        }
        self.config.thresholding.apply(x0, batch);
        self.history.rotate_left(1);
        if let Some(newest) = self.history.last_mut() {
            newest.clear();
            newest.extend_from_slice(x0);
        }
        if self.config.sde {
            self.noise.resize(sample.len(), 0.0);
            noise.fill(i, &mut self.noise);
        }
        let order = self.order_for(i, self.timesteps.len());
        if self.sigmas[i + 1] == self.sigmas[i] {
            // A step of size zero (final_sigmas_type "sigma_min" lands on the last sigma) leaves the
            // sample as it is, the limit of every update; the weights would be 0/0 there.
            self.index += 1;
            return Ok(());
        }
        let (cx, w, cz) = self.weights(i, order);
        let k = self.history.len();
        let m = |j: usize| &self.history[k - 1 - j.min(order - 1)];
        let (m0, m1, m2) = (m(0), m(1), m(2));
        for (j, x) in sample.iter_mut().enumerate() {
            let mut v = cx * *x as f64 + w[0] * m0[j] as f64;
            if order >= 2 {
                v += w[1] * m1[j] as f64;
            }
            if order >= 3 {
                v += w[2] * m2[j] as f64;
            }
            if self.config.sde {
                v += cz * self.noise[j] as f64;
            }
            *x = v as f32;
        }
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for EdmEulerConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(EdmEuler::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.edm.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.edm.prediction_type
    }
}

impl FamilyConfig for EdmDpmConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(EdmDpm::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.edm.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.edm.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn edm_keys() -> Value {
    json!({
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "sigma_data": 0.5,
        "sigma_schedule": "karras",
        "rho": 7.0,
        "final_sigmas_type": "zero",
    })
}

pub(super) fn edm_euler_defaults() -> Value {
    merged(
        edm_keys(),
        json!({"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": "inf", "s_noise": 1.0}),
    )
}

pub(super) fn edm_dpm_defaults() -> Value {
    merged(
        edm_keys(),
        json!({
            "solver_order": 2,
            "thresholding": false,
            "dynamic_thresholding_ratio": 0.995,
            "sample_max_value": 1.0,
            "algorithm_type": "dpmsolver++",
            "solver_type": "midpoint",
            "lower_order_final": true,
            "euler_at_final": false,
        }),
    )
}

/// The settings both EDM classes read; `sample` prediction is refused as diffusers does.
pub(super) fn edm_config(
    r: &mut Reader,
    c: &Common,
    class: &str,
) -> Result<EdmConfig, ConfigError> {
    if c.prediction_type == PredictionType::Sample {
        return Err(unsupported_prediction(class, c.prediction_type));
    }
    let sigma_min = r.positive("sigma_min")?;
    let sigma_max = r.positive("sigma_max")?;
    if sigma_max <= sigma_min {
        return Err(r.invalid("sigma_max", "a number above sigma_min"));
    }
    Ok(EdmConfig {
        sigma_min,
        sigma_max,
        sigma_data: r.positive("sigma_data")?,
        rho: r.positive("rho")?,
        sigma_schedule: r.choice("sigma_schedule", &["karras", "exponential"], |s| match s {
            "karras" => Some(EdmSchedule::Karras),
            "exponential" => Some(EdmSchedule::Exponential),
            _ => None,
        })?,
        prediction_type: c.prediction_type,
        schedule: c.schedule.clone(),
        final_sigma_min: r.pick::<FinalSigma>("final_sigmas_type")? == FinalSigma::SigmaMin,
    })
}

pub(super) fn parse_edm_euler(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let edm = edm_config(r, &c, "EDMEulerScheduler")?;
    let churn = Churn {
        s_churn: r.non_negative("s_churn")?,
        s_tmin: r.non_negative("s_tmin")?,
        s_tmax: number_or_inf(r, "s_tmax")?,
        s_noise: r.non_negative("s_noise")?,
    };
    Ok(Arc::new(EdmEulerConfig { edm, churn }))
}

pub(super) fn parse_edm_dpm(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let edm = edm_config(r, &c, "EDMDPMSolverMultistepScheduler")?;
    let solver_order = read_solver_order(r)?;
    let sde = r.choice(
        "algorithm_type",
        &["dpmsolver++", "sde-dpmsolver++"],
        |s| match s {
            "dpmsolver++" => Some(false),
            "sde-dpmsolver++" => Some(true),
            _ => None,
        },
    )?;
    if sde && solver_order == 3 {
        return Err(ConfigError::Unsupported {
            key: "solver_order".into(),
            got: "3".into(),
            reason: "diffusers' EDM third-order update exists for \"dpmsolver++\" only".into(),
        });
    }
    let heun = r.pick::<SolverType>("solver_type")? == SolverType::Heun;
    Ok(Arc::new(EdmDpmConfig {
        edm,
        thresholding: read_thresholding(r)?,
        solver_order,
        sde,
        heun,
        lower_order_final: r.bool("lower_order_final")?,
        euler_at_final: r.bool("euler_at_final")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplerConfig;
    use serde_json::json;

    fn build(name: &str, settings: serde_json::Value) -> Result<Box<dyn Scheduler>, ConfigError> {
        let settings = settings.as_object().cloned().unwrap_or_default();
        SamplerConfig::resolve(name, None, &settings).map(|r| r.config.build())
    }

    #[test]
    fn the_model_sees_c_noise_and_c_in() {
        for name in ["edm-euler", "edm-dpm++2m"] {
            let mut s = build(name, json!({})).unwrap();
            s.set_steps(10).unwrap();
            assert_eq!(s.timesteps().len(), 10, "{name}: one call per step");
            let first = s.timesteps()[0];
            assert!((first - 0.25 * 80f64.ln()).abs() < 1e-5, "{name}: {first}");
            assert!((s.model_input_divisor() - (80f32 * 80.0 + 0.25).sqrt()).abs() < 1e-3);
            assert!((s.init_noise_sigma() - 80.00625).abs() < 1e-4);
            assert_eq!(s.sigmas().unwrap().last(), Some(&0.0));
        }
    }

    #[test]
    fn bad_settings_name_their_key() {
        let e = build("edm-euler", json!({"sigma_schedule": "beta"}))
            .err()
            .unwrap();
        assert!(e.to_string().contains("`sigma_schedule`"), "{e}");
        let e = build("edm-euler", json!({"prediction_type": "sample"}))
            .err()
            .unwrap();
        assert!(e.to_string().contains("`prediction_type`"), "{e}");
        let e = build(
            "edm-dpm++2m",
            json!({"solver_order": 3, "algorithm_type": "sde-dpmsolver++"}),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("`solver_order`"), "{e}");
        let e = build("edm-dpm++2m", json!({"sigma_max": 0.001}))
            .err()
            .unwrap();
        assert!(e.to_string().contains("`sigma_max`"), "{e}");
    }
}
