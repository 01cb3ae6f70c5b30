"""difflab against the loop users run today: diffusers' schedulers driving Python onnxruntime (the loop
Optimum's ONNX pipelines use), and the floor: ONNX Runtime's session.run alone, NFE times.

Same model, seeds, batch, steps and thread count for all three; every figure is a ratio to the floor
measured in the same run.

    python -m venv /tmp/bench && . /tmp/bench/bin/activate
    pip install -r benches/requirements.txt
    cargo build --release
    python benches/sampling_vs_python.py [--threads 2] [--repeats 5]
"""
import argparse
import json
import pathlib
import subprocess
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "mnist16-unet.onnx"
CONFIG = ROOT / "models" / "scheduler_config.json"
DIFFLAB = ROOT / "target" / "release" / "difflab"

CASES = [("ddim", 50), ("dpm++2m", 20)]


def session(threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(MODEL), opts, providers=["CPUExecutionProvider"])


def scheduler(name):
    config = json.loads(CONFIG.read_text())
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    return DPMSolverMultistepScheduler.from_config(config)


def python_loop(sess, name, steps, batch):
    sched = scheduler(name)
    sched.set_timesteps(steps)
    latents = torch.randn((batch, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for t in sched.timesteps:
        timestep = np.full((batch,), int(t), dtype=np.int64)
        out = sess.run(None, {"sample": latents.numpy(), "timestep": timestep})[0]
        latents = sched.step(torch.from_numpy(out), t, latents).prev_sample
    return time.perf_counter() - start


def floor(sess, steps, batch):
    x = np.random.default_rng(0).standard_normal((batch, 1, 16, 16), dtype=np.float32)
    t = np.full((batch,), 500, dtype=np.int64)
    start = time.perf_counter()
    for _ in range(steps):
        sess.run(None, {"sample": x, "timestep": t})
    return time.perf_counter() - start


def difflab(samplers, batch, threads, out):
    """Runs difflab on a one-off experiment; returns the run's wall time from its results."""
    lines = [
        "[model]",
        f'path = "{MODEL}"',
        'providers = ["cpu"]',
        f"threads = {threads}",
        "[sampling]",
        f"seeds = {batch}",
        f"batch = {batch * len(samplers)}",
    ]
    for name, steps in samplers:
        lines += ["[[sampler]]", f'name = "{name}"', f"steps = {steps}"]
    path = pathlib.Path(out) / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    # A fresh output folder each time: results.json keeps the cells of earlier runs.
    results_dir = pathlib.Path(tempfile.mkdtemp(dir=out))
    start = time.perf_counter()
    subprocess.run(
        [str(DIFFLAB), "run", str(path), "--force", "--out", str(results_dir)],
        check=True,
        capture_output=True,
    )
    total = time.perf_counter() - start
    results = json.loads((results_dir / "results.json").read_text())
    return sum(c["wall_s"] for c in results["cells"]), total


def best(f, repeats):
    return min(f() for _ in range(repeats))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    sess = session(args.threads)
    floor(sess, 20, 1)  # warm-up
    print(f"model {MODEL.name}, {args.threads} threads, best of {args.repeats}; ratios to the floor (session.run x NFE)")
    print(f"{'case':<22}{'batch':>6}{'floor ms':>10}{'python':>9}{'difflab':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (1, 64):
            for name, steps in CASES:
                fl = best(lambda: floor(sess, steps, batch), args.repeats)
                py = best(lambda: python_loop(sess, name, steps, batch), args.repeats)
                dl = best(lambda: difflab([(name, steps)], batch, args.threads, tmp)[0], args.repeats)
                print(f"{name + ' ' + str(steps):<22}{batch:>6}{fl * 1e3:>10.2f}{py / fl:>9.3f}{dl / fl:>9.3f}")
            trio = [("ddim", 50), ("dpm++2m", 20), ("dpm++2m-karras", 20)]
            floors = sum(best(lambda: floor(sess, s, batch), args.repeats) for _, s in trio)
            dl = best(lambda: difflab(trio, batch, args.threads, tmp)[0], args.repeats)
            print(f"{'3 samplers side by side':<22}{batch:>6}{floors * 1e3:>10.2f}{'':>9}{dl / floors:>9.3f}")


if __name__ == "__main__":
    main()
