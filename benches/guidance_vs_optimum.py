"""difflab against Optimum's ORTStableDiffusionPipeline on the checked-in SD-1-style export
(tests/data/pipelines/sd1) — or ORTStableDiffusion3Pipeline on the SD3 one (`--pipeline sd3`) — and the floor
under both: ONNX Runtime's session.run of the U-Net (transformer) alone.

One cell, as users run it: DDIM 10 steps (SD3: its own flow Euler, T5 at 32 tokens), guidance 7.5 (the CFG batch
[uncond; cond]), negative prompt "blurry", one prompt × 4 seeds, CPU, one intra-op thread everywhere. Each side's
time is its denoising loop:
  - Optimum: from the scheduler's set_timesteps (after the prompts are encoded) to the last step's callback;
  - difflab: the cell's wall_s in results.json (model calls, CFG, sampler steps), `difflab run --force`;
  - floor: 10 session.run calls of the U-Net on the CFG batch (8 items), inputs built once.
Each side opens its sessions fresh per round and pays its first run's warm-up, as a user's run does.
The sides alternate in rounds (this machine's speed drifts); printed: median ratio to the floor, min-max.

    /work/venvs/pipelines/bin/python benches/guidance_vs_optimum.py [--rounds 7] [--pipeline sd1|sd3]

(the environment of tests/data/pipelines/requirements.txt; `cargo build --release` first).
"""
import argparse
import json
import os
import pathlib
import subprocess
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "tests" / "data" / "pipelines"
EXPORT = PIPELINES / "sd1"
DIFFLAB = ROOT / "target" / "release" / "difflab"
STEPS, GUIDANCE, SEEDS = 10, 7.5, 4
PROMPT, NEGATIVE = "a cat", "blurry"
# SD3's T5 tokens per prompt, the same on both sides.
T5_TOKENS = 32


def session_options():
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return opts


def floor():
    batch = 2 * SEEDS
    if EXPORT.name == "sd3":
        model = EXPORT / "transformer" / "model.onnx"
        feed = {
            "hidden_states": np.full((batch, 16, 8, 8), 0.1, dtype=np.float32),
            "timestep": np.full((batch,), 501.0, dtype=np.float32),
            "encoder_hidden_states": np.zeros((batch, 77 + T5_TOKENS, 24), dtype=np.float32),
            "pooled_projections": np.zeros((batch, 20), dtype=np.float32),
        }
    else:
        model = EXPORT / "unet" / "model.onnx"
        feed = {
            "sample": np.full((batch, 4, 8, 8), 0.1, dtype=np.float32),
            "timestep": np.array(501.0, dtype=np.float32),
            "encoder_hidden_states": np.zeros((batch, 77, 8), dtype=np.float32),
        }
    sess = ort.InferenceSession(str(model), session_options(), providers=["CPUExecutionProvider"])
    start = time.perf_counter()
    for _ in range(STEPS):
        sess.run(None, feed)
    return time.perf_counter() - start


def optimum():
    from diffusers import DDIMScheduler
    from optimum.onnxruntime import ORTStableDiffusion3Pipeline, ORTStableDiffusionPipeline

    sd3 = EXPORT.name == "sd3"
    cls = ORTStableDiffusion3Pipeline if sd3 else ORTStableDiffusionPipeline
    pipe = cls.from_pretrained(str(EXPORT), provider="CPUExecutionProvider", session_options=session_options())
    if not sd3:
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    marks = {}
    set_timesteps = pipe.scheduler.set_timesteps

    def timed_set_timesteps(*args, **kwargs):
        marks["start"] = time.perf_counter()
        return set_timesteps(*args, **kwargs)

    def on_step_end(_pipe, _i, _t, kwargs):
        marks["end"] = time.perf_counter()
        return kwargs

    pipe.scheduler.set_timesteps = timed_set_timesteps
    channels = 16 if sd3 else 4
    latents = torch.randn((SEEDS, channels, 8, 8), generator=torch.Generator().manual_seed(0))
    extra = {"max_sequence_length": T5_TOKENS, "height": 64, "width": 64} if sd3 else {}
    pipe(prompt=[PROMPT] * SEEDS, negative_prompt=[NEGATIVE] * SEEDS, num_inference_steps=STEPS,
         guidance_scale=GUIDANCE, latents=latents, output_type="np", callback_on_step_end=on_step_end, **extra)
    return marks["end"] - marks["start"]


def difflab(work):
    exp = work / "bench.toml"
    sd3 = EXPORT.name == "sd3"
    t5 = f"max_sequence_length = {T5_TOKENS}\n" if sd3 else ""
    sampler = "euler" if sd3 else "ddim"
    exp.write_text(
        f'output = "out"\n[model]\npath = "{EXPORT}"\nproviders = ["cpu"]\nthreads = 1\n'
        f'[conditioning]\nprompts = ["{PROMPT}"]\nnegative_prompt = "{NEGATIVE}"\n{t5}'
        f'[sampling]\nseeds = {SEEDS}\n[[sampler]]\nname = "{sampler}"\nsteps = {STEPS}\nguidance = {GUIDANCE}\n')
    subprocess.run([str(DIFFLAB), "run", str(exp), "--force"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = json.loads((work / "out" / "results.json").read_text())["cells"]
    return sum(c["wall_s"] for c in cells)


def summary(name, ratios):
    r = sorted(ratios)
    print(f"{name} / ONNX Runtime floor = {r[len(r) // 2]:.3f} (min {r[0]:.3f}, max {r[-1]:.3f}, "
          f"{len(r)} rounds)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pipeline", choices=["sd1", "sd3"], default="sd1")
    args = parser.parse_args()
    global EXPORT
    EXPORT = PIPELINES / args.pipeline
    torch.set_num_threads(1)
    if not DIFFLAB.is_file():
        raise SystemExit(f"{DIFFLAB} is missing: run `cargo build --release` first")
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        floor(), optimum(), difflab(work)  # first-use costs (page cache, imports) outside the rounds
        ours, theirs, ratio = [], [], []
        for k in range(args.rounds):
            base = floor()
            o = optimum()
            d = difflab(work)
            print(f"round {k + 1}: floor {base * 1e3:.2f} ms, Optimum {o * 1e3:.2f} ms, "
                  f"difflab {d * 1e3:.2f} ms", flush=True)
            theirs.append(o / base)
            ours.append(d / base)
            ratio.append(d / o)
    summary(f"Optimum on {EXPORT.name}", theirs)
    summary("difflab", ours)
    r = sorted(ratio)
    print(f"difflab / Optimum = {r[len(r) // 2]:.3f} (min {r[0]:.3f}, max {r[-1]:.3f})")


if __name__ == "__main__":
    main()
