//! LMSDiscreteScheduler (A1111 "LMS", ComfyUI `lms`): linear multistep in sigma, with the last `order`
//! derivatives weighted by the integrals of their Lagrange basis polynomials over the step.

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader, merged, read_ramp, sigma_keys};
use super::kdiff::{KConfig, denoised, f32_round, init_noise_sigma, input_divisor, k_config};
use super::schedule::ScheduleConfig;
use super::start::call_sigma;
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

#[derive(Debug, Clone, PartialEq)]
pub struct LmsConfig {
    pub k: KConfig,
    /// diffusers' step keyword `order` (1 to 4).
    pub order: usize,
}

pub struct Lms {
    config: LmsConfig,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    index: usize,
    /// The last `order` derivatives, newest first.
    derivatives: Vec<Vec<f64>>,
}

impl Lms {
    pub fn new(config: LmsConfig) -> Self {
        Self {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            init_noise_sigma: 1.0,
            index: 0,
            derivatives: Vec::new(),
        }
    }
}

/// The integral over `[a, b]` of the Lagrange basis polynomial of `nodes[k]`, exactly (the
/// polynomials have degree < 4; diffusers integrates them numerically to ~1e-7).
pub fn lagrange_integral(nodes: &[f64], k: usize, a: f64, b: f64) -> f64 {
    // Coefficients of the basis polynomial, lowest degree first.
    let mut poly = vec![1.0];
    for (j, &nj) in nodes.iter().enumerate() {
        if j == k {
            continue;
        }
        let scale = nodes[k] - nj;
        let mut next = vec![0.0; poly.len() + 1];
        for (p, &c) in poly.iter().enumerate() {
            next[p + 1] += c / scale;
            next[p] -= c * nj / scale;
        }
        poly = next;
    }
    let antiderivative = |x: f64| {
        poly.iter()
            .enumerate()
            .map(|(p, &c)| c * x.powi(p as i32 + 1) / (p + 1) as f64)
            .sum::<f64>()
    };
    antiderivative(b) - antiderivative(a)
}

impl Scheduler for Lms {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let s = self.config.k.schedule(steps, false, false)?;
        let mut sigmas: Vec<f32> = s.sigmas.iter().map(|&x| x as f32).collect();
        sigmas.push(0.0);
        self.timesteps = s.timesteps.into_iter().map(f32_round).collect();
        self.init_noise_sigma = init_noise_sigma(&sigmas, self.config.k.timestep_spacing);
        self.sigmas = sigmas;
        self.index = 0;
        self.derivatives.clear();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    fn model_input_divisor(&self) -> f32 {
        self.sigmas
            .get(self.index)
            .map_or(1.0, |&s| input_divisor(s))
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn order_at(&self, i: usize) -> usize {
        (i + 1).min(self.config.order)
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
        false
    }

    fn step(
        &mut self,
        model_output: &[f32],
        sample: &mut [f32],
        x0: &mut [f32],
        batch: usize,
        _noise: &mut dyn NoiseSource,
    ) -> Result<(), StepError> {
        let i = self.index;
        check_step(i, self.timesteps.len(), model_output, sample, x0, batch)?;
        let s = self.sigmas[i] as f64;
        let prediction = self.config.k.prediction_type;
        let mut d = Vec::with_capacity(sample.len());
        for ((den, &out), &x) in x0.iter_mut().zip(model_output).zip(sample.iter()) {
            let v = denoised(prediction, out as f64, x as f64, s);
            *den = v as f32;
            d.push((x as f64 - v) / s);
        }
        self.derivatives.insert(0, d);
        self.derivatives.truncate(self.config.order);
        let order = self.order_at(i);
        let nodes: Vec<f64> = (0..order).map(|j| self.sigmas[i - j] as f64).collect();
        let next = self.sigmas[i + 1] as f64;
        let coefficients: Vec<f64> = (0..order)
            .map(|k| lagrange_integral(&nodes, k, s, next))
            .collect();
        for (j, x) in sample.iter_mut().enumerate() {
            let update: f64 = coefficients
                .iter()
                .zip(&self.derivatives)
                .map(|(c, d)| c * d[j])
                .sum();
            *x = (*x as f64 + update) as f32;
        }
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for LmsConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(Lms::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.k.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.k.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn lms_defaults() -> Value {
    merged(sigma_keys(), json!({"order": 4}))
}

pub(super) fn parse_lms(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    let ramp = read_ramp(r)?;
    let order = r.count("order", 1)?;
    if order > 4 {
        return Err(ConfigError::InvalidValue {
            key: "order".into(),
            got: order.to_string(),
            expected: "1, 2, 3 or 4".into(),
        });
    }
    Ok(Arc::new(LmsConfig {
        k: k_config(c, ramp, r)?,
        order,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagrange_weights_integrate_polynomials_exactly() {
        let nodes = [3.0, 2.0, 1.5];
        let total: f64 = (0..3).map(|k| lagrange_integral(&nodes, k, 3.0, 1.0)).sum();
        assert!((total - (1.0 - 3.0)).abs() < 1e-12);
        // x^2 integrated over [3, 1] is -26/3.
        let x2: f64 = (0..3)
            .map(|k| lagrange_integral(&nodes, k, 3.0, 1.0) * nodes[k] * nodes[k])
            .sum();
        assert!((x2 + 26.0 / 3.0).abs() < 1e-12);
    }
}
