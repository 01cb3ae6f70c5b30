//! DEISMultistepScheduler (Zhang & Chen 2023, "logrho" variant): multistep on the noise prediction
//! with the exponential integrator's weights from polynomials in log rho (rho = sigma / alpha), orders
//! 1–3. It never reaches sigma 0: the last step lands on the smallest training sigma.

use std::sync::Arc;

use num_traits::Float;
use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader, read_solver_order, read_thresholding};
use super::flow_shift::{FlowGrid, read_flow_mode};
use super::prediction::X0Clip;
use super::schedule::ScheduleConfig;
use super::sigmas::SigmaSpace;
use super::start::call_sigma;
use super::vp_sigmas::{
    FinalSigma, VpSchedule, data_prediction, one_of, vp_multistep_keys, vp_schedule,
};
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

#[derive(Debug, Clone, PartialEq)]
pub struct DeisConfig {
    pub vp: VpSchedule,
    pub prediction_type: PredictionType,
    pub thresholding: X0Clip,
    pub solver_order: usize,
    pub lower_order_final: bool,
}

pub struct Deis {
    config: DeisConfig,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    index: usize,
    /// The step the run started at (0, or later for img2img).
    begin: usize,
    /// The last `solver_order` noise predictions, oldest first.
    history: Vec<Vec<f64>>,
}

impl Deis {
    pub fn new(config: DeisConfig) -> Self {
        Self {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            index: 0,
            begin: 0,
            history: Vec::new(),
        }
    }

    /// The order of step `i` of `n`, as DPM-Solver multistep chooses it (lowered only below 15 steps).
    fn order_for(&self, i: usize, n: usize) -> usize {
        let c = &self.config;
        let short = c.lower_order_final && n < 15;
        let warm = c.solver_order.min(i - self.begin + 1);
        if i + 1 == n && short {
            1
        } else if i + 2 == n && short {
            warm.min(2)
        } else {
            warm
        }
    }

    fn space(&self) -> SigmaSpace {
        SigmaSpace::of(self.config.vp.flow.is_some())
    }

    /// alpha and sigma at sigma index `k`, in `T`.
    fn alpha_sigma<T: Float>(&self, k: usize) -> (T, T) {
        let s = T::from(self.sigmas[k]).unwrap_or_else(T::nan);
        match self.space() {
            SigmaSpace::Vp => {
                let alpha = T::one() / (s * s + T::one()).sqrt();
                (alpha, s * alpha)
            }
            SigmaSpace::Flow => (T::one() - s, s),
        }
    }

    /// The update at step `i`: `x_next = cx·x + c[0] m0 + c[1] m1 + c[2] m2` (m0 the newest noise prediction).
    /// On flow sigmas the scalars are f32, as diffusers' 0-dim tensors hold them: near σ = 1 the first-order
    /// step is the difference of two terms ~1/alpha large, so their rounding shows in the result. On VP
    /// sigmas f64 keeps the weights' small differences exact at hundreds of steps (diffusers' f32 loses them).
    fn weights(&self, i: usize, order: usize) -> (f64, [f64; 3]) {
        match self.space() {
            SigmaSpace::Flow => self.weights_in::<f32>(i, order),
            SigmaSpace::Vp => self.weights_in::<f64>(i, order),
        }
    }

    fn weights_in<T: Float>(&self, i: usize, order: usize) -> (f64, [f64; 3]) {
        let wide = |v: T| v.to_f64().unwrap_or(f64::NAN);
        let (alpha_t, sigma_t) = self.alpha_sigma::<T>(i + 1);
        let (alpha_s, sigma_s) = self.alpha_sigma::<T>(i);
        if order == 1 {
            let lambda = |a: T, s: T| a.ln() - s.ln();
            let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
            let c = -(sigma_t * (h.exp() - T::one()));
            return (wide(alpha_t / alpha_s), [wide(c), 0.0, 0.0]);
        }
        let rho = |k: usize| {
            let (a, s) = self.alpha_sigma::<T>(k);
            s / a
        };
        let (rt, r0) = (rho(i + 1), rho(i));
        let c = if order == 2 {
            let r1 = rho(i - 1);
            let f = |t: T, b: T, c: T| t * (-c.ln() + t.ln() - T::one()) / (b.ln() - c.ln());
            [
                f(rt, r0, r1) - f(r0, r0, r1),
                f(rt, r1, r0) - f(r0, r1, r0),
                T::zero(),
            ]
        } else {
            let (r1, r2) = (rho(i - 1), rho(i - 2));
            let w = |b: T, c: T, d: T| cubic_weight(rt, b, c, d) - cubic_weight(r0, b, c, d);
            [w(r0, r1, r2), w(r1, r2, r0), w(r2, r0, r1)]
        };
        // x_next = alpha_t (x / alpha_s + Σ c m).
        let a = wide(alpha_t);
        (a / wide(alpha_s), c.map(|c| a * wide(c)))
    }
}

