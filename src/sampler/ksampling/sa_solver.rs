//! SA-Solver (ComfyUI `sa_solver`, `sa_solver_pece` and the SamplerSASolver node; no A1111 equivalent): the
//! stochastic Adams predictor-corrector of Xue et al. (arXiv 2309.05019) in data prediction, stochastic (tau =
//! `eta`) while the sigma lies in the node's percent interval. One model call a step (PECE: a second one on the
//! corrected sample, from the second step on); the predictor draws the step's noise while tau > 0 and the
//! next step's corrector adds that same noise again. The last step, down to 0, returns the denoised sample.

use super::common::t_of;
use super::sa_solver_coeffs::{Interval, b_coeffs};
use super::vector::{add, lin};
use super::{KSampler, Model, Settings, Start};

pub const SA_SOLVER: KSampler = KSampler {
    name: "sa_solver",
    defaults: r#"{"eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8, "s_noise": 1.0,
        "predictor_order": 3, "corrector_order": 4, "use_pece": false, "simple_order_2": false}"#,
    stochastic,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| {
        let pece = start.settings.flag("use_pece");
        Box::pin(sample(m, start, pece))
    },
};

pub const SA_SOLVER_PECE: KSampler = KSampler {
    name: "sa_solver_pece",
    defaults: r#"{"eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8, "s_noise": 1.0,
        "predictor_order": 3, "corrector_order": 4, "simple_order_2": false}"#,
    stochastic,
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start, true)),
};

/// Noise only where tau > 0, i.e. with a non-empty percent interval (percent_to_sigma decreases).
fn stochastic(s: &Settings) -> bool {
    s.num("eta") > 0.0
        && s.num("s_noise") > 0.0
        && s.num("sde_start_percent") <= s.num("sde_end_percent")
}

/// The node's tau function: `eta` for `end_sigma <= sigma <= start_sigma`, else 0.
struct Tau {
    eta: f64,
    start_sigma: f64,
    end_sigma: f64,
}

impl Tau {
    fn at(&self, sigma: f64) -> f64 {
        match self.eta > 0.0 && self.start_sigma >= sigma && sigma >= self.end_sigma {
            true => self.eta,
            false => 0.0,
        }
    }
}

/// What a predictor step leaves its corrector: its step size in lambda, its tau and the noise it added.
#[derive(Default)]
struct Carry {
    h: f64,
    tau: f64,
    noise: Option<Vec<f64>>,
}

/// The settings and sigma-derived values the steps read.
struct Solver {
    sigmas: Vec<f64>,
    lambdas: Vec<f64>,
    tau: Tau,
    s_noise: f64,
    predictor_order: usize,
    corrector_order: usize,
    simple_order_2: bool,
    pece: bool,
}

impl Solver {
    fn new(start: &Start, pece: bool) -> Self {
        let s = &start.settings;
        let tau = Tau {
            eta: s.num("eta"),
            start_sigma: (start.percent_to_sigma)(s.num("sde_start_percent")),
            end_sigma: (start.percent_to_sigma)(s.num("sde_end_percent")),
        };
        Self {
            lambdas: start.sigmas.iter().map(|&sigma| t_of(sigma)).collect(),
            sigmas: start.sigmas.clone(),
            tau,
            s_noise: s.num("s_noise"),
            predictor_order: s.count("predictor_order"),
            corrector_order: s.count("corrector_order"),
            simple_order_2: s.flag("simple_order_2"),
            pece,
        }
    }

    fn sigma(&self, i: usize) -> f64 {
        self.sigmas.get(i).copied().unwrap_or(0.0)
    }

    fn lambda(&self, i: usize) -> f64 {
        self.lambdas.get(i).copied().unwrap_or(0.0)
    }

