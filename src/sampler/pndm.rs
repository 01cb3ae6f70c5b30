//! PNDMScheduler (Liu et al. 2022, pseudo numerical methods): three Runge–Kutta steps (PRK) to warm up,
//! then linear multistep (PLMS, Adams–Bashforth up to 4th order) on the noise prediction, each step
//! taken with DDIM's transfer from t to t'. With `skip_prk_steps` the warm-up is a Heun-like redo of
//! the first step instead (what A1111 calls PLMS).

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader};
use super::kdiff::unsupported_prediction;
use super::schedule::{NoiseSchedule, ScheduleConfig};
use super::spacing::TimestepSpacing;
use super::step_checks::checked_timesteps;
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

#[derive(Debug, Clone, PartialEq)]
pub struct PndmConfig {
    pub schedule: ScheduleConfig,
    /// epsilon or v_prediction.
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub skip_prk_steps: bool,
    /// ᾱ after the last step: 1 or ᾱ_0.
    pub set_alpha_to_one: bool,
}

/// The number of model calls of the Runge–Kutta warm-up (3 steps of 4).
const PRK_CALLS: usize = 12;

pub struct Pndm {
    config: PndmConfig,
    schedule: NoiseSchedule,
    /// The timestep of every model call.
    calls: Vec<i64>,
    model_timesteps: Vec<f64>,
    /// Calls before this index are Runge–Kutta stages.
    prk_calls: usize,
    /// N // n: the stride every step takes back, whatever the spacing.
    ratio: i64,
    counter: usize,
    /// The call the run started at (img2img); `counter` counts from it.
    offset: usize,
    /// Noise predictions kept for the multistep formulas (the last four).
    ets: Vec<Vec<f64>>,
    /// The Runge–Kutta sum of the current group.
    rk_sum: Vec<f64>,
    /// The sample a Runge–Kutta group, or the redone first step, starts from.
    anchor: Vec<f64>,
}

impl Pndm {
    pub fn new(config: PndmConfig) -> Self {
        let schedule = NoiseSchedule::new(&config.schedule);
        Self {
            config,
            schedule,
            calls: Vec::new(),
            model_timesteps: Vec::new(),
            prk_calls: 0,
            ratio: 0,
            counter: 0,
            offset: 0,
            ets: Vec::new(),
            rk_sum: Vec::new(),
            anchor: Vec::new(),
        }
    }

    fn alpha_bar(&self, t: i64) -> f64 {
        if t >= 0 {
            self.schedule.alpha_bar(t as usize)
        } else if self.config.set_alpha_to_one {
            1.0
        } else {
            self.schedule.alpha_bar(0)
        }
    }

    /// What call `c` does: (the timestep the transfer starts from, the one it goes to, whether it
    /// starts from the anchor sample).
    fn transfer(&self, c: usize) -> (i64, i64, bool) {
        let t = self.calls[c + self.offset];
        if c < self.prk_calls {
            // Stages 0 and 2 go half a stride, 1 and 3 a whole one, all from the group's anchor.
            let prev = t - if c % 2 == 1 { 0 } else { self.ratio / 2 };
            (self.calls[c / 4 * 4], prev, true)
        } else if c == 1 {
            // skip_prk's redo of step 0 with the averaged noise: from the first timestep again.
            (t + self.ratio, t, true)
        } else {
            (t, t - self.ratio, false)
        }
    }

    /// DDIM's transfer of `x` from t to t' with noise prediction `e` (v predictions converted on x):
    /// returns (x', x0).
    fn prev_sample(&self, x: f64, t: i64, prev: i64, e: f64) -> (f64, f64) {
        let (a, a_prev) = (self.alpha_bar(t), self.alpha_bar(prev));
        let e = match self.config.prediction_type {
            PredictionType::VPrediction => a.sqrt() * e + (1.0 - a).sqrt() * x,
            _ => e,
        };
        let denom = a * (1.0 - a_prev).sqrt() + (a * (1.0 - a) * a_prev).sqrt();
        let next = (a_prev / a).sqrt() * x - (a_prev - a) * e / denom;
        (next, (x - (1.0 - a).sqrt() * e) / a.sqrt())
    }

