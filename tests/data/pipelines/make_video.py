#!/usr/bin/env python3
"""Builds animatediff/, a tiny AnimateDiffPipeline (text-to-video) in the layout Optimum writes for SD, and writes
diffusers' own PyTorch AnimateDiffPipeline references.

The text encoder, tokenizer and VAE are sd1's, rebuilt by make.py's own functions from the same seeds and exported
with Optimum (so their files are byte for byte sd1's, which git stores once). The U-Net is
`UNetMotionModel.from_unet2d(sd1's U-Net, MotionAdapter(...))`: sd1's spatial layers with a tiny motion adapter
(one temporal transformer per block, 2 heads, 8 norm groups, 32 positions) whose all-zero parameters (the
LayerNorm/GroupNorm biases) get seeded random values. Optimum has no exporter for it: `unet/model.onnx` is
torch.onnx.export (opset 17, dynamo=False) with Optimum's U-Net names, `sample` [B, 4, F, H, W], `timestep` float32
[B], `encoder_hidden_states` [B·F, 77, 8] (the pipeline repeats the prompt embeddings per frame before the U-Net)
→ `out_sample` [B, 4, F, H, W]. The scheduler is AnimateDiff's usual DDIM (linear betas, linspace spacing).

References (animatediff/reference/reference.json): "a red circle", 8 frames of 64×64, 8 steps, guidance 7.5, seeds
0 and 1 each run alone on given latents `torch.randn((1, 4, 8, 8, 8), generator=torch.Generator().manual_seed(seed))`,
with DDIM and with Euler made from its config: initial and final latents, decoded frames, and the first U-Net call
(feed and output) of DDIM seed 0.

Run from the repository root, in the test pipelines' environment (about 30 s):

    /work/venvs/pipelines/bin/python tests/data/pipelines/make_video.py
"""

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make  # noqa: E402

NAME = "animatediff"
PROMPT = "a red circle"
STEPS = 8
FRAMES = 8
GUIDANCE = 7.5
SEEDS = [0, 1]
SD1_PARTS = ["text_encoder", "tokenizer", "vae_decoder", "vae_encoder"]
ADAPTER = dict(block_out_channels=make.UNET_CHANNELS, motion_layers_per_block=1, motion_num_attention_heads=2,
               motion_norm_num_groups=8, motion_max_seq_length=32)
DDIM = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False, steps_offset=1,
            timestep_spacing="linspace")
UNET_NAMES = ["sample", "timestep", "encoder_hidden_states"]
DYNAMIC = {"sample": {0: "batch_size", 2: "num_frames", 3: "height", 4: "width"}, "timestep": {0: "batch_size"},
           "encoder_hidden_states": {0: "batch_frames"},
           "out_sample": {0: "batch_size", 2: "num_frames", 3: "height", 4: "width"}}


# ------------------------------------------------------------------------------------------------------ build


def clip_vocab(dst):
    """make.py's CLIP vocabulary; without open-clip-torch (which ships the BPE file), sd1's own tokenizer files, which
    hold the same vocabulary and merges (the exported tokenizer is compared with sd1's, file by file)."""
    if importlib.util.find_spec("open_clip") is not None:
        make.write_clip_vocab(dst)
        return "open_clip/bpe_simple_vocab_16e6.txt.gz"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ["vocab.json", "merges.txt"]:
        shutil.copyfile(HERE / "sd1" / "tokenizer" / name, dst / name)
    return "sd1/tokenizer (open-clip-torch not installed)"


def build_sd1(work):
    """sd1 as make.py builds it (same functions, same seeds), saved in `work` and loaded back for PyTorch."""
    from diffusers import StableDiffusionPipeline

    vocab = clip_vocab(work / "clip-vocab")
    tower_l, _, _ = make.text_encoders()
    src = make.build_sd("sd1", work, work / "clip-vocab", False, tower_l)
    return src, StableDiffusionPipeline.from_pretrained(src, safety_checker=None, requires_safety_checker=False), vocab


def wake(module, seed, std=0.1):
    """Seeded random values for every all-zero parameter (a fresh adapter's norm biases), so nothing starts inert."""
    gen = torch.Generator().manual_seed(seed)
    woken = []
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * std)
                woken.append(name)
    return woken


def motion_unet(unet2d):
    from diffusers import MotionAdapter, UNetMotionModel

    make.seeded(701)
    adapter = MotionAdapter(**ADAPTER)
    woken = wake(adapter, make.SEED + 702)
    unet = UNetMotionModel.from_unet2d(unet2d, adapter).eval()
    zero = [n for n, p in unet.named_parameters() if "motion_modules" in n and not p.any()]
    assert not zero, f"motion parameters still all zero: {zero}"
    return unet, woken


