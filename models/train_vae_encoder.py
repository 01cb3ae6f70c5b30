#!/usr/bin/env python3
"""Trains the VAE encoder of the shipped digits-sd for img2img, against its shipped decoder and in its U-Net's code.

digits-sd shipped without `vae_encoder/` (text-to-image needs none), and its training is not bit-reproducible
across machines, so retraining the whole pipeline would change its decoder. Instead this script rebuilds the
shipped decoder in PyTorch from models/digits-sd/vae_decoder/model.onnx (the initializers Optimum's export
renamed — GroupNorm scales and shifts, attention projections — are matched to their modules in execution order
and checked: the rebuilt decoder equals the ONNX one on random latents), freezes it, and trains a fresh encoder
(AutoencoderKL's encoder and quant_conv, the config the decoder ships with) on the same 9,000 training digits with
the VAE's own loss: per-pixel MSE of the decoded sample + kl_weight · KL / 3072.

That loss alone is not enough: the decoder draws many latents alike, so an encoder trained against it finds *a*
code that reconstructs well, not the one the U-Net learned (with the first encoder trained so, re-encoded U-Net
samples landed 1.1× their RMS away from where they started, and the U-Net's noise-prediction loss on encoded
held-out digits was 0.75 against 0.10 on its own samples: img2img started from latents it had never seen).
So the shipped U-Net is rebuilt as well (train_controlnet.py's `shipped_unet`), draws 4,000 latents z for
"a handwritten N" (DDIM 20, g = 4, seeded), and a latent-cycle term, cycle_weight · MSE(scaled encoder mean of
D(z), z), ties the encoder to the U-Net's code (weight 0.1: beyond it the cycle barely improves and
reconstruction starts to pay). The encoder is exported as Optimum exports one (`sample` →
`latent_parameters`, mean and log-variance on channels) into models/digits-sd/vae_encoder/ with the decoder's
config.json and checked against PyTorch. models/figures_vae_encoder.json gets, for the new encoder and for the
one it replaces (measured first): held-out reconstruction through the shipped decoder, and train_controlnet.py's
`latent_code_check` on the 1,000 held-out digits (re-encoded U-Net samples, the U-Net's loss on encoded digits
beside its loss on its own samples, per-channel means).

    /work/venvs/pipelines/bin/python models/train_vae_encoder.py     # ~3 min on 2 cores, 1.4 of them training
                                                                     # (--max-minutes caps the training)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MODELS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(MODELS_DIR))
import train as mnist  # noqa: E402
import train_conditional as tc  # noqa: E402
import train_controlnet as tcn  # noqa: E402  (the shipped U-Net rebuilt in PyTorch, and its latent-code check)
from train import Clock, log  # noqa: E402

SD_DIR = MODELS_DIR / "digits-sd"


def shipped_vae(seed: int):
    """AutoencoderKL with the shipped decoder's weights (checked against the ONNX decoder) and a fresh encoder
    (PyTorch's default initialisation under `seed`)."""
    import onnx
    import onnxruntime as ort
    from diffusers import AutoencoderKL
    from onnx import numpy_helper

    path = SD_DIR / "vae_decoder" / "model.onnx"
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    renamed = iter([i.name for i in graph.initializer if i.name.startswith("onnx::")])
    config = json.loads((SD_DIR / "vae_decoder" / "config.json").read_text())
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_config(config).eval()
    names = {module: name for name, module in vae.named_modules()}
    order = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for n, m in vae.named_modules()
             if n.startswith(("decoder", "post_quant")) and isinstance(m, (torch.nn.GroupNorm, torch.nn.Linear))]
    with torch.no_grad():
        vae.decode(torch.zeros(1, 4, 8, 8))
    for h in hooks:
        h.remove()
    state = {k: torch.from_numpy(v.copy()) for k, v in inits.items() if not k.startswith("onnx::")}
    for module in order:  # the export's renamed initializers come in the order their modules run
        name = names[module]
        if name + ".weight" in inits:
            continue
        if isinstance(module, torch.nn.GroupNorm):  # InstanceNormalization, then Mul (scale) and Add (shift)
            state[name + ".weight"] = torch.from_numpy(inits[next(renamed)].reshape(-1).copy())
            state[name + ".bias"] = torch.from_numpy(inits[next(renamed)].reshape(-1).copy())
        else:  # a Linear's weight as a MatMul's, transposed
            state[name + ".weight"] = torch.from_numpy(inits[next(renamed)].T.copy())
    assert next(renamed, None) is None, "an initializer of the decoder was not matched"
    missing = vae.load_state_dict(state, strict=False).missing_keys
    assert not [k for k in missing if k.startswith(("decoder", "post_quant"))], missing
    z = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = vae.decode(z).sample.numpy()
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"latent_sample": z.numpy()})[0]
    diff = float(np.abs(ours - theirs).max())
    assert diff < 1e-4, f"the rebuilt decoder differs from the shipped one by {diff}"
    log(f"decoder rebuilt from {path.relative_to(MODELS_DIR.parent)}: max |torch - onnx| {diff:.1e}")
    return vae, config, diff


