#!/usr/bin/env python3
"""Builds sd1-controlnet/: sd1 with a tiny ControlNet, exported as diffusers' ControlNet-to-ONNX script exports one
(scripts/convert_stable_diffusion_controlnet_to_onnx.py): one graph holding the U-Net and its ControlNet, inputs
`sample`, `timestep` [1], `encoder_hidden_states`, `controlnet_conds` [1, 2B, 3, 8H, 8W] and `conditioning_scales`
[1, 1], output `noise_pred`; and sd1-controlnet-split/, the same networks exported apart: `controlnet/model.onnx`
(residuals `down_block_res_0` … `mid_block_res`) and a `unet/model.onnx` taking them as inputs of those names.
References come from diffusers' own StableDiffusionControlNetPipeline in PyTorch on the same weights (one set for
both folders).

sd1-controlnet-multi/ holds two ControlNets in one graph (`controlnet_conds` [2, 2B, 3, 8H, 8W],
`conditioning_scales` [2, 1]): the first ControlNet and a second one (a white square's, its own seeds), and the
second alone as `controlnet-b/model.onnx` (residuals of the same names as sd1-controlnet-split's ControlNet), so
that the split U-Net can take both. Its references (reference/controlnet/) come from the same pipeline with
`controlnet=[first, second]` (diffusers' MultiControlNetModel, which sums the residuals) and `image=[ring,
square]`; cases give the scales and windows once for both or one per ControlNet.

sd1's parts are rebuilt by make.py's functions from the same seeds (their files are byte for byte sd1's); the
ControlNet is `ControlNetModel.from_unet` of sd1's U-Net with a small conditioning embedding, and its zero
convolutions (which a fresh ControlNet starts with, so that it changes nothing) get seeded random weights, so the
control image really moves the prediction. References (sd1-controlnet/reference/controlnet/): prompt "a red
circle", a 64×64 control image (`control.png`, a white ring on black), 10 steps, seeds 0 and 1 each under
`torch.Generator().manual_seed(seed)`; cases vary the scheduler, guidance, `controlnet_conditioning_scale` and
`control_guidance_start`/`end`; final latents and images, listed in controlnet.json.

Run from the repository root, in the test pipelines' environment (about 20 s):

    /work/venvs/pipelines/bin/python tests/data/pipelines/make_controlnet.py
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
from PIL import Image, ImageDraw  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make  # noqa: E402

NAME = "sd1-controlnet"
PROMPT = "a red circle"
STEPS = 10
SEEDS = [0, 1]
# (scheduler, guidance, conditioning scale, guidance start, guidance end)
CASES = [("ddim", 7.5, 1.0, 0.0, 1.0), ("dpmpp_2m", 7.5, 0.5, 0.2, 0.8), ("euler", 1.0, 2.0, 0.0, 1.0)]
# Two ControlNets: scales and windows once for both (a number) or one per ControlNet (a list).
MULTI_CASES = [("ddim", 7.5, [1.0, 0.5], 0.0, 1.0), ("dpmpp_2m", 7.5, [0.5, 1.0], [0.0, 0.2], [1.0, 0.8]),
               ("euler", 1.0, 1.5, 0.0, 1.0)]


class UNetWithControlNet(torch.nn.Module):
    """The U-Net with its ControlNet(s) in one graph, as diffusers' ControlNet-to-ONNX script wraps them."""

    def __init__(self, unet, controlnets):
        super().__init__()
        self.unet = unet
        self.controlnets = torch.nn.ModuleList(controlnets)

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_conds, conditioning_scales):
        down, mid = None, None
        for cond, scale, controlnet in zip(controlnet_conds, conditioning_scales, self.controlnets):
            d, m = controlnet(sample, timestep, encoder_hidden_states=encoder_hidden_states, controlnet_cond=cond,
                              conditioning_scale=scale, return_dict=False)
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False)[0]


class ControlNetAlone(torch.nn.Module):
    """A ControlNet on its own: its residuals as separate outputs, named as the U-Net's inputs that take them."""

    def __init__(self, controlnet):
        super().__init__()
        self.controlnet = controlnet

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        down, mid = self.controlnet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                    controlnet_cond=controlnet_cond, conditioning_scale=conditioning_scale,
                                    return_dict=False)
        return (*down, mid)


class UNetTakingResiduals(torch.nn.Module):
    """The U-Net with a ControlNet's residuals as inputs of their own."""

    def __init__(self, unet, downs):
        super().__init__()
        self.unet = unet
        self.downs = downs

    def forward(self, sample, timestep, encoder_hidden_states, *residuals):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         down_block_additional_residuals=list(residuals[: self.downs]),
                         mid_block_additional_residual=residuals[self.downs], return_dict=False)[0]


