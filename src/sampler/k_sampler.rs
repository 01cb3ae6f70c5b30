//! The samplers of k-diffusion, A1111 and ComfyUI that have no diffusers class ([`super::ksampling`]) as
//! one family, `KDiffusionSampler`, whose `sampler` setting names the loop: the schedule is the k-diffusion
//! family's (spacing, ramps, `sigma_schedule`, `sigmas`) with a final 0, the model's output becomes the
//! denoised prediction the loop awaits, and each model call is one `step`. The loop runs in f64; the sample
//! the lab sees is the next call's input in f32.
//!
//! On a flow-matching model (`use_flow_sigmas`, as ComfyUI's CONST model sampling) the sigmas are the flow
//! sigmas with the model's shift, the model sees the sample unscaled at timestep σ·N, and its velocity v
//! gives the denoised x − σ·v: the ODE the loops solve, dx/dσ = (x − x0)/σ, is then the flow's own. Only
//! the loops ComfyUI runs unchanged on such models have this form; the ancestral and SDE loops, whose noise
//! steps ComfyUI rewrites for flow models, do not.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::family::{Common, FamilyConfig, Parsed, Reader, merged, read_ramp, sigma_keys};
use super::flow_euler::flow_timestep;
use super::flow_shift::{FlowGrid, FlowSigmas, Precision, constant_shift, read_flow_mode};
use super::kdiff::{KConfig, denoised, init_noise_sigma, k_config, unsupported_prediction};
use super::ksampling::{self, Denoised, Draw, KSampler, Run, Settings, Start, State};
use super::schedule::ScheduleConfig;
use super::sigma_schedule::ModelSigmas;
use super::sigmas::sigma_to_t;
use super::sigmas::web_ui_sigmas;
use super::{ConfigError, NoiseSource, PredictionType, Scheduler, StepError, check_step};

pub const CLASS: &str = "KDiffusionSampler";

/// The loops that run on a flow model as they are: ComfyUI gives these no flow branch of their own.
pub const FLOW_LOOPS: &[&str] = &[
    "ipndm",
    "ipndm_v",
    "res_multistep",
    "gradient_estimation",
    "heunpp2",
    "dpm_fast",
    "dpm_adaptive",
];

#[derive(Debug, Clone, PartialEq)]
pub struct KSamplerConfig {
    pub k: KConfig,
    /// `use_flow_sigmas`: a flow-matching model's sigmas and shift.
    pub flow: Option<FlowSigmas>,
    pub sampler: &'static str,
    /// The loop's settings, its defaults filled in.
    pub settings: Settings,
}

impl KSamplerConfig {
    fn loop_def(&self) -> &'static KSampler {
        match ksampling::sampler(self.sampler) {
            Some(s) => s,
            None => unreachable!("the sampler name is checked when the settings are read"),
        }
    }
}

/// One run of a loop, driven by the lab one model call at a time.
pub struct KLoop {
    config: KSamplerConfig,
    /// The schedule's sigmas and the final 0.
    sigmas: Vec<f32>,
    /// One per model call (the calls known so far, for an adaptive loop).
    timesteps: Vec<f64>,
    /// The sigma of each model call, then the last sigma of the schedule.
    call_sigmas: Vec<f32>,
    log_sigmas: Vec<f64>,
    train_sigmas: Vec<f32>,
    init_noise_sigma: f32,
    run: Option<Run>,
    /// The call the loop waits on: its input in f64 and its sigma.
    pending: Option<(Vec<f64>, f64)>,
    uncond: Option<Vec<f32>>,
    calls: usize,
    draws: usize,
}

impl KLoop {
    pub fn new(config: KSamplerConfig) -> Self {
        Self {
            config,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            call_sigmas: Vec::new(),
            log_sigmas: Vec::new(),
            train_sigmas: Vec::new(),
            init_noise_sigma: 1.0,
            run: None,
            pending: None,
            uncond: None,
            calls: 0,
            draws: 0,
        }
    }