@torch.inference_mode()
def unet_latents(unet, captions: torch.Tensor, empty_row: int, args) -> torch.Tensor:
    """Scaled latents [N,4,8,8] drawn by the shipped U-Net: "a handwritten N" (N = i % 10) from seed
    args.seed + 10000 + i, DDIM under the shipped scheduler config, classifier-free guidance."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(tcn.sd_config("scheduler"))
    sched.set_timesteps(args.cycle_steps)
    z = tc.eval_latents(args.cycle_latents, args.seed + 10000)
    y = torch.arange(len(z)) % 10
    hidden = torch.stack([captions[empty_row].expand(len(z), -1, -1), captions[y * len(tc.TEMPLATES)]])
    out = []
    for i in range(0, len(z), 250):
        x, h = z[i:i + 250], hidden[:, i:i + 250].flatten(0, 1)  # unconditional half first, as diffusers
        for t in sched.timesteps:
            u, c = unet(torch.cat([x, x]), t, encoder_hidden_states=h).sample.chunk(2)
            x = sched.step(u + args.cycle_guidance * (c - u), t, x).prev_sample
        out.append(x)
    return torch.cat(out)


def cycle_pairs(vae, unet, captions, empty_row: int, sf: float, args):
    """U-Net latents z (scaled) and their images D(z), computed once: the decoder is frozen."""
    clock = Clock()
    z = unet_latents(unet, captions, empty_row, args)
    # the images an img2img user would hand in: decoded samples, clipped to the image range
    x = tc.decode_batched(vae, z / sf).clamp(-1, 1)
    figures = {"latents": len(z), "prompts": "a handwritten N, N = i % 10", "seeds": f"{args.seed + 10000} + i",
               "sampler": f"DDIMScheduler (shipped config), {args.cycle_steps} steps, rebuilt PyTorch U-Net",
               "guidance": args.cycle_guidance, "per_channel_mean": [round(v, 3) for v in z.mean((0, 2, 3)).tolist()],
               "rms": round(float(z.pow(2).mean().sqrt()), 4), **clock.record()}
    log(f"U-Net latents for the cycle term: {json.dumps(figures)}")
    return z, x, figures


def batches(n: int, size: int, gen):
    """Index batches of `size`, reshuffled whenever fewer than `size` items are left."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - size + 1, size):
            yield perm[i:i + size]


