#!/usr/bin/env python3
"""Builds svd/, a tiny random-weight StableVideoDiffusionPipeline (image-to-video) in an Optimum-like layout, and
writes diffusers' own PyTorch StableVideoDiffusionPipeline references.

Every network is an ONNX file from torch.onnx.export (opset 17, dynamo=False) with its config.json beside it:

  unet/           UNetSpatioTemporalConditionModel: `sample` [B, F, 8, H, W] (noisy latents then image latents on
                  channels), `timestep` float32 [B], `encoder_hidden_states` [B, 1, 8], `added_time_ids` [B, 3]
                  -> `out_sample` [B, F, 4, H, W]
  image_encoder/  CLIPVisionModelWithProjection: `pixel_values` [B, 3, 224, 224] -> `image_embeds` [B, 8]
  vae_encoder/    AutoencoderKLTemporalDecoder's encoder: `sample` [B, 3, H, W] -> `latent_sample` (the posterior's
                  mode, as the pipeline takes it) [B, 4, H/8, W/8]
  vae_decoder/    its temporal decoder, one clip per call: `latent_sample` [F, 4, h, w] -> `sample` [F, 3, 8h, 8w]

plus feature_extractor/ (CLIPImageProcessor, 224, CLIP's mean and std), scheduler/ (SVD's EulerDiscreteScheduler:
Karras sigmas 0.002-700, v-prediction, continuous timesteps) and model_index.json. diffusers hard-codes 32 groups
in these models' GroupNorms, so the widths are 32 (VAE; the U-Net's first block) and 64 (the U-Net's second block:
at 32, one channel per group, GroupNorm would cancel the time embedding); the image encoder takes 224x224 because
the pipeline always resizes the start image to 224x224 before the feature extractor. All-zero parameters get seeded
random values, and every weight is then rounded to a multiple of 2^-10 (git packs such files to about a third).

References (svd/reference/reference.json): the pipeline on start.png (sd1's img2img start image), 64x64, 8 frames,
6 steps, fps 7, motion bucket 127, noise_aug_strength 0.02, guidance 1.0 -> 3.0 over the frames, seeds 0 and 1 each
run alone with generator=torch.Generator().manual_seed(seed) and given latents.

Run from the repository root, in the test pipelines' environment (40-60 s on two busy cores):

    /work/venvs/pipelines/bin/python tests/data/pipelines/make_svd.py
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make  # noqa: E402
from make_video import wake  # noqa: E402

NAME = "svd"
FRAMES = 8
STEPS = 6
SEEDS = [0, 1]
SIZE = make.LATENT_SIZE * 8
QUANTUM = 2.0**-10  # weights are multiples of this (see coarsen)
CALL = dict(height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=STEPS, fps=7, motion_bucket_id=127,
            noise_aug_strength=0.02, min_guidance_scale=1.0, max_guidance_scale=3.0, decode_chunk_size=8)
# diffusers fixes num_groups=32 in the spatio-temporal U-Net's and the temporal VAE's GroupNorms, so widths are
# multiples of 32. At width 32 every group is one channel and GroupNorm removes the per-channel time-embedding bias
# that the resnets add: timestep and added_time_ids would change nothing. The U-Net's second block is 64 wide.
WIDTH = 32
EMBED = 8  # the image encoder's projection_dim = the U-Net's cross_attention_dim
UNET = dict(sample_size=make.LATENT_SIZE, in_channels=8, out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            block_out_channels=(WIDTH, 2 * WIDTH), layers_per_block=1, transformer_layers_per_block=1,
            num_attention_heads=2, cross_attention_dim=EMBED, addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=3 * 4, num_frames=FRAMES)
VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(WIDTH,) * 4,
           layers_per_block=1, latent_channels=4, sample_size=SIZE, scaling_factor=0.18215, force_upcast=True)
CLIP = dict(image_size=224, patch_size=14, hidden_size=EMBED, intermediate_size=4 * EMBED, num_hidden_layers=2,
            num_attention_heads=2, projection_dim=EMBED, hidden_act="gelu")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 prediction_type="v_prediction", interpolation_type="linear", use_karras_sigmas=True, sigma_min=0.002,
                 sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous", steps_offset=1)
ONNX = {  # folder: inputs with their dynamic axes, the output's name and shape (str: symbolic)
    "unet": ({"sample": {0: "batch_size", 1: "num_frames", 3: "height", 4: "width"}, "timestep": {0: "batch_size"},
              "encoder_hidden_states": {0: "batch_size"}, "added_time_ids": {0: "batch_size"}},
             "out_sample", ["batch_size", "num_frames", 4, "height", "width"]),
    "image_encoder": ({"pixel_values": {0: "batch_size"}}, "image_embeds", ["batch_size", EMBED]),
    "vae_encoder": ({"sample": {0: "batch_size", 2: "sample_height", 3: "sample_width"}}, "latent_sample",
                    ["batch_size", 4, "latent_height", "latent_width"]),
    "vae_decoder": ({"latent_sample": {0: "num_frames", 2: "latent_height", 3: "latent_width"}}, "sample",
                    ["num_frames", 3, "sample_height", "sample_width"]),
}


# ------------------------------------------------------------------------------------------------------ build


def build():
    """The pipeline's parts from configs in code, each after its own seed; every all-zero parameter (norm and CLIP
    biases) gets seeded random values so that no conditioning or temporal path starts inert."""
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                           UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    make.seeded(801)
    unet = UNetSpatioTemporalConditionModel(**UNET).eval()
    make.seeded(802)
    vae = AutoencoderKLTemporalDecoder(**VAE).eval()
    make.seeded(803)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP, architectures=["CLIPVisionModelWithProjection"]))
    parts = [("unet", unet), ("vae", vae), ("image_encoder", encoder)]
    woken = {name: wake(m, make.SEED + 810 + i) for i, (name, m) in enumerate(parts)}
    for _, m in parts:
        coarsen(m)
    features = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
                                  image_mean=CLIP_MEAN, image_std=CLIP_STD)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder.eval(), unet=unet,
                                        scheduler=EulerDiscreteScheduler(**SCHEDULER), feature_extractor=features)
    pipe.set_progress_bar_config(disable=True)
    return pipe, woken


def coarsen(module):
    """Every weight rounded to a multiple of QUANTUM: the float32 bytes then have zero low mantissa bits, which git's
    zlib packs to about a third (random float32 does not compress); the networks stay random."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.round(p / QUANTUM) * QUANTUM)
            assert p.any(), f"{name} rounds to zeros"


