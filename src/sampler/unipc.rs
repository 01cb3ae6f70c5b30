//! UniPCMultistepScheduler (Zhao et al. 2023): the UniP predictor and the UniC corrector, variants bh1
//! and bh2, data (`predict_x0`) or noise prediction, orders 1–3.
//!
//! Each step first corrects the sample the previous predictor produced, with the model output that
//! sample was given (UniC needs no extra model call), then predicts the next sample.

use std::sync::Arc;

use serde_json::{Value, json};

use super::family::{Common, FamilyConfig, Parsed, Reader, read_solver_order, read_thresholding};
use super::flow_shift::{FlowGrid, read_flow_mode};
use super::prediction::X0Clip;
use super::schedule::ScheduleConfig;
use super::sigmas::SigmaSpace;
use super::start::call_sigma;
use super::vp_sigmas::{
    FinalSigma, VpSchedule, data_prediction, one_of, require_null, step_list, vp_multistep_keys,
    vp_schedule,
};
use super::{ConfigError, NoiseSource, Noising, PredictionType, Scheduler, StepError, check_step};

/// diffusers' `solver_type`: how B(h) is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// B(h) = h.
    Bh1,
    /// B(h) = e^h − 1.
    Bh2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UniPcConfig {
    pub vp: VpSchedule,
    pub prediction_type: PredictionType,
    pub thresholding: X0Clip,
    pub solver_order: usize,
    pub predict_x0: bool,
    pub variant: Variant,
    pub lower_order_final: bool,
    /// Steps whose prediction is not corrected at the next step.
    pub disable_corrector: Vec<usize>,
    pub final_sigmas_type: FinalSigma,
}

pub struct UniPc {
    config: UniPcConfig,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    index: usize,
    /// The step the run started at (0, or later for img2img).
    begin: usize,
    /// The last `solver_order` converted model outputs (x0 or eps), oldest first.
    history: Vec<Vec<f64>>,
    /// The sample the last predictor started from (after its correction).
    last_sample: Vec<f64>,
    /// The predictor order of the previous step (the next corrector uses it).
    last_order: usize,
}

/// The weights of one UniP or UniC update.
struct Coefficients {
    /// e^{hh} − 1 with hh = −h (data prediction) or h.
    hphi1: f64,
    b_h: f64,
    /// R (rows r^0, r^1, ...) and b of the order conditions R·ρ = b.
    r: [[f64; 3]; 3],
    b: [f64; 3],
}

impl UniPc {
    pub fn new(config: UniPcConfig) -> Self {
        Self {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            index: 0,
            begin: 0,
            history: Vec::new(),
            last_sample: Vec::new(),
            last_order: 0,
        }
    }

    /// The predictor order of step `i` of `n`: warm-up, then `solver_order`, lowered towards the end.
    /// A step that lands on sigma 0 is first order: every higher-order weight is infinite there.
    fn order_for(&self, i: usize, n: usize) -> usize {
        let c = &self.config;
        let mut order = c.solver_order.min(i - self.begin + 1);
        if c.lower_order_final {
            order = order.min(n - i);
        }
        if self.sigmas.get(i + 1) == Some(&0.0) {
            order = 1;
        }
        order
    }

    fn space(&self) -> SigmaSpace {
        SigmaSpace::of(self.config.vp.flow.is_some())
    }

    fn lambda(&self, k: usize) -> f64 {
        self.space().alpha_sigma_lambda(self.sigmas[k] as f64).2
    }

    /// The coefficients of a step of size `h` with the ratios `rks` (older points, then 1).
    fn coefficients(&self, h: f64, rks: &[f64]) -> Coefficients {
        let hh = if self.config.predict_x0 { -h } else { h };
        let hphi1 = hh.exp_m1();
        let b_h = match self.config.variant {
            Variant::Bh1 => hh,
            Variant::Bh2 => hphi1,
        };
        let mut c = Coefficients {
            hphi1,
            b_h,
            r: [[0.0; 3]; 3],
            b: [0.0; 3],
        };
        let mut hphik = hphi1 / hh - 1.0;
        let mut factorial = 1.0;
        for k in 0..rks.len() {
            for (j, &rk) in rks.iter().enumerate() {
                c.r[k][j] = rk.powi(k as i32);
            }
            c.b[k] = hphik * factorial / b_h;
            factorial *= (k + 2) as f64;
            hphik = hphik / hh - 1.0 / factorial;
        }
        c
    }