    fn start(&self, x: Vec<f64>) -> Start {
        let model = ModelSigmas::from_sigmas(&self.train_sigmas);
        Start {
            x,
            sigmas: self.sigmas.iter().map(|&s| f64::from(s)).collect(),
            settings: self.config.settings.clone(),
            percent_to_sigma: Arc::new(move |p| model.percent_to_sigma(p)),
        }
    }

    fn timestep(&self, sigma: f64) -> f64 {
        match self.config.flow {
            Some(_) => flow_timestep(sigma as f32, self.config.k.schedule.num_train_timesteps),
            None => sigma_to_t(sigma, &self.log_sigmas),
        }
    }

    /// A flow model's sigmas for `steps` steps (its own grid, or a web UI's schedule over its training
    /// sigmas), and those training sigmas, ascending.
    fn flow_schedule(
        &self,
        flow: &FlowSigmas,
        steps: usize,
    ) -> Result<(Vec<f64>, Vec<f32>), ConfigError> {
        let n = self.config.k.schedule.num_train_timesteps;
        // ComfyUI's flow model sampling: σ(k/N) shifted, k = 1..N.
        let shift = flow
            .shift
            .dynamic
            .map_or(flow.shift.shift, |(_, mu)| mu.exp());
        let train: Vec<f32> = (1..=n)
            .map(|k| constant_shift(shift, k as f64 / n as f64, Precision::F64) as f32)
            .collect();
        let sigmas = match (&self.config.k.sigmas, self.config.k.sigma_schedule) {
            (Some(list), _) => list.clone(),
            (None, Some(schedule)) => web_ui_sigmas(schedule, steps, &train)?,
            (None, None) => flow.sigmas(steps, n),
        };
        Ok((sigmas, train))
    }

    /// Runs the loop to its next call, drawing its noise from `noise`; writes that call's input (or the
    /// finished sample) into `sample`.
    fn resume(&mut self, sample: &mut [f32], noise: &mut dyn NoiseSource) {
        let Some(run) = self.run.as_mut() else { return };
        let draws = &mut self.draws;
        let mut draw = |d: Draw| {
            let mut buf = vec![0.0f32; sample.len()];
            if d.brownian {
                noise.brownian(*draws, d.sigma, d.sigma_next, &mut buf);
            } else {
                noise.fill(*draws, &mut buf);
            }
            *draws += 1;
            buf.into_iter().map(f64::from).collect()
        };
        match run.resume(&mut draw) {
            State::Call { x, sigma } => {
                write(sample, &x);
                self.record_call(sigma);
                self.pending = Some((x, sigma));
            }
            State::Done(x) => {
                write(sample, &x);
                let done = self.call_sigmas[..self.calls.min(self.call_sigmas.len())].to_vec();
                self.set_calls(&done);
                self.pending = None;
            }
        }
    }

    /// The model calls, by sigma: their timesteps, and the call sigmas with the schedule's end.
    fn set_calls(&mut self, sigmas: &[f32]) {
        self.timesteps = sigmas
            .iter()
            .map(|&s| self.timestep(f64::from(s)))
            .collect();
        self.call_sigmas = sigmas.to_vec();
        self.call_sigmas
            .push(self.sigmas.last().copied().unwrap_or(0.0));
    }

    /// Notes the sigma of the coming call (known in advance, except for an adaptive loop).
    fn record_call(&mut self, sigma: f64) {
        let mut calls = self.call_sigmas[..self.call_sigmas.len().saturating_sub(1)].to_vec();
        calls.truncate(self.calls);
        calls.push(sigma as f32);
        if self.call_sigmas.len() > self.calls + 2 {
            // The rest as planned.
            calls.extend_from_slice(&self.call_sigmas[self.calls + 1..self.call_sigmas.len() - 1]);
        }
        self.set_calls(&calls);
    }