def unet_feed(batch, frames, size, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, frames, 8, size, size, generator=gen), torch.rand(batch, generator=gen) * 3 - 1.5,
            torch.randn(batch, 1, EMBED, generator=gen),
            torch.tensor([[6.0, 127.0, 0.02]]).repeat(batch, 1) + torch.rand(batch, 3, generator=gen))


def unet_sensitivity(unet):
    """How much the output moves when frame 0, the timestep, the added time ids or the image embeddings change."""
    feed = unet_feed(1, FRAMES, make.LATENT_SIZE, make.SEED + 821)
    base = Unet(unet)(*feed)
    moved = [t.clone() for t in feed]
    moved[0][:, 0] += 1.0
    per_frame = (Unet(unet)(*moved) - base).abs().amax(dim=(0, 2, 3, 4))
    assert per_frame[3] > 1e-3, f"frame 3 does not see frame 0 ({per_frame[3]:.2e})"
    out = {"note": "max |out - out'| on a random feed: frame 0 + 1 (per output frame); timestep + 0.5; "
                   "motion_bucket_id + 73; encoder_hidden_states -> zeros (as CFG's unconditional half)",
           "frame0_per_output_frame": [round(float(d), 6) for d in per_frame]}
    for key, i, change in [("timestep", 1, lambda t: t + 0.5),
                           ("added_time_ids", 3, lambda t: t + torch.tensor([0.0, 73.0, 0.0])),
                           ("encoder_hidden_states", 2, torch.zeros_like)]:
        moved = list(feed)
        moved[i] = change(feed[i])
        out[key] = float((Unet(unet)(*moved) - base).abs().max())
        assert out[key] > 1e-3, f"{key} does not move the U-Net ({out[key]:.2e})"
    return out


# ----------------------------------------------------------------------------------------------------- export


