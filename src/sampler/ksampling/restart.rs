//! Restart (A1111 "Restart", its `restart_sampler`; not in ComfyUI): Heun steps down the schedule (2 model
//! calls a step, 1 for the Euler step to 0) that, on reaching a restart sigma, jump back up to a higher
//! sigma with fresh noise and descend again on a Karras sub-schedule (Xu et al. 2023, "Restart Sampling").
//! One noise draw at every jump up.
//!
//! A1111 hands it float32 sigmas and builds its Karras schedules in float32: the sigmas, the step sizes and
//! the jump's noise scale are float32 here too, so that the comparisons that decide a jump come out the same.

use serde_json::Value;

use super::dpm_solver::linspace_f32;
use super::vector::{lin, to_d};
use super::{KSampler, Model, Settings, Start};

pub const SAMPLER: KSampler = KSampler {
    name: "restart",
    defaults: r#"{"s_noise": 1.0, "restart_list": null}"#,
    stochastic: |s| s.num("s_noise") != 0.0 && restart_list(s).is_none_or(|l| !l.is_empty()),
    takes_uncond: false,
    adaptive: false,
    run: |m, start| Box::pin(sample(m, start)),
};

/// One restart: on reaching the sigma nearest `at`, go back `times` times to the sigma nearest `max` and
/// descend on a Karras schedule of `steps` sigmas.
#[derive(Debug, Clone, Copy)]
struct Restart {
    at: f64,
    steps: usize,
    times: usize,
    max: f64,
}

/// The `restart_list` setting, A1111's `{min_sigma: [restart_steps, restart_times, max_sigma]}` as a JSON
/// object or its text. None (the automatic list) when unset, null, or not of that form.
fn restart_list(s: &Settings) -> Option<Vec<Restart>> {
    let parsed;
    let value = match s.0.get("restart_list")? {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            &parsed
        }
        other => other,
    };
    value
        .as_object()?
        .iter()
        .map(|(key, v)| parse_restart(key, v))
        .collect()
}

fn parse_restart(key: &str, value: &Value) -> Option<Restart> {
    let at = key.trim().parse::<f64>().ok()?;
    let [steps, times, max] = value.as_array()?.as_slice() else {
        return None;
    };
    let steps = steps.as_f64().filter(|n| *n >= 0.0 && n.fract() == 0.0)?;
    // A1111 counts restart_times down while it is > 0.
    let times = times.as_f64()?.max(0.0).ceil();
    Some(Restart {
        at,
        steps: steps as usize,
        times: times as usize,
        max: max.as_f64()?,
    })
}

/// The i-th of the `n` sigmas of k-diffusion's `get_sigmas_karras(n, low, high)` (rho 7, the trailing 0
/// left out), in float32 as its torch ramp computes it.
fn karras_f32(n: usize, low: f32, high: f32, i: usize) -> f32 {
    let (min_inv, max_inv) = (
        f64::from(low).powf(1.0 / 7.0),
        f64::from(high).powf(1.0 / 7.0),
    );
    let ramp = linspace_f32(0.0, 1.0, n, i);
    (max_inv as f32 + ramp * (min_inv - max_inv) as f32).powf(7.0)
}