    /// The denoised prediction from a model output at the pending call.
    fn denoised(&self, output: &[f32], x: &[f64], sigma: f64) -> Vec<f64> {
        let prediction = self.config.k.prediction_type;
        output
            .iter()
            .zip(x)
            .map(|(&o, &x)| denoised(prediction, f64::from(o), x, sigma))
            .collect()
    }
}

fn write(sample: &mut [f32], x: &[f64]) {
    for (s, &v) in sample.iter_mut().zip(x) {
        *s = v as f32;
    }
}

impl Scheduler for KLoop {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        if let Some(flow) = self.config.flow {
            let (sigmas, train) = self.flow_schedule(&flow, steps)?;
            let mut sigmas: Vec<f32> = sigmas.iter().map(|&x| x as f32).collect();
            sigmas.push(0.0);
            self.init_noise_sigma = 1.0;
            self.sigmas = sigmas;
            self.log_sigmas = Vec::new();
            self.train_sigmas = train;
        } else {
            let s = self.config.k.schedule(steps, false, false)?;
            let mut sigmas: Vec<f32> = s.sigmas.iter().map(|&x| x as f32).collect();
            sigmas.push(0.0);
            self.init_noise_sigma = init_noise_sigma(&sigmas, self.config.k.timestep_spacing);
            self.sigmas = sigmas;
            self.log_sigmas = s.log_sigmas;
            self.train_sigmas = s.train_sigmas;
        }
        let sampler = self.config.loop_def();
        let mut calls = ksampling::call_sigmas(sampler, &self.start(vec![0.0]));
        if calls.is_empty() {
            return Err(ConfigError::Steps {
                steps,
                reason: format!(
                    "{} makes no model call over these sigmas (DPM fast and adaptive need two noise levels \
                     above 0); take more steps",
                    sampler.name
                ),
            });
        }
        if sampler.adaptive {
            // Known as the run goes: the first call is at the first sigma.
            calls.truncate(1);
        }
        let calls: Vec<f32> = calls.iter().map(|&s| s as f32).collect();
        self.set_calls(&calls);
        self.run = None;
        self.pending = None;
        self.calls = 0;
        self.draws = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    fn model_input_divisor(&self) -> f32 {
        if self.config.flow.is_some() {
            // A flow model takes the sample as it is.
            return 1.0;
        }
        let sigma = self
            .pending
            .as_ref()
            .map_or(self.sigmas.first().copied().unwrap_or(0.0), |p| p.1 as f32);
        (sigma * sigma + 1.0).sqrt()
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.call_sigmas)
    }

    fn is_stochastic(&self) -> bool {
        (self.config.loop_def().stochastic)(&self.config.settings)
    }

    fn prepare(&mut self, sample: &mut [f32], noise: &mut dyn NoiseSource) {
        let x = sample.iter().map(|&v| f64::from(v)).collect();
        self.run = Some(Run::new(self.config.loop_def(), self.start(x)));
        self.resume(sample, noise);
    }

    fn calls_depend_on_sample(&self) -> bool {
        self.config.loop_def().adaptive
    }

    fn takes_uncond(&self) -> bool {
        self.config.loop_def().takes_uncond
    }

    fn set_uncond(&mut self, uncond: &[f32]) {
        self.uncond = Some(uncond.to_vec());
    }

    fn step(
        &mut self,
        model_output: &[f32],
        sample: &mut [f32],
        x0: &mut [f32],
        batch: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<(), StepError> {
        check_step(
            self.calls,
            self.timesteps.len(),
            model_output,
            sample,
            x0,
            batch,
        )?;
        if self.run.is_none() {
            // A driver that skipped `prepare`: exact only when the first call is at the sample as given.
            let given = sample.to_vec();
            self.prepare(sample, noise);
            if sample != &given[..] {
                return Err(StepError::NotReady);
            }
        }
        let Some((x, sigma)) = self.pending.take() else {
            return Err(StepError::NotReady);
        };
        let guided = self.denoised(model_output, &x, sigma);
        let uncond = self.uncond.take().map(|u| self.denoised(&u, &x, sigma));
        write(x0, &guided);
        if let Some(run) = self.run.as_mut() {
            run.answer(Denoised { guided, uncond });
        }
        self.calls += 1;
        self.resume(sample, noise);
        Ok(())
    }
}

