#!/usr/bin/env python3
"""Records how diffusers' img2img pipelines start part-way through a sampler's schedule.

For each scheduler class and strength: `set_timesteps(n)`, then the pipelines' `get_timesteps` (the first
`int(n * strength)` steps are dropped, `set_begin_index(t_start * order)` where the class has it), then
`add_noise` (or a flow scheduler's `scale_noise`) of a clean sample at the first remaining timestep, then the
loop on an analytic model. Noise the steps draw is recorded (float32, indexed by the call of the whole
schedule, null where none was drawn). Each case is also run as StableDiffusionInpaintPipeline runs a plain
U-Net: after every call the known half of the sample (mask 0) is replaced by the clean sample noised to the
next call's timestep.

Run from the repository root with diffusers 0.36, torch and scipy (the test pipelines' environment):

    /work/venvs/pipelines/bin/python tests/data/goldens/img2img/gen.py
"""

import importlib
import json
import math
import pkgutil
from pathlib import Path

import diffusers
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SHAPE = (2, 1, 4, 4)
MODEL = "model_output(x, t) = 0.5 * x * cos(t / 1000) + 0.1 * sin(x + t / 500)"

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}

CASES = [
    ("ddim", "DDIMScheduler", {**SD, "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False}),
    ("ddim_eta1", "DDIMScheduler", {**SD, "steps_offset": 1, "clip_sample": False}, {"eta": 1.0}),
    ("ddpm", "DDPMScheduler", {**SD, "clip_sample": False}),
    ("pndm", "PNDMScheduler", {**SD, "steps_offset": 1, "skip_prk_steps": True, "set_alpha_to_one": False}),
    ("lcm", "LCMScheduler", {**SD, "original_inference_steps": 50}),
    ("euler", "EulerDiscreteScheduler", {**SD, "steps_offset": 1, "timestep_spacing": "leading"}),
    ("euler_karras", "EulerDiscreteScheduler", {**SD, "use_karras_sigmas": True}),
    ("euler_ancestral", "EulerAncestralDiscreteScheduler", {**SD, "steps_offset": 1, "timestep_spacing": "leading"}),
    ("heun", "HeunDiscreteScheduler", {**SD}),
    ("kdpm2", "KDPM2DiscreteScheduler", {**SD}),
    ("kdpm2_ancestral", "KDPM2AncestralDiscreteScheduler", {**SD}),
    ("lms", "LMSDiscreteScheduler", {**SD}),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", {**SD}),
    ("dpmpp_2m_karras", "DPMSolverMultistepScheduler", {**SD, "use_karras_sigmas": True}),
    ("dpmpp_2m_sde", "DPMSolverMultistepScheduler", {**SD, "algorithm_type": "sde-dpmsolver++"}),
    ("dpmpp_3m_v", "DPMSolverMultistepScheduler", {**SD, "solver_order": 3, "prediction_type": "v_prediction"}),
    ("dpmpp_2s", "DPMSolverSinglestepScheduler", {**SD}),
    ("unipc", "UniPCMultistepScheduler", {**SD}),
    ("deis", "DEISMultistepScheduler", {**SD}),
    ("edm_euler", "EDMEulerScheduler", {}),
    ("edm_dpmpp", "EDMDPMSolverMultistepScheduler", {}),
    ("flow_euler", "FlowMatchEulerDiscreteScheduler", {"shift": 3.0}),
    ("flow_heun", "FlowMatchHeunDiscreteScheduler", {"shift": 3.0}),
    ("dpmpp_2m_flow", "DPMSolverMultistepScheduler",
     {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "flow_prediction"}),
]
# UniPC with flow sigmas is left out: diffusers 0.36 rounds its timesteps otherwise than 0.42, which difflab
# follows (tests/data/goldens/flow).
STEPS = 10
STRENGTHS = [0.3, 0.75, 1.0]


def model(x, t):
    t = float(t)
    return 0.5 * x * math.cos(t / 1000.0) + 0.1 * torch.sin(x + t / 500.0)


class Recorder:
    """Stands in for randn_tensor in the scheduler modules: float32 draws, logged by call."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)
        self.call = None
        self.log = {}

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        n = torch.randn(tuple(shape), generator=self.g, dtype=torch.float32)
        assert self.call not in self.log, "two draws in one call"
        self.log[self.call] = n.clone()
        return n.to(dtype or torch.float32)


def patch(recorder):
    saved = []
    for info in pkgutil.iter_modules(diffusers.schedulers.__path__):
        if not info.name.startswith("scheduling_") or "flax" in info.name:
            continue
        try:
            m = importlib.import_module(f"diffusers.schedulers.{info.name}")
        except Exception:
            continue
        if hasattr(m, "randn_tensor"):
            saved.append((m, m.randn_tensor))
            m.randn_tensor = recorder
    return saved


def flat(t):
    return [float(v) for v in t.detach().to(torch.float64).reshape(-1).tolist()]


def get_timesteps(sched, n, strength):
    """The img2img pipelines' get_timesteps."""
    init_timestep = min(int(n * strength), n)
    t_start = int(max(n - init_timestep, 0))
    begin = t_start * sched.order
    timesteps = sched.timesteps[begin:]
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(begin)
    return timesteps, begin


def clean_config(cfg):
    out = {}
    for k, v in dict(cfg).items():
        if k.startswith("_"):
            continue
        if isinstance(v, float) and math.isinf(v):
            v = "-inf" if v < 0 else "inf"
        out[k] = v
    return out


def run(name, cls_name, config, kwargs, strength):
    case = loop(name, cls_name, config, kwargs, strength, mask=None)
    # Inpainting with a plain U-Net: after every call the known region (mask 0) is the clean sample noised to
    # the next call's timestep (the clean sample itself after the last), as StableDiffusionInpaintPipeline blends.
    mask = (torch.arange(SHAPE[-1]) % 2).to(torch.float64).expand(SHAPE)
    case["inpaint_mask"] = flat(mask)
    case["inpaint_final_sample"] = loop(name, cls_name, config, kwargs, strength, mask)["final_sample"]
    return case


def loop(name, cls_name, config, kwargs, strength, mask):
    sched = getattr(diffusers, cls_name)(**config)
    sched.set_timesteps(STEPS)
    all_timesteps = flat(sched.timesteps)
    timesteps, begin = get_timesteps(sched, STEPS, strength)
    g = torch.Generator().manual_seed(7)
    clean = torch.randn(SHAPE, generator=g, dtype=torch.float32).to(torch.float64)
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float32).to(torch.float64)
    t0 = timesteps[:1].repeat(SHAPE[0])
    if hasattr(sched, "scale_noise"):
        x = sched.scale_noise(clean, t0, noise)
    else:
        x = sched.add_noise(clean, noise, t0)
    noised = x.clone()
    rec = Recorder(1234)
    saved = patch(rec)
    try:
        for i, t in enumerate(timesteps):
            rec.call = begin + i
            xin = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
            x = sched.step(model(xin, t), t, x, **kwargs).prev_sample
            if mask is not None:
                known = clean
                if i < len(timesteps) - 1:
                    after = timesteps[i + 1 : i + 2]
                    known = sched.scale_noise(clean, after, noise) if hasattr(sched, "scale_noise") else sched.add_noise(clean, noise, after)
                x = (1 - mask) * known + mask * x
    finally:
        for m, f in saved:
            m.randn_tensor = f
    calls = len(all_timesteps)
    return {
        "name": f"{name}_s{strength}",
        "class": cls_name,
        "config": clean_config(sched.config),
        "step_kwargs": kwargs,
        "num_inference_steps": STEPS,
        "strength": strength,
        "order": sched.order,
        "begin": begin,
        "all_timesteps": all_timesteps,
        "timesteps": flat(timesteps),
        "shape": list(SHAPE),
        "clean": flat(clean),
        "noise": flat(noise),
        "noised": flat(noised),
        "step_noise": [flat(rec.log[i]) if i in rec.log else None for i in range(calls)],
        "final_sample": flat(x),
    }


def main():
    cases = []
    for case in CASES:
        name, cls_name, config = case[:3]
        kwargs = case[3] if len(case) > 3 else {}
        for strength in STRENGTHS:
            cases.append(run(name, cls_name, config, kwargs, strength))
    out = {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "model": MODEL,
        "dtype": "float64 (clean sample, noise and step noise drawn in float32)",
        "cases": cases,
    }
    (HERE / "img2img.json").write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
    print(f"{len(cases)} cases -> {HERE / 'img2img.json'}")


if __name__ == "__main__":
    main()