def export_split(pipe, controlnet, dst):
    """sd1-controlnet-split/: the same networks exported apart, `controlnet/model.onnx` and a `unet/model.onnx`
    taking its residuals (`down_block_res_0` … and `mid_block_res`), as tools that export a ControlNet on its own
    lay them out."""
    if dst.exists():
        shutil.rmtree(dst)
    src = HERE / NAME
    for part in ["text_encoder", "tokenizer", "vae_decoder", "vae_encoder", "scheduler"]:
        shutil.copytree(src / part, dst / part)
    shutil.copyfile(src / "model_index.json", dst / "model_index.json")
    export_alone(controlnet, dst / "controlnet" / "model.onnx")
    size = make.LATENT_SIZE
    sample, t = torch.randn(2, 4, size, size), torch.tensor([1.0])
    states = torch.randn(2, make.MAX_LENGTH, make.TEXT_HIDDEN)
    with torch.no_grad():
        residuals = ControlNetAlone(controlnet).eval()(sample, t, states, torch.rand(2, 3, 8 * size, 8 * size),
                                                       torch.ones(1))
    downs = len(residuals) - 1
    names = [f"down_block_res_{i}" for i in range(downs)] + ["mid_block_res"]
    (dst / "unet").mkdir(parents=True)
    shutil.copyfile(src / "unet" / "config.json", dst / "unet" / "config.json")
    with torch.no_grad():
        torch.onnx.export(UNetTakingResiduals(pipe.unet, downs).eval(), (sample, t, states, *residuals),
                          str(dst / "unet" / "model.onnx"),
                          input_names=["sample", "timestep", "encoder_hidden_states", *names],
                          output_names=["out_sample"],
                          dynamic_axes={"sample": {0: "B", 2: "H", 3: "W"}, "encoder_hidden_states": {0: "B"},
                                        "out_sample": {0: "B"}, **{name: {0: "B"} for name in names}},
                          opset_version=18, do_constant_folding=True, dynamo=False)


def control_image():
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(image).ellipse((14, 14, 50, 50), outline=(255, 255, 255), width=4)
    return image


def square_image():
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((8, 20, 40, 52), outline=(255, 255, 255), width=3)
    return image


def steering(controlnet, seed):
    """Seeded random weights for a fresh ControlNet's zero convolutions, so that its control moves the U-Net."""
    gen = torch.Generator().manual_seed(seed)
    zero_convs = list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block,
                                                             controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zero_convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.2)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.05)
    return controlnet.eval()


def build(work):
    from diffusers import ControlNetModel, StableDiffusionPipeline

    make.write_clip_vocab(work / "clip-vocab")
    tower_l, _, _ = make.text_encoders()
    src = make.build_sd("sd1", work, work / "clip-vocab", False, tower_l)
    pipe = StableDiffusionPipeline.from_pretrained(src, safety_checker=None, requires_safety_checker=False)
    make.seeded(601)
    controlnet = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    steering(controlnet, 602)
    make.seeded(611)
    second = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    return src, pipe, controlnet, steering(second, 612)