class Unet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    @torch.no_grad()
    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, added_time_ids=added_time_ids,
                         return_dict=False)[0]


class ImageEncoder(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    @torch.no_grad()
    def forward(self, pixel_values):
        return self.encoder(pixel_values).image_embeds


class VaeEncoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    @torch.no_grad()
    def forward(self, sample):
        return self.vae.encode(sample).latent_dist.mode()


class VaeDecoder(torch.nn.Module):
    """One clip per call: the frame count is the batch dim, so num_frames follows the input's shape."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    @torch.no_grad()
    def forward(self, latent_sample):
        return self.vae.decode(latent_sample, num_frames=latent_sample.shape[0]).sample


def wrappers(pipe):
    return {"unet": Unet(pipe.unet), "image_encoder": ImageEncoder(pipe.image_encoder),
            "vae_encoder": VaeEncoder(pipe.vae), "vae_decoder": VaeDecoder(pipe.vae)}


def feeds(part, shape_kind, seed):
    """Random feeds per network; "trace" is unlike the checks' shapes, so that a baked-in size would show there."""
    gen = torch.Generator().manual_seed(seed)
    if part == "unet":
        return unet_feed(*{"trace": (1, 3, 8), "a": (2, FRAMES, 8), "b": (1, 12, 6)}[shape_kind], seed)
    if part == "image_encoder":
        return (torch.randn({"trace": 1, "a": 2, "b": 3}[shape_kind], 3, 224, 224, generator=gen),)
    if part == "vae_encoder":
        b, h, w = {"trace": (1, 64, 64), "a": (2, 64, 64), "b": (1, 48, 80)}[shape_kind]
        return (torch.rand(b, 3, h, w, generator=gen) * 2 - 1,)
    f, h, w = {"trace": (3, 8, 8), "a": (FRAMES, 8, 8), "b": (5, 6, 10)}[shape_kind]
    return (torch.randn(f, 4, h, w, generator=gen),)


def export_all(pipe, dst):
    for i, (part, module) in enumerate(wrappers(pipe).items()):
        inputs, output, shape = ONNX[part]
        dynamic = inputs | {output: {d: n for d, n in enumerate(shape) if isinstance(n, str)}}
        path = dst / part / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(module.eval(), feeds(part, "trace", make.SEED + 830 + i), str(path), input_names=list(inputs),
                          output_names=[output], dynamic_axes=dynamic, opset_version=17, do_constant_folding=True,
                          dynamo=False)
        declare_output(path, shape)
    pipe.unet.save_config(dst / "unet")
    pipe.vae.save_config(dst / "vae_encoder")
    pipe.vae.save_config(dst / "vae_decoder")
    pipe.image_encoder.config.save_pretrained(dst / "image_encoder")
    pipe.feature_extractor.save_pretrained(dst / "feature_extractor")
    pipe.scheduler.save_config(dst / "scheduler")
    pipe.save_config(dst)
    index = json.loads((dst / "model_index.json").read_text()) | {"_name_or_path": NAME}
    (dst / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def declare_output(path, shape):
    """The tracer names some static output dims symbolically ("Transposeout_sample_dim_2"): declare every dim."""
    import onnx

    model = onnx.load(str(path))
    for dim, want in zip(model.graph.output[0].type.tensor_type.shape.dim, shape):
        dim.Clear()
        if isinstance(want, str):
            dim.dim_param = want
        else:
            dim.dim_value = want
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def ort_checks(pipe, dst):
    """ONNX Runtime (CPU) against torch on random feeds at two shapes per network, neither the traced one."""
    import onnxruntime as ort

    out = {}
    for i, (part, module) in enumerate(wrappers(pipe).items()):
        sess = ort.InferenceSession(str(dst / part / "model.onnx"), providers=["CPUExecutionProvider"])
        out[part] = []
        for kind in ["a", "b"]:
            feed = feeds(part, kind, make.SEED + 840 + i)
            want = module(*feed).numpy()
            (got,) = sess.run(None, dict(zip(ONNX[part][0], (t.numpy() for t in feed))))
            assert got.shape == want.shape, (part, got.shape, want.shape)
            out[part].append({"inputs": [list(t.shape) for t in feed], "max_abs_diff": float(np.abs(got - want).max()),
                              "max_abs_out": float(np.abs(want).max())})
    return out


# ------------------------------------------------------------------------------------------------- references


def start_image(ref):
    """sd1's img2img start image (a gradient with a red disc, 64x64), copied: git stores the same blob once."""
    from PIL import Image

    src = HERE / "sd1" / "reference" / "img2img" / "start.png"
    shutil.copyfile(src, ref / "start.png")
    return Image.open(ref / "start.png").convert("RGB")


def given_latents(seed):
    shape = (1, FRAMES, 4, make.LATENT_SIZE, make.LATENT_SIZE)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def image_noise(seed):
    """The pipeline's first draw from its generator: the noise augmentation of the VAE's input image."""
    return torch.randn((1, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))


def hooks(pipe, seen):
    """Record, once per run, what the image encoder and the VAE encoder receive and the first U-Net call."""

    def encoder(module, args, output):
        seen.setdefault("pixel_values", args[0].clone())
        seen.setdefault("image_embeds", output.image_embeds.clone())

    def vae_in(module, args):
        seen.setdefault("vae_input", args[0].clone())

    def unet(module, args, kwargs, output):
        seen.setdefault("unet", (args[0].clone(), args[1].clone(), kwargs["encoder_hidden_states"].clone(),
                                 kwargs["added_time_ids"].clone(), output[0].clone()))

    return [pipe.image_encoder.register_forward_hook(encoder), pipe.vae.encoder.register_forward_pre_hook(vae_in),
            pipe.unet.register_forward_hook(unet, with_kwargs=True)]


def run(pipe, image, seed, output_type, latents=True):
    seen = {}
    handles = hooks(pipe, seen)
    try:
        frames = pipe(image, **CALL, generator=torch.Generator().manual_seed(seed), output_type=output_type,
                      latents=given_latents(seed) if latents else None).frames
    finally:
        for h in handles:
            h.remove()
    return frames, seen


def run_seed(pipe, image, seed):
    """Frames (output_type "np") and final latents ("latent") of one call each, with what the pipeline computed."""
    frames, seen = run(pipe, image, seed, "np")
    latents, again = run(pipe, image, seed, "latent")
    sample, t, states, time_ids, _ = seen["unet"]
    assert torch.equal(again["unet"][0], sample), "the latent run's first U-Net call differs"
    clean = pipe.video_processor.preprocess(image, height=SIZE, width=SIZE)
    noised = clean + CALL["noise_aug_strength"] * image_noise(seed)
    checks = {
        "vae_input_is_preprocessed_plus_aug_noise": bool(torch.equal(seen["vae_input"], noised)),
        "image_latents_are_vae_mode": float((sample[1, :, 4:] - VaeEncoder(pipe.vae)(noised)).abs().max()),
        "uncond_half_image_latents_and_embeds_zero": bool(not sample[0, :, 4:].any() and not states[0].any()),
        "image_embeds_are_image_encoder_output": bool(torch.equal(states[1], seen["image_embeds"])),
    }
    return {"frames": np.asarray(frames, dtype=np.float32)[0], "latents": latents[0].numpy(), "seen": seen,
            "image_latents": sample[1, 0, 4:].numpy(), "checks": checks}


def draw_order(pipe, image):
    """Without given latents the generator draws the image noise first, then the latents (seed 0)."""
    _, seen = run(pipe, image, 0, "latent", latents=False)
    gen = torch.Generator().manual_seed(0)
    torch.randn((1, 3, SIZE, SIZE), generator=gen)
    latents = torch.randn((1, FRAMES, 4, make.LATENT_SIZE, make.LATENT_SIZE), generator=gen)
    fresh = schedule(pipe)
    want = latents * fresh.init_noise_sigma / (fresh.sigmas[0] ** 2 + 1) ** 0.5
    diff = float((seen["unet"][0][:, :, :4] - want).abs().max())
    assert diff < 1e-5, f"draw order: {diff:.2e}"
    return {"note": "generator only (no latents=), seed 0: the first U-Net sample's latent channels against "
                    "randn((1,3,64,64)) then randn((1,8,4,8,8)) from one manual_seed(0) generator, times "
                    "init_noise_sigma / sqrt(sigma_0^2 + 1)", "max_abs_diff": diff}


def save_first_call(seen, ref, sess):
    sample, t, states, time_ids, out = seen["unet"]
    timestep = np.full([sample.shape[0]], float(t), dtype=np.float32)
    feed = {"sample": sample.numpy(), "timestep": timestep, "encoder_hidden_states": states.numpy(),
            "added_time_ids": time_ids.numpy()}
    (got,) = sess.run(None, feed)
    return {
        "note": ("seed 0, step 0, under CFG: batch [uncond, cond]. sample = cat([scale_model_input(cat([latents] * "
                 "2), t), image_latents], dim=2) with image_latents zeros for uncond; encoder_hidden_states zeros "
                 "for uncond; the pipeline passes t as a rank-0 tensor, the ONNX takes it broadcast to [B]. "
                 "out_sample is torch's; ort_max_abs_diff is unet/model.onnx on this feed."),
        **{k: make.save_npy(ref / f"first_call_{k}.npy", v) for k, v in feed.items()},
        "timestep_value": float(t),
        "timestep_rank_passed_by_pipeline": t.dim(),
        "out_sample": make.save_npy(ref / "first_call_out_sample.npy", out.numpy()),
        "ort_max_abs_diff": float(np.abs(got - out.numpy()).max()),
    }


def schedule(pipe):
    """A fresh scheduler from the pipeline's config, set for STEPS (the pipeline's own keeps its last run's state)."""
    fresh = type(pipe.scheduler).from_config(pipe.scheduler.config)
    fresh.set_timesteps(STEPS)
    return fresh


def references(pipe, dst, checks):
    import onnxruntime as ort

    ref = dst / "reference"
    ref.mkdir(parents=True)
    image = start_image(ref)
    runs = [run_seed(pipe, image, seed) for seed in SEEDS]
    sess = ort.InferenceSession(str(dst / "unet" / "model.onnx"), providers=["CPUExecutionProvider"])
    sched = schedule(pipe)
    guidance = torch.linspace(CALL["min_guidance_scale"], CALL["max_guidance_scale"], FRAMES)
    save = make.save_npy
    out = {
        "pipeline": "StableVideoDiffusionPipeline (diffusers, PyTorch, CPU)",
        "call": CALL | {"generator": "torch.Generator().manual_seed(seed)", "latents": "given_latents[seed]"},
        "seeds": SEEDS,
        "start_image": {"file": str((ref / "start.png").relative_to(HERE)), "sha256": make.sha256(ref / "start.png"),
                        "same_as": "sd1/reference/img2img/start.png"},
        "notes": NOTES,
        "given_latents": save(ref / "given_latents.npy", np.concatenate([given_latents(s).numpy() for s in SEEDS])),
        "image_noise": save(ref / "image_noise.npy", np.concatenate([image_noise(s).numpy() for s in SEEDS])),
        "pixel_values": save(ref / "pixel_values.npy", runs[0]["seen"]["pixel_values"].numpy()),
        "pixel_values_same_for_both_seeds": bool(torch.equal(runs[0]["seen"]["pixel_values"],
                                                             runs[1]["seen"]["pixel_values"])),
        "image_embeds": save(ref / "image_embeds.npy",
                             np.concatenate([r["seen"]["image_embeds"].numpy() for r in runs])),
        "image_latents": save(ref / "image_latents.npy", np.stack([r["image_latents"] for r in runs])),
        "added_time_ids": save(ref / "added_time_ids.npy", runs[0]["seen"]["unet"][3].numpy()),
        "guidance_scale": save(ref / "guidance_scale.npy", guidance.numpy()),
        "guidance_scale_values": [float(g) for g in guidance],
        "scheduler": make.plain_config(pipe.scheduler.config),
        "sigmas": save(ref / "sigmas.npy", sched.sigmas.numpy()),
        "sigmas_values": [float(s) for s in sched.sigmas],
        "timesteps": save(ref / "timesteps.npy", sched.timesteps.numpy()),
        "timesteps_values": [float(t) for t in sched.timesteps],
        "init_noise_sigma": float(sched.init_noise_sigma),
        "final_latents": save(ref / "final_latents.npy", np.stack([r["latents"] for r in runs])),
        "frames": save(ref / "frames.npy", np.stack([r["frames"] for r in runs])),
        "first_unet_call": save_first_call(runs[0]["seen"], ref, sess),
        "pipeline_checks": {f"seed_{s}": r["checks"] for s, r in zip(SEEDS, runs)},
        "draw_order": draw_order(pipe, image),
        **checks,
    }
    out["ort_replay"] = ort_replay(pipe, dst, out)
    out["versions"] = make.versions()
    make.write_json(ref / "reference.json", out)
    return out


NOTES = {
    "image_encoder_input": (
        "_encode_image (PIL input): pil_to_numpy (/255) -> NCHW tensor -> x*2-1 -> _resize_with_antialiasing(x, "
        "(224, 224)): a gaussian blur, sigma = max((in/224 - 1)/2, 0.001) per axis, kernel int(max(4 sigma, 3)) made "
        "odd, reflect padding (from 64 px: sigma 0.001, kernel 3, i.e. the identity), then "
        "F.interpolate(bicubic, align_corners=True, A = -0.75) to 224x224 -> (x+1)/2 (not clamped: bicubic may "
        "overshoot [0, 1]) -> feature_extractor(do_resize=False, do_center_crop=False, do_rescale=False, "
        "do_normalize=True): (x - mean) / std with CLIP's mean and std. The preprocessor config's own size is never "
        "used for resizing, so the image encoder must take 224x224. The image encoder sees the clean image."),
    "image_embeddings": ("image_embeds.unsqueeze(1) [B, 1, 8]; under CFG cat([zeros_like, embeds]) ([uncond, cond])."),
    "image_latents": (
        "video_processor.preprocess(image, 64, 64): x/127.5-1 as [1, 3, 64, 64]; noise = randn_tensor(image.shape, "
        "generator) (the generator's FIRST draw); image + noise_aug_strength * noise -> vae.encode(.).latent_dist"
        ".mode() (the mean; NOT multiplied by scaling_factor) -> cat([zeros, latents]) under CFG -> repeated over "
        "the frames [2B, F, 4, h, w] and concatenated after the scaled noisy latents on channels (dim 2)."),
    "draw_order": ("generator draws: 1. the image noise [B, 3, H, W]; 2. the latents [B, F, 4, h, w] only when "
                   "latents= is not given. With given latents the generator draws the image noise only."),
    "added_time_ids": "[fps - 1, motion_bucket_id, noise_aug_strength] = [6, 127, 0.02] per row, float32, "
                      "the same for both CFG halves",
    "guidance": ("CFG is on when max_guidance_scale > 1. guidance per frame: linspace(min, max, F) [1, F, 1, 1, 1]; "
                 "noise_pred = uncond + g[f] * (cond - uncond), U-Net batch [uncond, cond] (chunk(2))."),
    "timestep": ("Euler, timestep_type continuous + v_prediction: t = 0.25 * ln(sigma) (c_noise) as float32, "
                 "passed to the U-Net as a rank-0 tensor; scale_model_input divides by sqrt(sigma^2 + 1). Given "
                 "latents are multiplied by init_noise_sigma = sqrt(sigma_max^2 + 1) ('leading' spacing)."),
    "sigmas": ("use_karras_sigmas with sigma_min 0.002 and sigma_max 700 from the config (rho 7), then a final 0 "
               "(final_sigmas_type 'zero'). step: v-prediction, x0 = v * (-sigma / sqrt(sigma^2+1)) + "
               "x / (sigma^2+1); x += (x - x0) / sigma * (sigma_next - sigma)."),
    "decode": ("latents [B, F, 4, h, w] flattened to [B*F, ...], / scaling_factor, decoded decode_chunk_size frames "
               "per call with num_frames = the chunk's length (here one call of 8 frames); frames = "
               "clamp(x / 2 + 0.5, 0, 1) as [B, F, H, W, 3] float32."),
}


def ort_replay(pipe, dst, ref):
    """The pipeline again on the ONNX files (ORT CPU) and the torch scheduler, from the saved inputs."""
    import onnxruntime as ort

    s = {p: ort.InferenceSession(str(dst / p / "model.onnx"), providers=["CPUExecutionProvider"]) for p in ONNX}
    load = lambda key: np.load(HERE / ref[key]["file"])  # noqa: E731
    pixels, noise, given = load("pixel_values"), load("image_noise"), load("given_latents")
    clean = pipe.video_processor.preprocess(start_image(dst / "reference"), height=SIZE, width=SIZE).numpy()
    guidance = load("guidance_scale")[None, :, None, None, None]
    latents_out, frames_out = [], []
    for i, _ in enumerate(SEEDS):
        (embeds,) = s["image_encoder"].run(None, {"pixel_values": pixels})
        (image_latents,) = s["vae_encoder"].run(None, {"sample": clean + CALL["noise_aug_strength"] * noise[i:i + 1]})
        states = np.concatenate([np.zeros_like(embeds), embeds])[:, None]
        cond = np.repeat(np.concatenate([np.zeros_like(image_latents), image_latents])[:, None], FRAMES, axis=1)
        sched = schedule(pipe)
        latents = torch.from_numpy(given[i:i + 1]) * sched.init_noise_sigma
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents] * 2), t).numpy()
            feed = {"sample": np.concatenate([x, cond], axis=2), "timestep": np.full([2], t, np.float32),
                    "encoder_hidden_states": states, "added_time_ids": load("added_time_ids")}
            (pred,) = s["unet"].run(None, feed)
            pred = pred[0:1] + guidance * (pred[1:2] - pred[0:1])
            latents = sched.step(torch.from_numpy(pred), t, latents).prev_sample
        (decoded,) = s["vae_decoder"].run(None, {"latent_sample": latents[0].numpy() / pipe.vae.config.scaling_factor})
        latents_out.append(latents[0].numpy())
        frames_out.append(np.clip(decoded / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1))
    return {"note": "ORT CPU on the saved pixel_values, image_noise and given_latents with the torch scheduler",
            "final_latents_max_abs_diff": float(np.abs(np.stack(latents_out) - load("final_latents")).max()),
            "frames_max_abs_diff": float(np.abs(np.stack(frames_out) - load("frames")).max())}