    /// The noise prediction call `c` steps with, from this call's output `e` (updating the stores).
    fn combined(&mut self, c: usize, e: &[f64]) -> Vec<f64> {
        if c < self.prk_calls {
            let w = if c.is_multiple_of(4) || c % 4 == 3 {
                1.0 / 6.0
            } else {
                1.0 / 3.0
            };
            if c.is_multiple_of(4) {
                self.ets.push(e.to_vec());
                self.rk_sum = vec![0.0; e.len()];
            }
            if c % 4 == 3 {
                return self.rk_sum.iter().zip(e).map(|(s, e)| s + w * e).collect();
            }
            for (s, e) in self.rk_sum.iter_mut().zip(e) {
                *s += w * e;
            }
            return e.to_vec();
        }
        if c == 1 {
            return self.ets[0]
                .iter()
                .zip(e)
                .map(|(a, b)| (a + b) / 2.0)
                .collect();
        }
        if self.ets.len() == 4 {
            self.ets.remove(0);
        }
        self.ets.push(e.to_vec());
        let k = self.ets.len();
        let weights: &[f64] = match k {
            1 => &[1.0],
            2 => &[3.0 / 2.0, -1.0 / 2.0],
            3 => &[23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0],
            _ => &[55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
        };
        (0..e.len())
            .map(|j| {
                weights
                    .iter()
                    .enumerate()
                    .map(|(q, w)| w * self.ets[k - 1 - q][j])
                    .sum()
            })
            .collect()
    }
}

impl Scheduler for Pndm {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let c = &self.config;
        let n_train = self.schedule.num_train_timesteps();
        // Ascending grid.
        let mut grid = checked_timesteps(c.timestep_spacing, n_train, steps, c.steps_offset)?;
        grid.reverse();
        self.ratio = (n_train / steps) as i64;
        if c.skip_prk_steps {
            // T_{n-1}, T_{n-2}, T_{n-2}, T_{n-3}, ..., T_0.
            let mut calls: Vec<i64> = grid.iter().rev().copied().collect();
            if steps > 1 {
                calls.insert(1, grid[steps - 2]);
            }
            self.calls = calls;
            self.prk_calls = 0;
        } else {
            if steps < 4 {
                return Err(ConfigError::Steps {
                    steps,
                    reason: "PNDM's Runge-Kutta warm-up takes the top 4 timesteps; use 4 or more steps or skip_prk_steps = true".into(),
                });
            }
            // The top four grid points and the half points above each, as RK4 stages (the last
            // half point, above the grid, is dropped).
            let top = &grid[steps - 4..];
            let points: Vec<i64> = top
                .iter()
                .flat_map(|&t| [t, t + self.ratio / 2])
                .take(7)
                .collect();
            let mut prk: Vec<i64> = points.iter().flat_map(|&t| [t, t]).collect();
            prk = prk[1..prk.len() - 1].to_vec();
            prk.reverse();
            self.prk_calls = prk.len();
            debug_assert_eq!(self.prk_calls, PRK_CALLS);
            prk.extend(grid[..steps - 3].iter().rev());
            self.calls = prk;
        }
        self.model_timesteps = self.calls.iter().map(|&t| t as f64).collect();
        self.counter = 0;
        self.offset = 0;
        self.ets.clear();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.model_timesteps
    }

    fn previous_timestep(&self, i: usize) -> Option<f64> {
        if i >= self.calls.len() || i < self.offset {
            return None;
        }
        let prev = self.transfer(i - self.offset).1;
        (prev >= 0).then_some(prev as f64)
    }

    /// RK4 during the warm-up; then the Adams–Bashforth order the stored predictions allow.
    fn order_at(&self, i: usize) -> usize {
        match i.saturating_sub(self.offset) {
            _ if self.prk_calls > 0 => 4,
            0 => 1,
            1 => 2,
            _ => i.min(4),
        }
    }

    fn noising_at(&self, call: usize) -> Option<Noising> {
        if call >= self.calls.len() {
            return None;
        }
        Some(Noising::alpha_bar(
            self.schedule.alphas_cumprod()[self.calls[call] as usize],
        ))
    }