def export(pipe, controlnets, dst):
    if dst.exists():
        shutil.rmtree(dst)
    sd1 = HERE / "sd1"
    for part in ["text_encoder", "tokenizer", "vae_decoder", "vae_encoder", "scheduler"]:
        shutil.copytree(sd1 / part, dst / part)
    index = json.loads((sd1 / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionControlNetPipeline"
    (dst / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (dst / "unet").mkdir(parents=True)
    shutil.copyfile(sd1 / "unet" / "config.json", dst / "unet" / "config.json")
    model = UNetWithControlNet(pipe.unet, controlnets).eval()
    size, nets = make.LATENT_SIZE, len(controlnets)
    args = (torch.randn(2, 4, size, size), torch.tensor([1.0]), torch.randn(2, make.MAX_LENGTH, make.TEXT_HIDDEN),
            torch.rand(nets, 2, 3, 8 * size, 8 * size), torch.ones(nets, 1))
    with torch.no_grad():
        torch.onnx.export(model, args, str(dst / "unet" / "model.onnx"),
                          input_names=["sample", "timestep", "encoder_hidden_states", "controlnet_conds",
                                       "conditioning_scales"],
                          output_names=["noise_pred"],
                          dynamic_axes={"sample": {0: "2B", 2: "H", 3: "W"}, "encoder_hidden_states": {0: "2B"},
                                        "controlnet_conds": {1: "2B", 3: "8H", 4: "8W"}, "noise_pred": {0: "2B"}},
                          opset_version=18, do_constant_folding=True, dynamo=False)


def export_alone(controlnet, path):
    """One ControlNet on its own, with the residual names of sd1-controlnet-split's."""
    size = make.LATENT_SIZE
    sample, t = torch.randn(2, 4, size, size), torch.tensor([1.0])
    states = torch.randn(2, make.MAX_LENGTH, make.TEXT_HIDDEN)
    cond = torch.rand(2, 3, 8 * size, 8 * size)
    alone = ControlNetAlone(controlnet).eval()
    with torch.no_grad():
        downs = len(alone(sample, t, states, cond, torch.ones(1))) - 1
    names = [f"down_block_res_{i}" for i in range(downs)] + ["mid_block_res"]
    path.parent.mkdir(parents=True, exist_ok=True)
    controlnet.save_config(path.parent)
    with torch.no_grad():
        torch.onnx.export(alone, (sample, t, states, cond, torch.ones(1)), str(path),
                          input_names=["sample", "timestep", "encoder_hidden_states", "controlnet_cond",
                                       "conditioning_scale"],
                          output_names=names,
                          dynamic_axes={"sample": {0: "B", 2: "H", 3: "W"}, "encoder_hidden_states": {0: "B"},
                                        "controlnet_cond": {0: "B", 2: "8H", 3: "8W"},
                                        **{name: {0: "B"} for name in names}},
                          opset_version=18, do_constant_folding=True, dynamo=False)


def run_case(cn, images, case, out):
    """One reference case of `cn` (one ControlNet or a MultiControlNetModel): final latents and images per seed."""
    sched, guidance, scale, start, end = case
    latents, pictures = [], []
    for seed in SEEDS:
        finals = {}

        def grab(p, i, t, kw):
            finals["latents"] = kw["latents"].detach().clone()
            return kw

        result = cn(PROMPT, image=images, num_inference_steps=STEPS, guidance_scale=guidance,
                    controlnet_conditioning_scale=scale, control_guidance_start=start, control_guidance_end=end,
                    generator=torch.Generator().manual_seed(seed), output_type="np", callback_on_step_end=grab,
                    callback_on_step_end_tensor_inputs=["latents"])
        latents.append(finals["latents"].numpy()[0])
        pictures.append(result.images[0])
    shown = "+".join(str(v) for v in scale) if isinstance(scale, list) else str(scale)
    name = f"{sched}_g{guidance}_cs{shown}"
    np.save(out / f"{name}_final_latents.npy", np.stack(latents).astype(np.float32))
    np.save(out / f"{name}_images.npy", np.stack(pictures).astype(np.float32))
    return {"name": name, "scheduler": type(cn.scheduler).__name__, "guidance_scale": guidance,
            "controlnet_conditioning_scale": scale, "control_guidance_start": start, "control_guidance_end": end,
            "final_latents": f"{name}_final_latents.npy", "images": f"{name}_images.npy"}


def schedulers(config):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    return {
        "ddim": DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False),
        "dpmpp_2m": DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2),
        "euler": EulerDiscreteScheduler.from_config(config),
    }


def multi_references(pipe, controlnets, dst):
    from diffusers import StableDiffusionControlNetPipeline

    out = dst / "reference" / "controlnet"
    out.mkdir(parents=True, exist_ok=True)
    images = [control_image(), square_image()]
    files = ["ring.png", "square.png"]
    for image, file in zip(images, files):
        image.save(out / file)
    cn = StableDiffusionControlNetPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                           unet=pipe.unet, controlnet=list(controlnets), scheduler=pipe.scheduler,
                                           safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    by_name = schedulers(pipe.scheduler.config)
    listed = []
    for case in MULTI_CASES:
        cn.scheduler = by_name[case[0]]
        listed.append(run_case(cn, images, case, out))
    meta = {"pipeline": "StableDiffusionControlNetPipeline with two ControlNets (diffusers, PyTorch)",
            "prompt": PROMPT, "steps": STEPS, "seeds": SEEDS, "control_images": files,
            "generator": "torch.Generator().manual_seed(seed), one run per seed", "cases": listed}
    (out / "controlnet.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{dst.name}: {len(listed)} cases -> {out}")


def references(pipe, controlnet, dst):
    from diffusers import StableDiffusionControlNetPipeline

    out = dst / "reference" / "controlnet"
    out.mkdir(parents=True, exist_ok=True)
    image = control_image()
    image.save(out / "control.png")
    cn = StableDiffusionControlNetPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                           unet=pipe.unet, controlnet=controlnet, scheduler=pipe.scheduler,
                                           safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    by_name = schedulers(pipe.scheduler.config)
    listed = []
    for case in CASES:
        cn.scheduler = by_name[case[0]]
        listed.append(run_case(cn, image, case, out))
    meta = {"pipeline": "StableDiffusionControlNetPipeline (diffusers, PyTorch)", "prompt": PROMPT, "steps": STEPS,
            "seeds": SEEDS, "control_image": "control.png",
            "generator": "torch.Generator().manual_seed(seed), one run per seed", "cases": listed}
    (out / "controlnet.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{NAME}: {len(listed)} cases -> {out}")


def main():
    work = Path(tempfile.mkdtemp(prefix="difflab-controlnet-"))
    try:
        src, pipe, controlnet, second = build(work)
        export(pipe, [controlnet], HERE / NAME)
        export_split(pipe, controlnet, HERE / f"{NAME}-split")
        references(pipe, controlnet, HERE / NAME)
        multi = HERE / f"{NAME}-multi"
        export(pipe, [controlnet, second], multi)
        export_alone(second, multi / "controlnet-b" / "model.onnx")
        multi_references(pipe, [controlnet, second], multi)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
