#!/usr/bin/env python3
"""Trains the VAE encoder of the shipped digits-sd for img2img, against its shipped decoder.

digits-sd shipped without `vae_encoder/` (text-to-image needs none), and its training is not bit-reproducible
across machines, so retraining the whole pipeline would change its decoder. Instead this script rebuilds the
shipped decoder in PyTorch from models/digits-sd/vae_decoder/model.onnx (the initializers Optimum's export
renamed — GroupNorm scales and shifts, attention projections — are matched to their modules in execution order
and checked: the rebuilt decoder equals the ONNX one on random latents), freezes it, and trains a fresh encoder
(AutoencoderKL's encoder and quant_conv, the config the decoder ships with) on the same 9,000 training digits with
the VAE's own loss: per-pixel MSE of the decoded sample + kl_weight · KL / 3072. The encoder is exported as
Optimum exports one (`sample` → `latent_parameters`, mean and log-variance on channels) into
models/digits-sd/vae_encoder/ with the decoder's config.json, checked against PyTorch, and its held-out
reconstruction through the shipped decoder is written to models/figures_vae_encoder.json.

    /work/venvs/pipelines/bin/python models/train_vae_encoder.py     # the models' environment, ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
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


def train_encoder(vae, train_x, args):
    for p in list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters()):
        p.requires_grad_(False)
    params = list(vae.encoder.parameters()) + list(vae.quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    n_pix = 3 * tc.IMAGE * tc.IMAGE
    perm, pos = torch.randperm(len(train_x), generator=gen), 0
    clock = Clock()
    vae.train()
    for step in range(1, args.steps + 1):
        if pos + args.batch > len(perm):
            perm, pos = torch.randperm(len(train_x), generator=gen), 0
        x = train_x[perm[pos:pos + args.batch]]
        pos += args.batch
        for group in opt.param_groups:
            group["lr"] = tc.lr_at(step - 1, args.lr, args.warmup, args.steps)
        posterior = vae.encode(x).latent_dist
        mse = F.mse_loss(vae.decode(posterior.sample(generator=gen)).sample, x)
        kl = posterior.kl().mean()
        loss = mse + args.kl_weight * kl / n_pix
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps:
            log(f"  encoder step {step}/{args.steps}: mse {mse.item():.5f} kl {kl.item():.1f} "
                f"({clock.wall() / step:.3f} s/step wall)")
    vae.eval()
    return clock.record()


@torch.inference_mode()
def reconstruction(vae, held_x, held_y, extractor):
    """Held-out digits encoded (posterior mean) and decoded by the shipped decoder, as the VAE's own figures."""
    recon = tc.decode_batched(vae, tc.encode_batched(vae, held_x)[0])
    grey_r = ((recon.mean(1) + 1) / 2).clamp(0, 1)
    grey_x = (held_x[:, 0] + 1) / 2
    mse = float(F.mse_loss(grey_r, grey_x))
    _, logits_r = extractor(tc.sd_to_classifier(recon))
    return {"images": len(held_x), "mse_32x32": round(mse, 6), "psnr_db_32x32": round(10 * math.log10(1.0 / mse), 2),
            "classifier_accuracy_reconstructions": round(float((logits_r.argmax(1) == held_y.numpy()).mean()), 4)}


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
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "difflab" / "mnist")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    images, labels = mnist.load_digits(mnist.fetch_mnist(args.cache))
    train_idx, held_idx = mnist.make_split(len(images))
    train_x, held_x = tc.to_sd_space(images[train_idx]), tc.to_sd_space(images[held_idx])
    held_y = torch.from_numpy(labels[held_idx])
    extractor = mnist.FeatureExtractor(MODELS_DIR / "mnist16-features.onnx", args.threads)
    vae, config, decoder_diff = shipped_vae(args.seed)
    timing = train_encoder(vae, train_x, args)
    figures = {
        "encoder": "AutoencoderKL encoder + quant_conv, trained against the shipped digits-sd decoder (frozen)",
        "params": sum(p.numel() for m in (vae.encoder, vae.quant_conv) for p in m.parameters()),
        "steps": args.steps, "batch_size": args.batch, "lr": args.lr, "kl_weight": args.kl_weight, "seed": args.seed,
        "rebuilt_decoder_vs_onnx_max_abs_diff": decoder_diff,
        **{f"train_{k}": v for k, v in timing.items()},
        "heldout_reconstruction": reconstruction(vae, held_x, held_y, extractor),
        "onnx": export(vae, config, args),
    }
    (MODELS_DIR / "figures_vae_encoder.json").write_text(json.dumps(figures, indent=1) + "\n")
    log(f"encoder: {json.dumps(figures)}")


if __name__ == "__main__":
    main()
