//! The samplers of k-diffusion, AUTOMATIC1111 and ComfyUI that step through a list of sigmas and have no
//! diffusers class: DPM++ 2S a, DPM++ 2M/3M SDE, DPM fast and adaptive, Restart, ipndm, res_multistep, er_sde,
//! SEEDS, SA-Solver, gradient estimation, Heun++ and the CFG++ family.
//!
//! Each is written as its reference loop reads: an `async fn` over the sigmas that awaits the model's
//! denoised prediction ([`Model::denoise`]) and fresh noise ([`Model::noise`]). [`Run`] polls that future by
//! hand and stops at each request, so the same code is driven one model call at a time by the lab's lockstep
//! batches and by the tests' toy models. No threads, no executor: a request is the only reason it pauses.
//!
//! Pure math in f64: no I/O, no models.

mod cfg_pp;
mod common;
mod dpm_solver;
mod dpmpp_2s_ancestral;
mod dpmpp_sde;
mod er_sde;
mod gradient_estimation;
mod heunpp2;
mod ipndm;
mod res_multistep;
mod restart;
mod sa_solver;
mod sa_solver_coeffs;
mod seeds;
pub mod vector;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use serde_json::{Map, Value};

/// The model's prediction of the clean sample at one call: the (guided) denoised sample and, for the
/// samplers that take it (the CFG++ family), the unconditional one.
#[derive(Debug, Clone, Default)]
pub struct Denoised {
    pub guided: Vec<f64>,
    pub uncond: Option<Vec<f64>>,
}

/// One draw of standard normal noise the sampler asks for, from `sigma` to `sigma_next` (the arguments of
/// k-diffusion's `noise_sampler`). `brownian`: an increment of the sample's Brownian path (the SDE samplers,
/// as the UIs' Brownian-tree noise sampler), otherwise independent white noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub sigma: f64,
    pub sigma_next: f64,
    pub brownian: bool,
}

/// What a sampler waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The denoised prediction at sample `x`, noise level `sigma`.
    Call { x: Vec<f64>, sigma: f64 },
    /// Standard normal noise shaped like the sample.
    Noise(Draw),
}

enum Reply {
    Denoised(Denoised),
    Noise(Vec<f64>),
}

#[derive(Default)]
struct Exchange {
    request: Option<Request>,
    reply: Option<Reply>,
}

/// The sampler's handle on the model and the noise: each method hands a request to [`Run`] and resumes
/// with its answer.
#[derive(Clone, Default)]
pub struct Model {
    exchange: Arc<Mutex<Exchange>>,
}

impl Model {
    /// The model's prediction of the clean sample at `x`, noise level `sigma`.
    pub async fn denoise(&self, x: &[f64], sigma: f64) -> Denoised {
        let request = Request::Call {
            x: x.to_vec(),
            sigma,
        };
        match (Ask {
            model: self,
            request: Some(request),
        })
        .await
        {
            Reply::Denoised(d) => d,
            Reply::Noise(_) => unreachable!("a model call is answered with a prediction"),
        }
    }

    /// Standard normal noise shaped like the sample, drawn between `sigma` and `sigma_next`.
    pub async fn noise(&self, sigma: f64, sigma_next: f64) -> Vec<f64> {
        self.draw(sigma, sigma_next, false).await
    }

    /// The normalized increment of the sample's Brownian path from `sigma` to `sigma_next`.
    pub async fn brownian(&self, sigma: f64, sigma_next: f64) -> Vec<f64> {
        self.draw(sigma, sigma_next, true).await
    }