impl FamilyConfig for KSamplerConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(KLoop::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.k.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.k.prediction_type
    }
}

// Settings: the family's defaults and parser.

/// The k-diffusion schedule keys, `sampler`, and every loop's settings (null: the loop's own default).
pub(super) fn k_sampler_defaults() -> Value {
    let mut loops = Map::new();
    loops.insert("sampler".into(), Value::Null);
    // A flow model's mode, with the keys diffusers' multistep solvers give it.
    for (key, value) in [
        ("use_flow_sigmas", Value::Bool(false)),
        ("flow_shift", serde_json::json!(1.0)),
        ("use_dynamic_shifting", Value::Bool(false)),
        ("time_shift_type", serde_json::json!("exponential")),
        ("mu", Value::Null),
    ] {
        loops.insert(key.into(), value);
    }
    for key in all_loop_keys() {
        loops.insert(key, Value::Null);
    }
    // The training schedule is diffusers' default, as Euler's: a model's own config replaces it.
    merged(sigma_keys(), Value::Object(loops))
}

pub(super) fn parse_k_sampler(r: &mut Reader, c: Common, warnings: &mut Vec<String>) -> Parsed {
    let flow = read_flow_mode(r, &c, FlowGrid::Multistep, warnings)?;
    if flow.is_none()
        && !matches!(
            c.prediction_type,
            PredictionType::Epsilon | PredictionType::VPrediction
        )
    {
        return Err(unsupported_prediction(CLASS, c.prediction_type));
    }
    let names: Vec<&str> = ksampling::SAMPLERS.iter().map(|s| s.name).collect();
    let sampler = r.choice("sampler", &names, ksampling::sampler)?;
    let mut given = Map::new();
    for sampler_key in all_loop_keys() {
        let value = r.value(&sampler_key);
        if !value.is_null() {
            given.insert(sampler_key, value.clone());
        }
    }
    let settings = ksampling::settings(sampler, &given).map_err(|e| ConfigError::Unsupported {
        got: r.value(&e.key).to_string(),
        key: e.key,
        reason: e.reason,
    })?;
    if flow.is_some() {
        check_flow_form(sampler, &settings)?;
    }
    let ramp = read_ramp(r)?;
    Ok(Arc::new(KSamplerConfig {
        k: k_config(c, ramp, r)?,
        flow,
        sampler: sampler.name,
        settings,
    }))
}

/// Refuses a loop on a flow model unless it runs there as it is, deterministically.
fn check_flow_form(sampler: &KSampler, settings: &Settings) -> Result<(), ConfigError> {
    let reason = if !FLOW_LOOPS.contains(&sampler.name) {
        format!(
            "{} has no flow form: ComfyUI rewrites its noise steps for flow models; on a flow model the web UIs' \
             loops are {}",
            sampler.name,
            FLOW_LOOPS.join(", ")
        )
    } else if (sampler.stochastic)(settings) {
        format!(
            "{} adds noise here, which has no flow form; set its eta (or s_noise) to 0",
            sampler.name
        )
    } else {
        return Ok(());
    };
    Err(ConfigError::Unsupported {
        key: "sampler".into(),
        got: format!("{:?}", sampler.name),
        reason,
    })
}

/// Every setting some loop has, once.
fn all_loop_keys() -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for sampler in ksampling::SAMPLERS {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(sampler.defaults) {
            for key in map.keys() {
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
    }
    keys
}