/// The integral weight of the third-order Lagrange basis polynomial in log rho through b (with c, d),
/// evaluated at rho = t.
fn cubic_weight<T: Float>(t: T, b: T, c: T, d: T) -> T {
    let (lt, lb, lc, ld) = (t.ln(), b.ln(), c.ln(), d.ln());
    let (one, two) = (T::one(), T::one() + T::one());
    t * (lc * (ld - lt + one) - ld * lt + ld + lt * lt - two * lt + two) / ((lb - lc) * (lb - ld))
}

impl Scheduler for Deis {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let s = self.config.vp.steps(steps, FinalSigma::SigmaMin)?;
        self.timesteps = s.timesteps.iter().map(|&t| t as f64).collect();
        self.sigmas = s.sigmas;
        self.index = 0;
        self.begin = 0;
        self.history.clear();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
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
        let n = self.timesteps.len();
        check_step(i, n, model_output, sample, x0, batch)?;
        let (alpha, sigma, _) = self.space().alpha_sigma_lambda(self.sigmas[i] as f64);
        let wide = data_prediction(
            self.config.prediction_type,
            self.config.thresholding,
            model_output,
            sample,
            alpha,
            sigma,
            x0,
            batch,
        );
        // DEIS steps on the noise prediction, recovered from the (thresholded) x0.
        let eps: Vec<f64> = wide
            .iter()
            .zip(sample.iter())
            .map(|(&x0, &x)| (x as f64 - alpha * x0) / sigma)
            .collect();
        if self.history.len() == self.config.solver_order {
            self.history.remove(0);
        }
        self.history.push(eps);
        let order = self.order_for(i, n);
        let (cx, c) = self.weights(i, order);
        let k = self.history.len();
        for (j, x) in sample.iter_mut().enumerate() {
            let mut v = cx * *x as f64;
            for (q, &w) in c[..order].iter().enumerate() {
                v += w * self.history[k - 1 - q][j];
            }
            *x = v as f32;
        }
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for DeisConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(Deis::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.vp.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn deis_defaults() -> Value {
    let mut map = vp_multistep_keys();
    map.insert("algorithm_type".into(), json!("deis"));
    map.insert("solver_type".into(), json!("logrho"));
    Value::Object(map)
}

pub(super) fn parse_deis(r: &mut Reader, c: Common, warnings: &mut Vec<String>) -> Parsed {
    let thresholding = read_thresholding(r)?;
    let flow = read_flow_mode(r, &c, FlowGrid::Multistep, warnings)?;
    let solver_order = read_solver_order(r)?;
    one_of(
        r,
        "algorithm_type",
        &["deis"],
        &["dpmsolver", "dpmsolver++"],
        warnings,
    )?;
    one_of(
        r,
        "solver_type",
        &["logrho"],
        &["midpoint", "heun", "bh1", "bh2"],
        warnings,
    )?;
    Ok(Arc::new(DeisConfig {
        vp: vp_schedule(r, &c, false, flow)?,
        prediction_type: c.prediction_type,
        thresholding,
        solver_order,
        lower_order_final: r.bool("lower_order_final")?,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sampler::{SamplerConfig, SeededNoise};

    fn build(order: usize) -> Box<dyn Scheduler> {
        let settings = json!({"solver_order": order});
        SamplerConfig::resolve(
            "deis",
            None,
            settings.as_object().unwrap_or(&Default::default()),
        )
        .map(|r| r.config.build())
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn orders_drop_at_the_end_only_below_fifteen_steps() {
        let mut s = build(3);
        for (steps, tail) in [(10, [3, 2, 1]), (20, [3, 3, 3])] {
            s.set_steps(steps).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.timesteps().len(), steps);
            assert_eq!(s.order_at(0), 1);
            assert_eq!(s.order_at(1), 2);
            let last: Vec<usize> = (steps - 3..steps).map(|i| s.order_at(i)).collect();
            assert_eq!(last, tail);
        }
    }

    #[test]
    fn a_constant_noise_prediction_is_integrated_exactly() {
        // x/α − ε·σ/α is constant along the flow when ε is; the last sigma is the smallest training one.
        for order in 1..=3 {
            let mut s = build(order);
            s.set_steps(12).unwrap_or_else(|e| panic!("{e}"));
            let sig = s.sigmas().map(<[f32]>::to_vec).unwrap_or_default();
            assert!(sig[12] > 0.0);
            let (mut x, mut x0) = (vec![0.7f32, -1.2, 0.1, 2.0], vec![0.0; 4]);
            let mut noise = SeededNoise::new(vec![0]);
            for _ in 0..12 {
                s.step(&[0.3; 4], &mut x, &mut x0, 1, &mut noise)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let invariant = |x: f64, s: f32| {
                let (alpha, sigma, _) = SigmaSpace::Vp.alpha_sigma_lambda(s as f64);
                x / alpha - 0.3 * sigma / alpha
            };
            for (&start, &end) in [0.7f64, -1.2, 0.1, 2.0].iter().zip(&x) {
                let (a, b) = (invariant(start, sig[0]), invariant(end as f64, sig[12]));
                assert!(
                    (a - b).abs() < 1e-4 * a.abs().max(1.0),
                    "order {order}: {a} {b}"
                );
            }
        }
    }
}