    async fn draw(&self, sigma: f64, sigma_next: f64, brownian: bool) -> Vec<f64> {
        let request = Request::Noise(Draw {
            sigma,
            sigma_next,
            brownian,
        });
        match (Ask {
            model: self,
            request: Some(request),
        })
        .await
        {
            Reply::Noise(z) => z,
            Reply::Denoised(_) => unreachable!("a noise draw is answered with noise"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Exchange> {
        self.exchange.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A pending request: the first poll posts it, the next takes the reply.
struct Ask<'a> {
    model: &'a Model,
    request: Option<Request>,
}

impl Future for Ask<'_> {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Reply> {
        let mut exchange = self.model.lock();
        if let Some(reply) = exchange.reply.take() {
            return Poll::Ready(reply);
        }
        drop(exchange);
        if let Some(request) = self.request.take() {
            self.model.lock().request = Some(request);
        }
        Poll::Pending
    }
}

/// A sampler's run: the future of its loop.
pub type Loop = Pin<Box<dyn Future<Output = Vec<f64>> + Send>>;

/// Where a run stands.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Waiting for the model's prediction at `x`, `sigma`.
    Call { x: Vec<f64>, sigma: f64 },
    /// Finished with this sample.
    Done(Vec<f64>),
}

/// A sampler's loop driven one model call at a time.
pub struct Run {
    model: Model,
    future: Option<Loop>,
    finished: Option<Vec<f64>>,
}

impl Run {
    /// Starts `sampler` (its settings' defaults filled in).
    pub fn new(sampler: &KSampler, start: Start) -> Self {
        let model = Model::default();
        let future = (sampler.run)(model.clone(), start);
        Self {
            model,
            future: Some(future),
            finished: None,
        }
    }

    /// Runs the loop to its next model call (or its end), answering its noise draws with `noise`.
    pub fn resume(&mut self, noise: &mut dyn FnMut(Draw) -> Vec<f64>) -> State {
        loop {
            if let Some(x) = &self.finished {
                return State::Done(x.clone());
            }
            let Some(future) = self.future.as_mut() else {
                unreachable!("a run without a loop has finished")
            };
            let mut context = Context::from_waker(Waker::noop());
            if let Poll::Ready(x) = future.as_mut().poll(&mut context) {
                self.future = None;
                self.finished = Some(x);
                continue;
            }
            let request = self.model.lock().request.take();
            match request {
                Some(Request::Call { x, sigma }) => return State::Call { x, sigma },
                Some(Request::Noise(draw)) => {
                    self.model.lock().reply = Some(Reply::Noise(noise(draw)));
                }
                None => unreachable!("a sampler pauses only at a request"),
            }
        }
    }

    /// Answers the model call the run waits on.
    pub fn answer(&mut self, denoised: Denoised) {
        self.model.lock().reply = Some(Reply::Denoised(denoised));
    }
}

/// A sampler's settings, its defaults filled in (numbers, booleans and strings, by the reference's keyword
/// names).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings(pub Map<String, Value>);

impl Settings {
    /// A number setting (a missing or non-numeric one is a bug in the sampler's defaults).
    pub fn num(&self, key: &str) -> f64 {
        self.0.get(key).and_then(Value::as_f64).unwrap_or_else(|| {
            unreachable!("setting {key} is checked against the sampler's defaults")
        })
    }