# ------------------------------------------------------------------------------------------------------- main


def write_manifest(dst):
    files, models = make.describe_dir(dst)
    ref_files = {str(p.relative_to(dst)): {"bytes": p.stat().st_size, "sha256": make.sha256(p)}
                 for p in sorted((dst / "reference").rglob("*")) if p.is_file()}
    size = sum(f["bytes"] for f in files.values()) + sum(f["bytes"] for f in ref_files.values())
    make.write_json(HERE / "manifest_svd.json", {
        "generated_by": "tests/data/pipelines/make_svd.py",
        "versions": make.versions(),
        "seed": make.SEED,
        "pipelines": {NAME: {"bytes": size, "exporter": "torch.onnx.export (dynamo=False, opset 17)",
                             "models": models, "files": files, "reference_files": ref_files}},
        "total_bytes": size,
    })
    return size


def main():
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    started = time.time()
    dst = HERE / NAME
    if dst.exists():
        shutil.rmtree(dst)
    pipe, woken = build()
    export_all(pipe, dst)
    checks = {
        "woken_zero_parameters": woken,
        "woken_std": 0.1,
        "parameters": {p: sum(x.numel() for x in m.parameters()) for p, m in
                       [("unet", pipe.unet), ("vae_encoder", pipe.vae.encoder), ("vae_decoder", pipe.vae.decoder),
                        ("image_encoder", pipe.image_encoder)]},
        "unet_sensitivity": unet_sensitivity(pipe.unet),
        "ort_vs_torch": ort_checks(pipe, dst),
    }
    print(json.dumps(checks["unet_sensitivity"] | {"ort_vs_torch": checks["ort_vs_torch"]}, indent=1))
    built = time.time() - started
    out = references(pipe, dst, checks)
    print(json.dumps({k: out[k] for k in ["pipeline_checks", "draw_order", "ort_replay", "sigmas_values",
                                          "timesteps_values", "init_noise_sigma"]}, indent=1))
    size = write_manifest(dst)
    print(f"done in {time.time() - started:.0f} s (build and export {built:.0f} s); {size / 1e6:.2f} MB in {NAME}/")


if __name__ == "__main__":
    main()