    /// The orders of step `i`'s predictor and corrector with `available` denoised samples: lowered at the
    /// start, and near the end when the sigmas end in 0; no corrector on the first step nor, without PECE, on
    /// the last.
    fn orders(&self, i: usize, available: usize) -> (usize, usize) {
        let n = self.sigmas.len();
        let mut predictor = self.predictor_order.min(available);
        let mut corrector = match i == 0 || (self.sigma(i + 1) == 0.0 && !self.pece) {
            true => 0,
            false => self.corrector_order.min(available),
        };
        if self.sigmas.last() == Some(&0.0) {
            predictor = predictor.min(n.saturating_sub(2 + i));
            corrector = corrector.min(n.saturating_sub(1 + i));
        }
        (predictor, corrector)
    }

    /// `Σ bₖ·Dₖ` over the newest `order` denoised samples, the weights for the interval ending at `end`
    /// (`end − 1` to `end`).
    fn adams_sum(
        &self,
        history: &[Vec<f64>],
        order: usize,
        end: usize,
        tau: f64,
        corrector: bool,
    ) -> Vec<f64> {
        // The lambdas of the samples used: those of steps `newest + 1 − order ..= newest`.
        let newest = if corrector {
            end
        } else {
            end.saturating_sub(1)
        };
        let first = (newest + 1).saturating_sub(order);
        let lambdas = self.lambdas.get(first..=newest).unwrap_or(&[]);
        let iv = Interval {
            sigma_next: self.sigma(end),
            lambdas,
            lambda_s: self.lambda(end.saturating_sub(1)),
            lambda_t: self.lambda(end),
            tau,
        };
        let b = b_coeffs(&iv, self.simple_order_2, corrector);
        let samples = history
            .get(history.len().saturating_sub(order)..)
            .unwrap_or(&[]);
        let terms: Vec<(f64, &[f64])> = b
            .iter()
            .zip(samples)
            .map(|(&c, d)| (c, d.as_slice()))
            .collect();
        match terms.is_empty() {
            true => vec![0.0; history.last().map_or(0, Vec::len)],
            false => lin(&terms),
        }
    }

    /// Step `i`'s corrector: the step from `sigma_{i−1}` to `sigma_i` again, now with the denoised sample
    /// at `sigma_i`, plus the predictor's noise.
    fn correct(
        &self,
        x: &[f64],
        history: &[Vec<f64>],
        order: usize,
        i: usize,
        carry: &Carry,
    ) -> Vec<f64> {
        let mut corrected = self.adams_sum(history, order, i, carry.tau, true);
        let decay = self.sigma(i) / self.sigma(i.saturating_sub(1))
            * (-(carry.tau * carry.tau) * carry.h).exp();
        add(&mut corrected, decay, x);
        if carry.tau > 0.0
            && self.s_noise > 0.0
            && let Some(noise) = &carry.noise
        {
            add(&mut corrected, 1.0, noise);
        }
        corrected
    }

    /// Step `i`'s predictor from `sigma_i` to `sigma_{i+1}` (not 0), drawing its noise while tau > 0.
    async fn predict(
        &self,
        m: &Model,
        x: &[f64],
        history: &[Vec<f64>],
        order: usize,
        i: usize,
    ) -> (Vec<f64>, Carry) {
        let (sigma, next) = (self.sigma(i), self.sigma(i + 1));
        let tau = self.tau.at(next);
        let h = self.lambda(i + 1) - self.lambda(i);
        let mut predicted = self.adams_sum(history, order, i + 1, tau, false);
        add(&mut predicted, next / sigma * (-(tau * tau) * h).exp(), x);
        let mut carry = Carry {
            h,
            tau,
            noise: None,
        };
        if tau > 0.0 && self.s_noise > 0.0 {
            let z = m.noise(sigma, next).await;
            let scale = next * (-(-2.0 * (tau * tau) * h).exp_m1()).sqrt() * self.s_noise;
            let noise: Vec<f64> = z.iter().map(|v| v * scale).collect();
            add(&mut predicted, 1.0, &noise);
            carry.noise = Some(noise);
        }
        (predicted, carry)
    }
}