    /// The first-order part from sigma index `s` to `t`: (weight of x, weight of m0, weight of the
    /// corrections).
    fn base(&self, s: usize, t: usize, c: &Coefficients) -> (f64, f64, f64) {
        let (alpha_s, sigma_s, _) = self.space().alpha_sigma_lambda(self.sigmas[s] as f64);
        let (alpha_t, sigma_t, _) = self.space().alpha_sigma_lambda(self.sigmas[t] as f64);
        if self.config.predict_x0 {
            (sigma_t / sigma_s, -alpha_t * c.hphi1, -alpha_t * c.b_h)
        } else {
            // sigma_t (e^h − 1) = alpha_t sigma_s / alpha_s − sigma_t, finite at sigma_t = 0.
            let m0 = -(alpha_t * sigma_s / alpha_s - sigma_t);
            (alpha_t / alpha_s, m0, -sigma_t * c.b_h)
        }
    }

    /// The ratios r_k = (lambda_{s-k} − lambda_s) / h of the `order − 1` older points, then 1.
    fn ratios(&self, s: usize, h: f64, order: usize) -> Vec<f64> {
        let l0 = self.lambda(s);
        let mut rks: Vec<f64> = (1..order).map(|k| (self.lambda(s - k) - l0) / h).collect();
        rks.push(1.0);
        rks
    }

    /// UniC: the corrected sample at sigma index `i` from `last_sample` (at i − 1), given the newest
    /// converted output `m_new` at i (`out` holds the uncorrected sample and is left so for h = 0).
    fn correct(&self, i: usize, m_new: &[f64], out: &mut [f64]) {
        let order = self.last_order;
        let h = self.lambda(i) - self.lambda(i - 1);
        if h == 0.0 {
            return;
        }
        let rks = self.ratios(i - 1, h, order);
        let c = self.coefficients(h, &rks);
        let rhos = if order == 1 {
            vec![0.5]
        } else {
            solve(&c.r, &c.b, order)
        };
        let (cx, cm, cd) = self.base(i - 1, i, &c);
        // The history still ends with m_{i-1}; m_new is the newest point, D1 differences the older.
        let k = self.history.len();
        let m0 = &self.history[k - 1];
        for (j, v) in out.iter_mut().enumerate() {
            let mut corr = rhos[order - 1] * (m_new[j] - m0[j]);
            for (q, &rk) in rks[..order - 1].iter().enumerate() {
                corr += rhos[q] * (self.history[k - 2 - q][j] - m0[j]) / rk;
            }
            *v = cx * self.last_sample[j] + cm * m0[j] + cd * corr;
        }
    }

    /// UniP: the sample at sigma index `i + 1` from `x` at `i` (the history ends with m_i).
    fn predict(&self, i: usize, order: usize, x: &[f64], sample: &mut [f32]) {
        let h = self.lambda(i + 1) - self.lambda(i);
        if h == 0.0 {
            // A repeated last sigma (ramps with "sigma_min"): the step's limit leaves x as it is.
            for (s, &v) in sample.iter_mut().zip(x) {
                *s = v as f32;
            }
            return;
        }
        let rks = self.ratios(i, h, order);
        let c = self.coefficients(h, &rks);
        let rhos = match order {
            1 => Vec::new(),
            2 => vec![0.5],
            _ => solve(&c.r, &c.b, order - 1),
        };
        let (cx, cm, cd) = self.base(i, i + 1, &c);
        let k = self.history.len();
        let m0 = &self.history[k - 1];
        for (j, s) in sample.iter_mut().enumerate() {
            let mut v = cx * x[j] + cm * m0[j];
            if order > 1 {
                let mut corr = 0.0;
                for (q, &rk) in rks[..order - 1].iter().enumerate() {
                    corr += rhos[q] * (self.history[k - 2 - q][j] - m0[j]) / rk;
                }
                v += cd * corr;
            }
            *s = v as f32;
        }
    }
}