def animatediff(sd, unet):
    from diffusers import AnimateDiffPipeline, DDIMScheduler

    pipe = AnimateDiffPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet,
                               motion_adapter=None, scheduler=DDIMScheduler(**DDIM))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def frames_mix(unet):
    """Changing frame 0 of the input must change frame 3 of the output (the temporal layers mix frames)."""
    gen = torch.Generator().manual_seed(make.SEED + 703)
    sample = torch.randn(1, 4, FRAMES, 8, 8, generator=gen)
    states = torch.randn(FRAMES, make.MAX_LENGTH, make.TEXT_HIDDEN, generator=gen)
    moved = sample.clone()
    moved[:, :, 0] += 1.0
    with torch.no_grad():
        a = unet(sample, torch.tensor([500.0]), states).sample
        b = unet(moved, torch.tensor([500.0]), states).sample
    diff = (a - b).abs().amax(dim=(0, 1, 3, 4))
    assert diff[3] > 1e-3, f"frame 3 does not see frame 0 ({diff[3]:.2e})"
    return {"note": "max |out(x) - out(x with frame 0 + 1)| per output frame, t = 500",
            "per_frame": [round(float(d), 6) for d in diff]}


# ----------------------------------------------------------------------------------------------------- export


def export_sd1_parts(src, work, dst):
    """Optimum's export of the rebuilt sd1; its text encoder, tokenizer and VAE go into `dst`."""
    out = work / "sd1-onnx"
    make.export_optimum(src, out)
    make.drop_untracked(out)
    same = {}
    for part in SD1_PARTS:
        shutil.copytree(out / part, dst / part)
        for p in sorted((dst / part).iterdir()):
            sd1 = HERE / "sd1" / part / p.name
            same[f"{part}/{p.name}"] = sd1.exists() and make.sha256(sd1) == make.sha256(p)
    return same


def write_index(pipe, dst):
    """model_index.json as diffusers writes it for this pipeline (unshipped parts `[null, null]`) and the scheduler's
    config as save_config writes it."""
    pipe.save_config(dst)
    index = json.loads((dst / "model_index.json").read_text()) | {"_name_or_path": NAME}
    (dst / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    pipe.scheduler.save_config(dst / "scheduler")


class _Unet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


def unet_feed(batch, frames, size, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, frames, size, size, generator=gen),
            torch.rand(batch, generator=gen) * 999,
            torch.randn(batch * frames, make.MAX_LENGTH, make.TEXT_HIDDEN, generator=gen))


def export_unet(unet, dst):
    (dst / "unet").mkdir(parents=True, exist_ok=True)
    unet.save_config(dst / "unet")
    # Traced at a shape unlike the checks' (B 1, F 4), so that a size baked in by mistake would show there.
    with torch.no_grad():
        torch.onnx.export(_Unet(unet).eval(), unet_feed(1, 4, make.LATENT_SIZE, make.SEED + 704),
                          str(dst / "unet" / "model.onnx"), input_names=UNET_NAMES, output_names=["out_sample"],
                          dynamic_axes=DYNAMIC, opset_version=17, do_constant_folding=True, dynamo=False)
    fix_channels(dst / "unet" / "model.onnx", unet.config.out_channels)


