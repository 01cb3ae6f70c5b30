#!/usr/bin/env python3
"""Records diffusers' ScoreSdeVeScheduler (the predictor-corrector sampler of ScoreSdeVePipeline) for
tests/score_sde_ve_golden.rs: for each case, the pipeline's loop on an analytic score model, with its own
torch.Generator draws recorded in the order the pipeline makes them (initial noise, then per step each
corrector's draw, then the predictor's).

The model is the exact score of a Gaussian data distribution N(MEAN, STD²) under variance-exploding noise:
score(x, σ) = −(x − MEAN) / (STD² + σ²); the pipeline calls it with `sigmas[i]` as the timestep, as
ScoreSdeVePipeline calls its U-Net. One sample per run (the pipeline's batch_size 1: the corrector's step size
averages gradient and noise norms over the batch, so a batch of one is what a seed reproduces alone).

Recorded per case: the scheduler config, `timesteps`, `sigmas`, `discrete_sigmas`, and per seed every draw,
every model call's input and σ, and the final `prev_sample` and `prev_sample_mean` (what the pipeline returns
before clamping to [0, 1]).

    /work/venvs/pipelines/bin/python tests/data/goldens/score_sde_ve/gen.py     # a few seconds
"""

import json
from pathlib import Path

import diffusers
import torch
from diffusers import ScoreSdeVeScheduler

HERE = Path(__file__).resolve().parent
MEAN, STD = 0.5, 0.2
SHAPE = (1, 2, 4, 4)
SEEDS = [0, 1]
# name, steps, config overrides
CASES = [
    ("default_10", 10, {}),
    ("default_25", 25, {}),
    ("correct2_8", 8, {"correct_steps": 2}),
    ("predictor_only_12", 12, {"correct_steps": 0}),
    ("snr0.3_sigma50_10", 10, {"snr": 0.3, "sigma_max": 50.0}),
]


def score(x, sigma):
    return -(x - MEAN) / (STD**2 + sigma**2)


def run(scheduler, steps, seed):
    """ScoreSdeVePipeline's loop, recording draws and model calls."""
    generator = torch.Generator().manual_seed(seed)
    draws, calls = [], []
    original = diffusers.schedulers.scheduling_sde_ve.randn_tensor

    def recorded(*args, **kwargs):
        noise = original(*args, **kwargs)
        draws.append(noise.flatten().tolist())
        return noise

    diffusers.schedulers.scheduling_sde_ve.randn_tensor = recorded
    try:
        sample = diffusers.utils.torch_utils.randn_tensor(SHAPE, generator=generator)
        draws.append(sample.flatten().tolist())
        sample = sample * scheduler.init_noise_sigma
        scheduler.set_timesteps(steps)
        scheduler.set_sigmas(steps)
        for i, t in enumerate(scheduler.timesteps):
            sigma_t = scheduler.sigmas[i] * torch.ones(SHAPE[0])
            for _ in range(scheduler.config.correct_steps):
                calls.append({"sample": sample.flatten().tolist(), "sigma": float(sigma_t[0])})
                out = score(sample, sigma_t.reshape(-1, 1, 1, 1))
                sample = scheduler.step_correct(out, sample, generator=generator).prev_sample
            calls.append({"sample": sample.flatten().tolist(), "sigma": float(sigma_t[0])})
            out = score(sample, sigma_t.reshape(-1, 1, 1, 1))
            output = scheduler.step_pred(out, t, sample, generator=generator)
            sample, sample_mean = output.prev_sample, output.prev_sample_mean
    finally:
        diffusers.schedulers.scheduling_sde_ve.randn_tensor = original
    return {"seed": seed, "draws": draws, "calls": calls, "prev_sample": sample.flatten().tolist(),
            "prev_sample_mean": sample_mean.flatten().tolist()}


def main():
    cases = []
    for name, steps, overrides in CASES:
        scheduler = ScoreSdeVeScheduler(**overrides)
        runs = [run(scheduler, steps, seed) for seed in SEEDS]
        config = {k: v for k, v in scheduler.config.items() if not k.startswith("_")}
        cases.append({"name": name, "class": "ScoreSdeVeScheduler", "config": config, "steps": steps,
                      "init_noise_sigma": float(scheduler.init_noise_sigma),
                      "timesteps": scheduler.timesteps.tolist(), "sigmas": scheduler.sigmas.tolist(),
                      "discrete_sigmas": scheduler.discrete_sigmas.tolist(), "runs": runs})
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__, "shape": list(SHAPE),
            "model": f"score(x, sigma) = -(x - {MEAN}) / ({STD}^2 + sigma^2)", "cases": cases}
    (HERE / "score_sde_ve.json").write_text(json.dumps(meta) + "\n")
    print(f"{len(cases)} cases -> {HERE / 'score_sde_ve.json'}")


if __name__ == "__main__":
    main()