    /// PLMS started part-way runs as diffusers runs it on the img2img pipelines' cut timesteps: its counter
    /// restarts, so the second call redoes the first step from the next timestep. The Runge–Kutta warm-up
    /// reads its own stored timesteps, not the cut ones, and cannot start part-way.
    fn start_at(&mut self, call: usize) -> Option<Noising> {
        if self.prk_calls > 0 && call > 0 {
            return None;
        }
        let noising = self.noising_at(call)?;
        self.offset = call;
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
        let c = self.counter;
        check_step(
            c,
            self.calls.len() - self.offset,
            model_output,
            sample,
            x0,
            batch,
        )?;
        let e: Vec<f64> = model_output.iter().map(|&v| v as f64).collect();
        let e = self.combined(c, &e);
        let (t, prev, from_anchor) = self.transfer(c);
        let starts_group = c < self.prk_calls && c.is_multiple_of(4);
        if starts_group || (self.prk_calls == 0 && c == 0) {
            self.anchor = sample.iter().map(|&v| v as f64).collect();
        }
        for (j, (x, x0)) in sample.iter_mut().zip(x0.iter_mut()).enumerate() {
            let from = if from_anchor {
                self.anchor[j]
            } else {
                *x as f64
            };
            let (next, clean) = self.prev_sample(from, t, prev, e[j]);
            *x = next as f32;
            *x0 = clean as f32;
        }
        self.counter += 1;
        Ok(())
    }
}

impl FamilyConfig for PndmConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(Pndm::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn pndm_defaults() -> Value {
    json!({"skip_prk_steps": false, "set_alpha_to_one": false, "timestep_spacing": "leading"})
}

pub(super) fn parse_pndm(r: &mut Reader, c: Common, _warnings: &mut Vec<String>) -> Parsed {
    if c.prediction_type == PredictionType::Sample {
        return Err(unsupported_prediction("PNDMScheduler", c.prediction_type));
    }
    Ok(Arc::new(PndmConfig {
        schedule: c.schedule,
        prediction_type: c.prediction_type,
        timestep_spacing: c.timestep_spacing,
        steps_offset: c.steps_offset,
        skip_prk_steps: r.bool("skip_prk_steps")?,
        set_alpha_to_one: r.bool("set_alpha_to_one")?,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::sampler::{SamplerConfig, SeededNoise};

    fn build(name: &str, settings: Value) -> Box<dyn Scheduler> {
        let settings = settings.as_object().cloned().unwrap_or_default();
        SamplerConfig::resolve(name, None, &settings)
            .map(|r| r.config.build())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn calls_are_the_steps_plus_the_warm_up() {
        let mut plms = build("plms", json!({}));
        plms.set_steps(10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            plms.timesteps(),
            [
                900.0, 800.0, 800.0, 700.0, 600.0, 500.0, 400.0, 300.0, 200.0, 100.0, 0.0
            ]
        );
        let orders: Vec<usize> = (0..6).map(|i| plms.order_at(i)).collect();
        assert_eq!(orders, [1, 2, 2, 3, 4, 4]);
        assert_eq!(plms.previous_timestep(1), Some(800.0));
        assert_eq!(plms.previous_timestep(10), None);
        plms.set_steps(1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plms.timesteps().len(), 1);

        let mut pndm = build("pndm", json!({}));
        pndm.set_steps(10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pndm.timesteps().len(), 19);
        assert_eq!(pndm.timesteps()[..4], [900.0, 850.0, 850.0, 800.0]);
        let e = pndm.set_steps(3).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("skip_prk_steps"), "{e}");
    }

    #[test]
    fn a_constant_noise_prediction_keeps_ddims_invariant() {
        // x/sqrt(ᾱ) − ε·sqrt((1 − ᾱ)/ᾱ) is what DDIM's transfer keeps for a constant ε; the
        // Runge–Kutta and multistep combinations of equal predictions must keep it too.
        for name in ["plms", "pndm"] {
            let mut s = build(name, json!({"set_alpha_to_one": true}));
            s.set_steps(10).unwrap_or_else(|e| panic!("{e}"));
            let start = s.timesteps()[0] as usize;
            let (mut x, mut x0) = (vec![0.7f32, -1.2, 0.1, 2.0], vec![0.0; 4]);
            let mut noise = SeededNoise::new(vec![0]);
            for _ in 0..s.timesteps().len() {
                s.step(&[0.3; 4], &mut x, &mut x0, 1, &mut noise)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let a = NoiseSchedule::new(&ScheduleConfig::default()).alpha_bar(start);
            for (&x_start, &end) in [0.7f64, -1.2, 0.1, 2.0].iter().zip(&x) {
                let want = x_start / a.sqrt() - 0.3 * ((1.0 - a) / a).sqrt();
                assert!(
                    (end as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
                    "{name}: {end} {want}"
                );
            }
        }
    }
}