async fn sample(m: Model, start: Start, pece: bool) -> Vec<f64> {
    let solver = Solver::new(&start, pece);
    let max_order = solver.predictor_order.max(solver.corrector_order).max(1);
    // x: the corrected sample at the step's start; x_pred: the predicted one at its end.
    let (mut x, mut x_pred) = (start.x.clone(), start.x);
    let mut history: Vec<Vec<f64>> = Vec::new();
    let mut carry = Carry::default();
    for i in 0..solver.sigmas.len().saturating_sub(1) {
        let sigma = solver.sigma(i);
        let mut denoised = m.denoise(&x_pred, sigma).await.guided;
        history.push(denoised.clone());
        history.drain(..history.len().saturating_sub(max_order));
        let (predictor, corrector) = solver.orders(i, history.len());
        x = match corrector {
            0 => x_pred,
            order => {
                let corrected = solver.correct(&x, &history, order, i, &carry);
                if solver.pece {
                    denoised = m.denoise(&corrected, sigma).await.guided;
                    if let Some(last) = history.last_mut() {
                        last.clone_from(&denoised);
                    }
                }
                corrected
            }
        };
        if solver.sigma(i + 1) == 0.0 {
            x_pred = denoised;
        } else {
            (x_pred, carry) = solver.predict(&m, &x, &history, predictor, i).await;
        }
    }
    x_pred
}

#[cfg(test)]
mod tests {
    use super::super::{Denoised, Run, SAMPLERS, State, settings};
    use super::*;
    use std::sync::Arc;

    /// Runs `sampler` over `sigmas` with a model predicting half the sample and zero noise: the final sample
    /// and the number of model calls.
    fn run(sampler: &KSampler, sigmas: &[f64]) -> (Vec<f64>, usize) {
        let Ok(settings) = settings(sampler, &Default::default()) else {
            return (Vec::new(), usize::MAX);
        };
        let start = Start {
            x: vec![1.0, -2.0],
            sigmas: sigmas.to_vec(),
            settings,
            percent_to_sigma: Arc::new(|p| 14.6 * (1.0 - p)),
        };
        let mut run = Run::new(sampler, start);
        let mut calls = 0;
        loop {
            match run.resume(&mut |_| vec![0.0; 2]) {
                State::Done(x) => return (x, calls),
                State::Call { x, .. } => {
                    calls += 1;
                    let guided = x.iter().map(|v| v / 2.0).collect();
                    run.answer(Denoised {
                        guided,
                        uncond: None,
                    });
                }
            }
        }
    }

    const MINE: [&str; 5] = [
        "er_sde",
        "seeds_2",
        "seeds_3",
        "sa_solver",
        "sa_solver_pece",
    ];

    #[test]
    fn short_sigma_lists_return_the_sample() {
        for sampler in SAMPLERS.iter().filter(|s| MINE.contains(&s.name)) {
            for sigmas in [&[][..], &[3.0]] {
                assert_eq!(
                    run(sampler, sigmas),
                    (vec![1.0, -2.0], 0),
                    "{}",
                    sampler.name
                );
            }
            // One step down to 0 returns the denoised sample.
            assert_eq!(
                run(sampler, &[3.0, 0.0]),
                (vec![0.5, -1.0], 1),
                "{}",
                sampler.name
            );
        }
    }

    #[test]
    fn runs_stay_finite() {
        for sampler in SAMPLERS.iter().filter(|s| MINE.contains(&s.name)) {
            let (x, _) = run(sampler, &[14.6, 6.0, 2.5, 1.0, 0.4, 0.1, 0.03, 0.0]);
            assert!(x.iter().all(|v| v.is_finite()), "{}: {x:?}", sampler.name);
        }
    }

    #[test]
    fn repeated_sigmas_fall_back_to_first_order() {
        let (x, _) = run(&SA_SOLVER, &[14.6, 6.0, 6.0, 6.0, 1.0, 0.0]);
        assert!(x.iter().all(|v| v.is_finite()), "{x:?}");
    }
}
