#!/usr/bin/env python3
"""Builds sd1-inpaint/, a tiny StableDiffusionInpaintPipeline with a 9-channel U-Net (latents, the mask and the
masked image's latents on channels, as stable-diffusion-inpainting's), exports it with Optimum (task "inpainting")
and writes ORTStableDiffusionInpaintPipeline's references.

The text encoder, tokenizer, VAE and scheduler are sd1's, rebuilt by make.py's own functions from the same seeds
(so their exported files are byte for byte sd1's, which git stores once); the U-Net is sd1's config with
`in_channels = 9` and its own random weights. References: one prompt, the start image and mask of
make_img2img.py, per seed under `torch.Generator().manual_seed(seed)` (the image's VAE sample unless the strength
is 1, the noise, then the masked image's VAE sample), final latents and images, in sd1-inpaint/reference/inpaint/.

Run from the repository root, in the test pipelines' environment (about 20 s):

    /work/venvs/pipelines/bin/python tests/data/pipelines/make_inpaint.py
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make  # noqa: E402
import make_img2img  # noqa: E402

NAME = "sd1-inpaint"
CASES = [("shipped", 1.0), ("ddim", 1.0), ("dpmpp_2m", 0.75), ("euler", 0.6)]


def build(work):
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    make.write_clip_vocab(work / "clip-vocab")
    tower_l, _, _ = make.text_encoders()
    src = make.build_sd("sd1", work, work / "clip-vocab", False, tower_l)
    pipe = StableDiffusionInpaintPipeline.from_pretrained(src, safety_checker=None, requires_safety_checker=False)
    make.seeded(501)
    unet = UNet2DConditionModel.from_config({**pipe.unet.config, "in_channels": 9})
    pipe.register_modules(unet=unet)
    pipe.save_pretrained(work / NAME, safe_serialization=True)
    return work / NAME


def export(src, dst):
    from optimum.exporters.onnx import main_export

    if dst.exists():
        shutil.rmtree(dst)
    here = os.getcwd()
    os.chdir(src.parent)
    try:
        main_export(model_name_or_path=src.name, output=str(dst), task="inpainting", library_name="diffusers",
                    device="cpu", do_validation=True)
    finally:
        os.chdir(here)
    for p in dst.rglob("tokenizer.json"):
        p.unlink()


def main():
    from optimum.onnxruntime import ORTStableDiffusionInpaintPipeline

    work = Path(tempfile.mkdtemp(prefix="difflab-inpaint-"))
    try:
        export(build(work), HERE / NAME)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    make_img2img.references(NAME, ORTStableDiffusionInpaintPipeline, CASES, "inpaint")
    print(json.dumps({str(p.relative_to(HERE)): p.stat().st_size for p in sorted((HERE / NAME).rglob("*.onnx"))}))


if __name__ == "__main__":
    main()