    pub fn flag(&self, key: &str) -> bool {
        self.0.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    pub fn text(&self, key: &str) -> &str {
        self.0.get(key).and_then(Value::as_str).unwrap_or("")
    }

    /// A whole-number setting.
    pub fn count(&self, key: &str) -> usize {
        self.num(key).max(0.0) as usize
    }
}

/// One sampler: its name (ComfyUI's function name without `sample_`), its settings with their defaults, and its
/// loop.
pub struct KSampler {
    pub name: &'static str,
    /// A JSON object of the settings and their defaults.
    pub defaults: &'static str,
    /// Whether a run with these settings draws noise that changes the result.
    pub stochastic: fn(&Settings) -> bool,
    /// Whether the loop takes the unconditional prediction too (CFG++).
    pub takes_uncond: bool,
    /// Whether the model calls depend on the sample (DPM adaptive): their count is known only at the end.
    pub adaptive: bool,
    pub run: fn(Model, Start) -> Loop,
}

/// What a run starts from.
#[derive(Clone)]
pub struct Start {
    /// The initial sample (noise times the first sigma, for a full denoise).
    pub x: Vec<f64>,
    /// The noise levels to step through, the last usually 0.
    pub sigmas: Vec<f64>,
    pub settings: Settings,
    /// The model's sigma at a fraction of its training schedule (ComfyUI's `percent_to_sigma`: 0 is the
    /// noisiest end, 1 the clean one), for settings given as fractions.
    pub percent_to_sigma: Arc<dyn Fn(f64) -> f64 + Send + Sync>,
}

/// Every sampler, by name.
pub const SAMPLERS: &[KSampler] = &[
    dpmpp_2s_ancestral::SAMPLER,
    dpmpp_sde::DPMPP_2M_SDE,
    dpmpp_sde::DPMPP_3M_SDE,
    cfg_pp::EULER_CFG_PP,
    cfg_pp::EULER_ANCESTRAL_CFG_PP,
    cfg_pp::DPMPP_2M_CFG_PP,
    cfg_pp::DPMPP_2S_ANCESTRAL_CFG_PP,
    ipndm::IPNDM,
    ipndm::IPNDM_V,
    res_multistep::RES_MULTISTEP,
    res_multistep::RES_MULTISTEP_ANCESTRAL,
    res_multistep::RES_MULTISTEP_CFG_PP,
    res_multistep::RES_MULTISTEP_ANCESTRAL_CFG_PP,
    gradient_estimation::GRADIENT_ESTIMATION,
    gradient_estimation::GRADIENT_ESTIMATION_CFG_PP,
    heunpp2::SAMPLER,
    dpm_solver::DPM_FAST,
    dpm_solver::DPM_ADAPTIVE,
    restart::SAMPLER,
    er_sde::SAMPLER,
    seeds::SEEDS_2,
    seeds::SEEDS_3,
    sa_solver::SA_SOLVER,
    sa_solver::SA_SOLVER_PECE,
];

/// The sampler called `name`.
pub fn sampler(name: &str) -> Option<&'static KSampler> {
    SAMPLERS.iter().find(|s| s.name == name)
}

/// Why a setting was refused: the key and what is wrong with its value.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingError {
    pub key: String,
    pub reason: String,
}

/// `sampler`'s settings: its defaults, overridden by `given` (keys it does not have are refused, as are values
/// of another kind than the default's).
pub fn settings(sampler: &KSampler, given: &Map<String, Value>) -> Result<Settings, SettingError> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(sampler.defaults) else {
        unreachable!("a sampler's defaults are a JSON object")
    };
    for (key, value) in given {
        let refuse = |reason: String| SettingError {
            key: key.clone(),
            reason,
        };
        let Some(default) = map.get(key) else {
            let known: Vec<&str> = map.keys().map(String::as_str).collect();
            return Err(refuse(match known.is_empty() {
                true => format!("{} takes no settings", sampler.name),
                false => format!(
                    "{} has no such setting; its settings are {}",
                    sampler.name,
                    known.join(", ")
                ),
            }));
        };
        let same_kind = matches!(
            (default, value),
            (Value::Number(_), Value::Number(_))
                | (Value::Bool(_), Value::Bool(_))
                | (Value::String(_), Value::String(_))
                | (Value::Null, _)
                | (_, Value::Null)
        );
        if !same_kind {
            return Err(refuse(format!(
                "{} takes a value like {default} here",
                sampler.name
            )));
        }
        map.insert(key.clone(), value.clone());
    }
    Ok(Settings(map))
}

/// The sigma of every model call of a run over `sigmas`, found by running it on one value with a model that
/// predicts zeros and noise of zeros (the calls of every sampler but an adaptive one depend on the sigmas and
/// settings only).
pub fn call_sigmas(sampler: &KSampler, start: &Start) -> Vec<f64> {
    let start = Start {
        x: vec![0.0],
        ..start.clone()
    };
    let mut run = Run::new(sampler, start);
    let mut calls = Vec::new();
    while let State::Call { sigma, .. } = run.resume(&mut |_| vec![0.0]) {
        calls.push(sigma);
        let uncond = sampler.takes_uncond.then(|| vec![0.0]);
        run.answer(Denoised {
            guided: vec![0.0],
            uncond,
        });
    }
    calls
}