def train_encoder(vae, train_x, cycle_z, cycle_x, sf: float, args):
    """The VAE's loss on digits, plus cycle_weight · MSE between the encoder's scaled mean of D(z) and z for
    U-Net latents z: the decoder alone cannot tell apart latents it decodes alike, the U-Net can."""
    for p in list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters()):
        p.requires_grad_(False)
    params = list(vae.encoder.parameters()) + list(vae.quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    n_pix = 3 * tc.IMAGE * tc.IMAGE
    digits, cycles = batches(len(train_x), args.batch, gen), batches(len(cycle_z), args.batch, gen)
    clock, step, stopped_by = Clock(), 0, "steps"
    vae.train()
    while step < args.steps:
        if clock.wall() >= 60 * args.max_minutes:
            stopped_by = "time"
            break
        step += 1
        for group in opt.param_groups:
            group["lr"] = tc.lr_at(step - 1, args.lr, args.warmup, args.steps)
        x, idx = train_x[next(digits)], next(cycles)
        posterior = vae.encode(x).latent_dist
        mse = F.mse_loss(vae.decode(posterior.sample(generator=gen)).sample, x)
        kl = posterior.kl().mean()
        cycle = F.mse_loss(vae.encode(cycle_x[idx]).latent_dist.mean * sf, cycle_z[idx])
        loss = mse + args.kl_weight * kl / n_pix + args.cycle_weight * cycle
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps:
            log(f"  encoder step {step}/{args.steps}: mse {mse.item():.5f} kl {kl.item():.1f} "
                f"cycle {cycle.item():.4f} ({clock.wall() / step:.3f} s/step wall)")
    vae.eval()
    log(f"  stopped by {stopped_by} after {step} steps")
    return {"steps_run": step, "stopped_by": stopped_by, **clock.record()}


@torch.inference_mode()
def reconstruction(vae, mean, held_x, held_y, extractor):
    """Held-out digits' posterior means `mean` decoded by the shipped decoder, as the VAE's own figures."""
    recon = tc.decode_batched(vae, mean)
    grey_r = ((recon.mean(1) + 1) / 2).clamp(0, 1)
    grey_x = (held_x[:, 0] + 1) / 2
    mse = float(F.mse_loss(grey_r, grey_x))
    _, logits_r = extractor(tc.sd_to_classifier(recon))
    return {"images": len(held_x), "mse_32x32": round(mse, 6), "psnr_db_32x32": round(10 * math.log10(1.0 / mse), 2),
            "classifier_accuracy_reconstructions": round(float((logits_r.argmax(1) == held_y.numpy()).mean()), 4)}


def shipped_encoder_figures(vae, unet, captions, empty_row, held_x, held_y, extractor, args) -> dict:
    """The encoder in vae_encoder/model.onnx now, through ONNX Runtime: reconstruction, and train_controlnet.py's
    latent-code check on all held-out digits (the U-Net's samples and their t and noise fixed by args.seed)."""
    path = SD_DIR / "vae_encoder" / "model.onnx"
    mean = tcn.encode_latents(held_x, args.threads)[0]
    data = {"captions": captions, "empty_row": empty_row, "held_mean": mean, "held_labels": held_y,
            "scaling_factor": tcn.sd_config("vae_decoder")["scaling_factor"]}
    return {"onnx_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "heldout_reconstruction": reconstruction(vae, mean, held_x, held_y, extractor),
            "latent_code_check": tcn.latent_code_check(unet, data, args, n=len(held_x)),
            # 1 for the encoder the U-Net learned from: that is how the scaling factor was chosen
            "heldout_scaled_latent_std": round(float((mean * data["scaling_factor"]).std()), 4)}


class Encoder(torch.nn.Module):
    """What Optimum's vae_encoder export computes: the posterior's parameters (mean and log-variance)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        return self.vae.encode(sample).latent_dist.parameters


def export(vae, config, args) -> dict:
    import onnxruntime as ort

    dst = SD_DIR / "vae_encoder"
    dst.mkdir(exist_ok=True)
    path = dst / "model.onnx"
    x = torch.rand(2, 3, tc.IMAGE, tc.IMAGE, generator=torch.Generator().manual_seed(args.seed + 2)) * 2 - 1
    torch.onnx.export(Encoder(vae), (x,), str(path), input_names=["sample"], output_names=["latent_parameters"],
                      dynamic_axes={"sample": {0: "batch_size", 2: "sample_height", 3: "sample_width"},
                                    "latent_parameters": {0: "batch_size"}},
                      opset_version=tc.ONNX_OPSET, do_constant_folding=True, dynamo=False)
    shutil.copyfile(SD_DIR / "vae_decoder" / "config.json", dst / "config.json")
    x = torch.rand(16, 3, tc.IMAGE, tc.IMAGE, generator=torch.Generator().manual_seed(args.seed + 3)) * 2 - 1
    with torch.no_grad():
        ours = vae.encode(x).latent_dist.parameters.numpy()
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"sample": x.numpy()})[0]
    return {"onnx_bytes": path.stat().st_size, "onnx_vs_torch_max_abs_diff": float(np.abs(ours - theirs).max())}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--max-minutes", type=float, default=5.0, help="training stops here if --steps take longer")
    p.add_argument("--batch", type=int, default=64, help="digits a step, and as many U-Net latents")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--cycle-weight", type=float, default=0.1, help="of the latent-cycle MSE (scaled latents)")
    p.add_argument("--cycle-latents", type=int, default=4000)
    p.add_argument("--cycle-steps", type=int, default=20)
    p.add_argument("--cycle-guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "difflab" / "mnist")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    total = Clock()
    images, labels = mnist.load_digits(mnist.fetch_mnist(args.cache))
    train_idx, held_idx = mnist.make_split(len(images))
    train_x, held_x = tc.to_sd_space(images[train_idx]), tc.to_sd_space(images[held_idx])
    held_y = torch.from_numpy(labels[held_idx])
    extractor = mnist.FeatureExtractor(MODELS_DIR / "mnist16-features.onnx", args.threads)
    vae, config, decoder_diff = shipped_vae(args.seed)
    unet, rebuild = tcn.shipped_unet(args.threads)
    captions, empty_row = tcn.caption_table(args.threads)
    before = shipped_encoder_figures(vae, unet, captions, empty_row, held_x, held_y, extractor, args)
    log(f"encoder found in vae_encoder/: {json.dumps(before)}")
    sf = config["scaling_factor"]
    cycle_z, cycle_x, sampling = cycle_pairs(vae, unet, captions, empty_row, sf, args)
    timing = train_encoder(vae, train_x, cycle_z, cycle_x, sf, args)
    onnx_figures = export(vae, config, args)
    after = shipped_encoder_figures(vae, unet, captions, empty_row, held_x, held_y, extractor, args)
    figures = {
        "encoder": "AutoencoderKL encoder + quant_conv, trained against the shipped digits-sd decoder (frozen), "
                   "with a latent-cycle term towards the shipped U-Net's latent code",
        "params": sum(p.numel() for m in (vae.encoder, vae.quant_conv) for p in m.parameters()),
        "steps": args.steps, "max_minutes": args.max_minutes, "batch_size": args.batch, "lr": args.lr,
        "kl_weight": args.kl_weight, "cycle_weight": args.cycle_weight, "seed": args.seed,
        "rebuilt_decoder_vs_onnx_max_abs_diff": decoder_diff, **rebuild,
        "cycle_latents": sampling,
        **{f"train_{k}": v for k, v in timing.items()},
        **{k: v for k, v in after.items() if k != "onnx_sha256"},
        "onnx": {**onnx_figures, "sha256": after["onnx_sha256"]},
        "previous_encoder": before,
        **{f"script_{k}": v for k, v in total.record().items()},
    }
    (MODELS_DIR / "figures_vae_encoder.json").write_text(json.dumps(figures, indent=1) + "\n")
    log(f"encoder: {json.dumps(figures)}")


if __name__ == "__main__":
    main()
