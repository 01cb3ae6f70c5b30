#!/usr/bin/env python3
"""img2img and inpainting references: Optimum's ORTStableDiffusionImg2ImgPipeline / ORTStableDiffusionXLImg2ImgPipeline
and ORTStableDiffusionInpaintPipeline (a plain 4-channel U-Net: the known region blended back after every step) on
the test pipelines make.py and make_flow.py exported (sd1/, sdxl/, sd3/, flux/; FLUX through the same ORT wrapping of
diffusers' FluxImg2ImgPipeline, which Optimum lacks), from one start image (and one mask), per seed.

Each run is one prompt and one image under `torch.Generator().manual_seed(seed)`, so the generator's draws are the
VAE encoder's sample of the image's latent distribution, then the noise added at the strength's first timestep:
a seed alone reproduces the image. Written to <pipeline>/reference/img2img/: `start.png` (64×64), and per case the
final latents (before the VAE, [seeds, 4, 8, 8]) and the images ([seeds, 64, 64, 3] in [0, 1]), listed in
img2img.json; the inpainting runs likewise in <pipeline>/reference/inpaint/ with `mask.png` (white repaints).

Run from the repository root, after make.py, in the same environment (about 10 s):

    /work/venvs/pipelines/bin/python tests/data/pipelines/make_img2img.py
"""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

HERE = Path(__file__).resolve().parent
PROMPT = "a red circle"
STEPS = 10
GUIDANCE = 7.5
SEEDS = [0, 1]


def start_image():
    """A 64×64 RGB image: a blue-to-yellow gradient with a red disc, drawn without antialiasing."""
    x = np.linspace(0, 1, 64, dtype=np.float32)
    rgb = np.stack([np.tile(x, (64, 1)), np.tile(x[:, None], (1, 64)), 1 - np.tile(x, (64, 1))], axis=-1)
    image = Image.fromarray((rgb * 255).round().astype(np.uint8))
    ImageDraw.Draw(image).ellipse((16, 20, 44, 48), fill=(220, 30, 30))
    return image


def mask_image():
    """A 64×64 mask: white (repaint) over the disc's right half and a band below it, black elsewhere."""
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((30, 16, 50, 56), fill=255)
    return mask


def schedulers(shipped):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    return {
        "shipped": None,
        "ddim": DDIMScheduler.from_config(shipped, clip_sample=False, set_alpha_to_one=False),
        "dpmpp_2m": DPMSolverMultistepScheduler.from_config(shipped, algorithm_type="dpmsolver++", solver_order=2),
        "euler": EulerDiscreteScheduler.from_config(shipped),
    }


def references(name, cls, cases, kind="img2img", **call_kwargs):
    folder = HERE / name
    out = folder / "reference" / kind
    out.mkdir(parents=True, exist_ok=True)
    image = start_image()
    image.save(out / "start.png")
    extra = {}
    if kind == "inpaint":
        mask_image().save(out / "mask.png")
        extra["mask_image"] = mask_image()
    pipe = cls.from_pretrained(folder, provider="CPUExecutionProvider")
    shipped = pipe.scheduler
    listed = []
    for sched_name, strength in cases:
        pipe.scheduler = schedulers(shipped.config)[sched_name] or shipped
        latents, images = [], []
        for seed in SEEDS:
            finals = {}

            def grab(p, i, t, kw):
                finals["latents"] = kw["latents"].detach().clone()
                return kw

            result = pipe(PROMPT, image=image, strength=strength, **extra, **call_kwargs, num_inference_steps=STEPS,
                          guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(seed), output_type="np",
                          callback_on_step_end=grab, callback_on_step_end_tensor_inputs=["latents"])
            final = finals["latents"]
            if final.dim() == 3:  # FLUX packs its latents 2×2 into tokens: unpacked, as difflab writes them
                final = pipe._unpack_latents(final, 64, 64, pipe.vae_scale_factor)
            latents.append(final.numpy()[0])
            images.append(result.images[0])
        case = f"{sched_name}_s{strength}"
        np.save(out / f"{case}_final_latents.npy", np.stack(latents).astype(np.float32))
        np.save(out / f"{case}_images.npy", np.stack(images).astype(np.float32))
        listed.append({"name": case, "scheduler": type(pipe.scheduler).__name__, "strength": strength,
                       "final_latents": f"{case}_final_latents.npy", "images": f"{case}_images.npy"})
    meta = {"pipeline": cls.__name__, "prompt": PROMPT, **call_kwargs, "steps": STEPS, "guidance_scale": GUIDANCE, "seeds": SEEDS,
            "start_image": "start.png", **({"mask": "mask.png"} if extra else {}), "generator": "torch.Generator().manual_seed(seed), one run per seed",
            "cases": listed}
    (out / f"{kind}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: {len(listed)} cases -> {out}")


def main():
    from optimum.onnxruntime import (
        ORTStableDiffusionImg2ImgPipeline,
        ORTStableDiffusionInpaintPipeline,
        ORTStableDiffusionXLImg2ImgPipeline,
    )

    references("sd1", ORTStableDiffusionImg2ImgPipeline,
               [("shipped", 0.75), ("ddim", 0.6), ("dpmpp_2m", 0.75), ("euler", 0.6)])
    references("sdxl", ORTStableDiffusionXLImg2ImgPipeline, [("shipped", 0.3), ("dpmpp_2m", 0.6)])
    # Optimum has no FLUX img2img pipeline: the same ORT wrapping of diffusers' FluxImg2ImgPipeline as its others.
    from diffusers import FluxImg2ImgPipeline
    from optimum.onnxruntime import ORTStableDiffusion3Img2ImgPipeline
    from optimum.onnxruntime.modeling_diffusion import ORTDiffusionPipeline

    class ORTFluxImg2ImgPipeline(ORTDiffusionPipeline, FluxImg2ImgPipeline):
        task = "image-to-image"
        main_input_name = "image"
        auto_model_class = FluxImg2ImgPipeline

    flow = {"max_sequence_length": 16, "height": 64, "width": 64}
    references("sd3", ORTStableDiffusion3Img2ImgPipeline, [("shipped", 0.6)], **flow)
    references("flux", ORTFluxImg2ImgPipeline, [("shipped", 0.6), ("shipped", 1.0)], **flow)
    references("sd1", ORTStableDiffusionInpaintPipeline,
               [("shipped", 1.0), ("ddim", 1.0), ("dpmpp_2m", 0.75), ("euler", 1.0), ("euler", 0.6)], "inpaint")


if __name__ == "__main__":
    main()