def fix_channels(path, channels):
    """The tracer leaves out_sample's channel dim symbolic ("Transposeout_sample_dim_1"): declare it, as sample's."""
    import onnx

    model = onnx.load(str(path))
    dim = model.graph.output[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_value = channels
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def ort_check(unet, path):
    """ONNX Runtime (CPU) against torch on random feeds: B 2, F 8, 8×8 (the references' shape) and B 1, F 16, 16×16."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    checks = []
    for batch, frames, size in [(2, FRAMES, 8), (1, 16, 16)]:
        feed = unet_feed(batch, frames, size, make.SEED + 705)
        with torch.no_grad():
            want = _Unet(unet)(*feed).numpy()
        (got,) = sess.run(None, dict(zip(UNET_NAMES, (t.numpy() for t in feed))))
        checks.append({"batch": batch, "frames": frames, "latent_size": size,
                       "max_abs_diff": float(np.abs(got - want).max()), "max_abs_out": float(np.abs(want).max())})
    return checks


# ------------------------------------------------------------------------------------------------- references


def init_latents(seed):
    return torch.randn((1, 4, FRAMES, make.LATENT_SIZE, make.LATENT_SIZE), generator=torch.Generator().manual_seed(seed))


def first_call(pipe):
    """A hook that records the first U-Net call of a run (feed and output); returns the list it fills and its handle."""
    calls = []

    def hook(module, args, kwargs, output):
        if not calls:
            calls.append((args[0].detach().clone(), args[1], kwargs["encoder_hidden_states"].detach().clone(),
                          output.sample.detach().clone()))

    return calls, pipe.unet.register_forward_hook(hook, with_kwargs=True)


def save_first_call(calls, ref, sess, init):
    sample, t, states, out = calls[0]
    timestep = np.full([sample.shape[0]], float(t), dtype=np.float32)
    (got,) = sess.run(None, {"sample": sample.numpy(), "timestep": timestep, "encoder_hidden_states": states.numpy()})
    return {
        "note": ("The first U-Net call of case ddim, seed 0, under classifier-free guidance: the batch is "
                 "[uncond, cond] (torch.cat([negative_prompt_embeds, prompt_embeds]), then repeat_interleave over "
                 "frames: rows 0..F-1 of encoder_hidden_states are the negative prompt's, F..2F-1 the prompt's); "
                 "sample is torch.cat([latents] * 2) after scale_model_input. out_sample is torch's; the ORT "
                 "diff is unet/model.onnx on this feed."),
        "sample": make.save_npy(ref / "first_call_sample.npy", sample.numpy()),
        "timestep": make.save_npy(ref / "first_call_timestep.npy", timestep),
        "timestep_value": float(t),
        "encoder_hidden_states": make.save_npy(ref / "first_call_encoder_hidden_states.npy", states.numpy()),
        "out_sample": make.save_npy(ref / "first_call_out_sample.npy", out.numpy()),
        "sample_equals_init_latents": bool(torch.equal(sample[0:1], init) and torch.equal(sample[1:2], init)),
        "encoder_hidden_states_rows_per_half_equal": bool(all(torch.equal(states[h * FRAMES], states[h * FRAMES + i])
                                                              for h in (0, 1) for i in range(FRAMES))),
        "halves_differ": not torch.equal(states[0], states[FRAMES]),
        "ort_max_abs_diff": float(np.abs(got - out.numpy()).max()),
    }


def run_seed(pipe, seed, grab_first):
    """One pipeline call per seed (batch 1): frames (output_type "np") and final latents (output_type "latent")."""
    finals, seen = {}, {}

    def last(p, i, t, kw):
        finals["latents"] = kw["latents"].detach().clone()
        return kw

    def first(module, args, kwargs, output):
        seen.setdefault("sample", args[0].detach().clone())

    handle = pipe.unet.register_forward_hook(first, with_kwargs=True)
    kwargs = dict(prompt=PROMPT, num_frames=FRAMES, height=make.LATENT_SIZE * 8, width=make.LATENT_SIZE * 8,
                  num_inference_steps=STEPS, guidance_scale=GUIDANCE)
    try:
        frames = pipe(**kwargs, latents=init_latents(seed), output_type="np", callback_on_step_end=last).frames
    finally:
        handle.remove()
    calls, handle = first_call(pipe) if grab_first else ([], None)
    try:
        latents = pipe(**kwargs, latents=init_latents(seed), output_type="latent").frames
    finally:
        if handle is not None:
            handle.remove()
    assert torch.equal(latents, finals["latents"]), "latent run differs from the frames run"
    return np.asarray(frames, dtype=np.float32)[0], latents.numpy()[0], seen["sample"], calls


def run_case(pipe, name, scheduler, ref, sess):
    pipe.scheduler = scheduler
    frames, finals, firsts, out = [], [], [], {}
    for seed in SEEDS:
        f, z, s, calls = run_seed(pipe, seed, grab_first=(name == "ddim" and seed == 0))
        frames.append(f)
        finals.append(z)
        firsts.append(s)
        if calls:
            out["first_unet_call"] = save_first_call(calls, ref, sess, init_latents(seed))
    fresh = type(scheduler).from_config(scheduler.config)  # the pipeline's own start, on a scheduler not yet stepped
    fresh.set_timesteps(STEPS)
    inits = [init_latents(seed) for seed in SEEDS]
    frames = np.stack(frames)
    return {
        "name": name,
        "scheduler": make.plain_config(pipe.scheduler.config),
        "timesteps": [float(t) for t in pipe.scheduler.timesteps],
        "init_noise_sigma": float(fresh.init_noise_sigma),
        "sigma_0": float(fresh.sigmas[0]) if hasattr(fresh, "sigmas") else None,
        "first_unet_sample_is_init_latents": all(torch.equal(f[0:1], z) for f, z in zip(firsts, inits)),
        "first_unet_sample_over_init": float(sum((f[0:1] * z).sum() for f, z in zip(firsts, inits))
                                             / sum((z * z).sum() for z in inits)),
        "first_unet_sample_is_scale_model_input_of_init_times_init_noise_sigma": all(
            torch.equal(f, fresh.scale_model_input(torch.cat([z * fresh.init_noise_sigma] * 2), fresh.timesteps[0]))
            for f, z in zip(firsts, inits)),
        "final_latents": make.save_npy(ref / f"{name}_final_latents.npy", np.stack(finals)),
        "frames": make.save_npy(ref / f"{name}_frames.npy", frames),
        "frame_stats": {"min": float(frames.min()), "max": float(frames.max()), "mean": float(frames.mean())},
        **out,
    }


def references(pipe, dst, checks):
    import onnxruntime as ort
    from diffusers import EulerDiscreteScheduler

    ref = dst / "reference"
    if ref.exists():
        shutil.rmtree(ref)
    sess = ort.InferenceSession(str(dst / "unet" / "model.onnx"), providers=["CPUExecutionProvider"])
    ddim = pipe.scheduler
    cases = [run_case(pipe, "ddim", ddim, ref, sess),
             run_case(pipe, "euler", EulerDiscreteScheduler.from_config(ddim.config), ref, sess)]
    pipe.scheduler = ddim
    out = {
        "pipeline": "AnimateDiffPipeline (diffusers, PyTorch, CPU)",
        "prompt": PROMPT,
        "negative_prompt": "",
        "negative_prompt_note": "not passed (None): the pipeline's default, which encodes the empty string",
        "guidance_scale": GUIDANCE,
        "num_inference_steps": STEPS,
        "num_frames": FRAMES,
        "height": make.LATENT_SIZE * 8,
        "width": make.LATENT_SIZE * 8,
        "seeds": SEEDS,
        "init_latents": make.save_npy(ref / "init_latents.npy", np.stack([init_latents(s).numpy()[0] for s in SEEDS])),
        "note": (
            "One pipeline call per seed (batch 1) with latents=torch.randn((1, 4, F, 8, 8), "
            "generator=torch.Generator().manual_seed(seed)) [B, C, F, H, W]; the arrays stack seeds 0 and 1. "
            "prepare_latents multiplies given latents by scheduler.init_noise_sigma (after set_timesteps): 1.0 for "
            "DDIM, so the first U-Net sample is the given latents; for Euler with timestep_spacing 'linspace' (or "
            "'trailing') init_noise_sigma is sigma_max itself (not sqrt(sigma_max^2 + 1), which 'leading' gives), "
            "and the first scale_model_input divides by sqrt(sigma_0^2 + 1) with sigma_0 = sigma_max, so the first "
            "U-Net sample is the given latents times sigma_max / sqrt(sigma_max^2 + 1) (see each case's "
            "init_noise_sigma and first_unet_sample_over_init). "
            "final_latents: output_type='latent' [2, 4, F, 8, 8]. frames: output_type='np', "
            "clamp(decoded / 2 + 0.5, 0, 1) [2, F, 64, 64, 3] float32 (the VAE decodes latents / scaling_factor "
            "frame by frame). Under CFG the U-Net batch is [uncond, cond]; noise = uncond + g (cond - uncond)."
        ),
        "cases": cases,
        **checks,
        "versions": make.versions(),
    }
    make.write_json(ref / "reference.json", out)
    return out


# ------------------------------------------------------------------------------------------------------- main


def write_manifest(dst, extra):
    files, models = make.describe_dir(dst)
    ref_files = {str(p.relative_to(dst)): {"bytes": p.stat().st_size, "sha256": make.sha256(p)}
                 for p in sorted((dst / "reference").rglob("*")) if p.is_file()}
    size = sum(f["bytes"] for f in files.values()) + sum(f["bytes"] for f in ref_files.values())
    make.write_json(HERE / "manifest_video.json", {
        "generated_by": "tests/data/pipelines/make_video.py",
        "versions": make.versions(),
        "seed": make.SEED,
        "pipelines": {NAME: {"bytes": size, "exporter": extra, "models": models, "files": files,
                             "reference_files": ref_files}},
        "total_bytes": size,
    })
    return size


def main():
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    started = time.time()
    dst = HERE / NAME
    if dst.exists():
        shutil.rmtree(dst)
    work = Path(tempfile.mkdtemp(prefix="difflab-video-"))
    try:
        src, sd, vocab = build_sd1(work)
        unet, woken = motion_unet(sd.unet)
        pipe = animatediff(sd, unet)
        same = export_sd1_parts(src, work, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_index(pipe, dst)
    export_unet(unet, dst)
    checks = {
        "clip_vocab_from": vocab,
        "sd1_parts_same_files": same,
        "motion_adapter": ADAPTER | {"woken_zero_parameters": woken, "woken_std": 0.1},
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "frames_mix": frames_mix(unet),
        "unet_ort_vs_torch": ort_check(unet, dst / "unet" / "model.onnx"),
    }
    print(json.dumps(checks, indent=1))
    built = time.time() - started
    references(pipe, dst, checks)
    size = write_manifest(dst, "sd1 parts: optimum main_export; unet: torch.onnx.export (dynamo=False, opset 17)")
    print(f"done in {time.time() - started:.0f} s (build and export {built:.0f} s); {size / 1e6:.2f} MB in {NAME}/")


if __name__ == "__main__":
    main()