/// The index of the sigma nearest `value` (the first of equals), compared in float32.
fn nearest(sigmas: &[f32], value: f64) -> usize {
    let value = value as f32;
    let mut best = (0, f32::INFINITY);
    for (i, s) in sigmas.iter().enumerate() {
        let d = (s - value).abs();
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0
}

/// The main schedule and its restarts: as given, or with no list A1111's automatic choice (from 20 steps on,
/// a shorter Karras schedule plus one or two restarts from the sigma nearest 0.1 back to the one nearest 2).
fn plan(sigmas: &[f64], s: &Settings) -> (Vec<f32>, Vec<Restart>) {
    let sigmas: Vec<f32> = sigmas.iter().map(|&v| v as f32).collect();
    if let Some(list) = restart_list(s) {
        return (sigmas, list);
    }
    let steps = sigmas.len().saturating_sub(1);
    if steps < 20 {
        return (sigmas, Vec::new());
    }
    let (restart_steps, times) = if steps >= 36 { (steps / 4, 2) } else { (9, 1) };
    let (low, high) = (sigmas.get(steps - 1).copied(), sigmas.first().copied());
    let (Some(low), Some(high)) = (low, high) else {
        return (sigmas, Vec::new());
    };
    let n = steps - restart_steps * times;
    let mut main: Vec<f32> = (0..n).map(|i| karras_f32(n, low, high, i)).collect();
    main.push(0.0);
    let restart = Restart {
        at: 0.1,
        steps: restart_steps + 1,
        times,
        max: 2.0,
    };
    (main, vec![restart])
}

/// One Heun step from `old` to `new` (Euler when `new` is 0); the step size is float32 like the sigmas.
async fn heun_step(m: &Model, x: Vec<f64>, old: f32, new: f32) -> Vec<f64> {
    let dt = f64::from(new - old);
    let (old, new) = (f64::from(old), f64::from(new));
    let d = to_d(&x, old, &m.denoise(&x, old).await.guided);
    let x_2 = lin(&[(1.0, &x), (dt, &d)]);
    if new == 0.0 {
        return x_2;
    }
    let d_2 = to_d(&x_2, new, &m.denoise(&x_2, new).await.guided);
    let d_prime = lin(&[(1.0, &d), (1.0, &d_2)]);
    lin(&[
        (1.0, &x),
        (dt, &d_prime.iter().map(|v| v / 2.0).collect::<Vec<_>>()),
    ])
}

/// Walks the steps in order, adding noise wherever the next step starts above where the last one ended.
struct Walker {
    x: Vec<f64>,
    last: Option<f32>,
    s_noise: f64,
}

impl Walker {
    async fn step(&mut self, m: &Model, old: f32, new: f32) {
        if let Some(last) = self.last.filter(|&last| last < old) {
            let scale = (old * old - last * last).sqrt();
            let z = m.noise(f64::from(last), f64::from(old)).await;
            let noise: Vec<f64> = z
                .iter()
                .map(|v| v * self.s_noise * f64::from(scale))
                .collect();
            self.x = lin(&[(1.0, &self.x), (1.0, &noise)]);
        }
        self.last = Some(new);
        self.x = heun_step(m, std::mem::take(&mut self.x), old, new).await;
    }
}

async fn sample(m: Model, start: Start) -> Vec<f64> {
    let Start {
        x,
        sigmas,
        settings: s,
        ..
    } = start;
    let (sigmas, restarts) = plan(&sigmas, &s);
    // Each restart at the index nearest its sigma; a later one at the same index replaces an earlier one.
    let at: Vec<(usize, Restart)> = restarts
        .iter()
        .map(|r| (nearest(&sigmas, r.at), *r))
        .collect();
    let mut walk = Walker {
        x,
        last: None,
        s_noise: s.num("s_noise"),
    };
    for (i, pair) in sigmas.windows(2).enumerate() {
        let &[old, new] = pair else { continue };
        walk.step(&m, old, new).await;
        let Some(&(_, r)) = at.iter().rev().find(|(index, _)| *index == i + 1) else {
            continue;
        };
        // Only a restart to a higher sigma (an earlier index) is taken.
        let max_idx = nearest(&sigmas, r.max);
        let (Some(&low), Some(&high)) = (sigmas.get(i + 1), sigmas.get(max_idx)) else {
            continue;
        };
        if max_idx > i {
            continue;
        }
        for _ in 0..r.times {
            for k in 1..r.steps {
                let old = karras_f32(r.steps, low, high, k - 1);
                walk.step(&m, old, karras_f32(r.steps, low, high, k)).await;
            }
        }
    }
    walk.x
}