/// Solves the `n`×`n` system `a·x = b` (n ≤ 3) by Gaussian elimination with partial pivoting.
fn solve(a: &[[f64; 3]; 3], b: &[f64; 3], n: usize) -> Vec<f64> {
    let mut m: Vec<[f64; 4]> = (0..n).map(|i| [a[i][0], a[i][1], a[i][2], b[i]]).collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&p, &q| m[p][col].abs().total_cmp(&m[q][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        let top = m[col];
        for row in m.iter_mut().take(n).skip(col + 1) {
            let f = row[col] / top[col];
            for (v, t) in row.iter_mut().zip(top).skip(col) {
                *v -= f * t;
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| m[row][k] * x[k]).sum();
        x[row] = (m[row][3] - tail) / m[row][row];
    }
    x
}

impl Scheduler for UniPc {
    fn set_steps(&mut self, steps: usize) -> Result<(), ConfigError> {
        let s = self.config.vp.steps(steps, self.config.final_sigmas_type)?;
        self.timesteps = s.timesteps.iter().map(|&t| t as f64).collect();
        self.sigmas = s.sigmas;
        self.index = 0;
        self.begin = 0;
        self.history.clear();
        self.last_sample.clear();
        self.last_order = 0;
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
        // The model output converted on the uncorrected sample, as diffusers does.
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
        let m: Vec<f64> = if self.config.predict_x0 {
            wide
        } else if self.config.thresholding == X0Clip::None {
            let prediction = self.config.prediction_type;
            model_output
                .iter()
                .zip(sample.iter())
                .map(|(&out, &x)| prediction.x0_eps(out as f64, x as f64, alpha, sigma).1)
                .collect()
        } else {
            // Thresholded x0 gives the noise back.
            wide.iter()
                .zip(sample.iter())
                .map(|(&x0, &x)| (x as f64 - alpha * x0) / sigma)
                .collect()
        };
        let mut x: Vec<f64> = sample.iter().map(|&v| v as f64).collect();
        let corrected = i > self.begin && !self.config.disable_corrector.contains(&(i - 1));
        if corrected {
            self.correct(i, &m, &mut x);
        }
        if self.history.len() == self.config.solver_order {
            self.history.remove(0);
        }
        self.history.push(m);
        let order = self.order_for(i, n);
        self.predict(i, order, &x, sample);
        self.last_sample = x;
        self.last_order = order;
        self.index += 1;
        Ok(())
    }
}

impl FamilyConfig for UniPcConfig {
    fn build(&self) -> Box<dyn Scheduler> {
        Box::new(UniPc::new(self.clone()))
    }

    fn schedule(&self) -> &ScheduleConfig {
        &self.vp.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
}

// Settings: the class's defaults and parser.

pub(super) fn unipc_defaults() -> Value {
    let mut map = vp_multistep_keys();
    let Value::Object(own) = json!({
        "predict_x0": true,
        "solver_type": "bh2",
        "disable_corrector": [],
        "solver_p": null,
        "final_sigmas_type": "zero",
        "rescale_betas_zero_snr": false,
        "sigma_min": null,
        "sigma_max": null,
        "shift_terminal": null,
    }) else {
        unreachable!("a literal object")
    };
    map.extend(own);
    Value::Object(map)
}

pub(super) fn parse_unipc(r: &mut Reader, c: Common, warnings: &mut Vec<String>) -> Parsed {
    let thresholding = read_thresholding(r)?;
    let flow = read_flow_mode(r, &c, FlowGrid::UniPc, warnings)?;
    // sigma_min and sigma_max bound Karras-type ramps, which flow mode refuses.
    let nulls: &[&str] = if flow.is_some() {
        &["solver_p", "sigma_min", "sigma_max"]
    } else {
        &["solver_p", "sigma_min", "sigma_max", "shift_terminal"]
    };
    require_null(r, nulls)?;
    let solver_order = read_solver_order(r)?;
    let variant = match one_of(
        r,
        "solver_type",
        &["bh1", "bh2"],
        &["midpoint", "heun", "logrho"],
        warnings,
    )?
    .as_str()
    {
        "bh1" => Variant::Bh1,
        _ => Variant::Bh2,
    };
    let final_sigmas_type = r.pick::<FinalSigma>("final_sigmas_type")?;
    let lower_order_final = r.bool("lower_order_final")?;
    if !lower_order_final && solver_order > 1 && final_sigmas_type == FinalSigma::Zero {
        warnings.push("UniPC with lower_order_final false and final_sigmas_type \"zero\": diffusers' last step is infinite there; difflab takes it first order".into());
    }
    Ok(Arc::new(UniPcConfig {
        vp: vp_schedule(r, &c, true, flow)?,
        prediction_type: c.prediction_type,
        thresholding,
        solver_order,
        predict_x0: r.bool("predict_x0")?,
        variant,
        lower_order_final,
        disable_corrector: step_list(r, "disable_corrector")?,
        final_sigmas_type,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::sampler::{SamplerConfig, SeededNoise};

    fn build(settings: Value) -> Box<dyn Scheduler> {
        let settings = settings.as_object().cloned().unwrap_or_default();
        SamplerConfig::resolve("unipc", None, &settings)
            .map(|r| r.config.build())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs every step with a constant model output; the final sample and the last x0.
    fn run(s: &mut dyn Scheduler, steps: usize, output: f32) -> (Vec<f32>, Vec<f32>) {
        s.set_steps(steps).unwrap_or_else(|e| panic!("{e}"));
        let (mut x, mut x0) = (vec![0.7f32, -1.2, 0.1, 2.0], vec![0.0; 4]);
        let out = vec![output; 4];
        let mut noise = SeededNoise::new(vec![0]);
        for _ in 0..s.timesteps().len() {
            s.step(&out, &mut x, &mut x0, 1, &mut noise)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        (x, x0)
    }

    #[test]
    fn one_call_per_step_with_warm_up_and_lower_order_final() {
        let mut s = build(json!({"solver_order": 3}));
        s.set_steps(10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.timesteps().len(), 10);
        let orders: Vec<usize> = (0..10).map(|i| s.order_at(i)).collect();
        assert_eq!(orders, [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]);
    }

    #[test]
    fn the_step_to_sigma_zero_lands_on_the_data_prediction() {
        // diffusers gives NaN here for bh1 and for noise prediction.
        for settings in [
            json!({"solver_type": "bh1"}),
            json!({"predict_x0": false}),
            json!({"lower_order_final": false, "solver_order": 3}),
        ] {
            let (x, x0) = run(build(settings.clone()).as_mut(), 8, 0.3);
            assert_eq!(x, x0, "{settings}");
        }
    }

    #[test]
    fn a_constant_data_prediction_is_integrated_exactly() {
        // x/σ_t − x0·α/σ is constant along the flow when x0 is; every order and variant keeps it.
        for (order, variant) in [(1, "bh1"), (2, "bh2"), (3, "bh1"), (3, "bh2")] {
            let mut s = build(json!({"prediction_type": "sample", "solver_order": order,
                "solver_type": variant, "final_sigmas_type": "sigma_min"}));
            let (x, _) = run(s.as_mut(), 12, 0.4);
            let sig = s.sigmas().map(<[f32]>::to_vec).unwrap_or_default();
            let invariant = |x: f64, s: f32| {
                let (alpha, sigma, _) = SigmaSpace::Vp.alpha_sigma_lambda(s as f64);
                x / sigma - 0.4 * alpha / sigma
            };
            for (&start, &end) in [0.7f64, -1.2, 0.1, 2.0].iter().zip(&x) {
                let (a, b) = (invariant(start, sig[0]), invariant(end as f64, sig[12]));
                assert!(
                    (a - b).abs() < 1e-4 * a.abs().max(1.0),
                    "{order} {variant}: {a} {b}"
                );
            }
        }
    }

    #[test]
    fn solve_pivots() {
        let a = [[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [2.0, 0.0, 1.0]];
        let x = solve(&a, &[8.0, 6.0, 5.0], 3);
        for (got, want) in x.iter().zip([1.0, 2.0, 3.0]) {
            assert!((got - want).abs() < 1e-12, "{x:?}");
        }
    }
}
