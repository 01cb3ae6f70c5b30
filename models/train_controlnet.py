#!/usr/bin/env python3
"""Trains a tiny ControlNet for the shipped digits-sd: the edge map of a digit steers which digit is drawn.

The ControlNet is trained against the *shipped* U-Net, which is rebuilt in PyTorch from
models/digits-sd/unet/model.onnx (retraining digits-sd would not reproduce it bit for bit): the initializers
Optimum's export renamed — GroupNorm scales and shifts after InstanceNormalization, Linear weights stored
transposed for MatMul (attention projections, feed-forwards) — are matched to their modules in execution order,
every one of them is consumed, and the rebuilt U-Net must equal ONNX Runtime's within 1e-4. The U-Net is frozen.

Control images are `edge_map`s of the digits: the morphological gradient (3×3 cross) of the digit binarised at
half ink, white edges on black, RGB 32×32 in [0, 1] as diffusers' control image processor feeds them. The 9,000
training digits are encoded once by the shipped vae_encoder (ONNX Runtime), and a fresh posterior sample is drawn
at every step, as digits-sd's U-Net was trained (the posterior is narrow: mean or sample barely differ). That
encoder was trained later, towards the U-Net's own latent code (train_vae_encoder.py's cycle term;
`latent_code_check` measures how close: the U-Net's loss on encoded held-out digits beside its loss on its own
samples). Captions as digits-sd's, embedded once each by the shipped text_encoder, dropped to "" half of the time as
ControlNet training does. `ControlNetModel.from_unet` (with a conditioning embedding of two stride-2 stages,
32×32 → 8×8) learns the noise-prediction loss under the shipped scheduler's betas, AdamW, until a step count or a
wall-clock budget runs out, whichever comes first.

The U-Net and the ControlNet are exported as one graph, as diffusers' ControlNet-to-ONNX script exports them
(tests/data/pipelines/make_controlnet.py's `UNetWithControlNet`: inputs `sample`, `timestep` [1],
`encoder_hidden_states`, `controlnet_conds` [1, 2B, 3, 4H, 4W], `conditioning_scales` [1, 1]; output
`noise_pred`) into models/digits-sd-controlnet/model.onnx, with the ControlNet's config beside it; checked against
PyTorch, and at conditioning scale 0 against the shipped U-Net. The evaluation runs DDIM 20 on ONNX Runtime
(shipped text encoder, the exported graph, shipped VAE decoder) on held-out digits' edge maps and writes
models/figures_controlnet.json: control accuracy (empty prompt, g = 1), edge IoU, and a prompt-vs-control
conflict ("a handwritten 8" at g = 4 on edges of other digits), each at conditioning scales 0, 0.5, 1, 1.5.

    /work/venvs/pipelines/bin/python models/train_controlnet.py     # ~15 min on 2 cores: 4,000 steps or 14 min
    /work/venvs/pipelines/bin/python models/train_controlnet.py --max-minutes 2 --eval-per-class 3    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train.py: must be set before torch loads
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent
REPO_DIR = MODELS_DIR.parent
sys.path.insert(0, str(MODELS_DIR))
import train as mnist  # noqa: E402
import train_conditional as tc  # noqa: E402
from train import Clock, log  # noqa: E402

SD_DIR = MODELS_DIR / "digits-sd"
OUT_DIR = MODELS_DIR / "digits-sd-controlnet"
SCALES = [0.0, 0.5, 1.0, 1.5]
CONFLICT_PROMPT, CONFLICT_DIGIT, CONFLICT_GUIDANCE = "a handwritten 8", 8, 4.0
EVAL_STEPS = 20
MAX_EXTRA_BYTES = 5_000_000  # the folder may exceed the U-Net's own file by this much


# ----------------------------------------------------------------------------
# control images


def edge_map(digit: np.ndarray) -> Image.Image:
    """White edges on black, RGB 32×32: the morphological gradient (3×3 cross) of the digit binarised at 128.

    `digit` is uint8, white ink on black, either a 28×28 MNIST digit (padded by 2 background pixels, as digits-sd
    sees digits) or a 32×32 image (a decoded sample)."""
    a = np.asarray(digit)
    assert a.dtype == np.uint8 and a.shape in ((28, 28), (32, 32)), (a.dtype, a.shape)
    if a.shape == (28, 28):
        a = np.pad(a, tc.PAD)
    ink = np.pad(a >= 128, 1)
    centre = ink[1:-1, 1:-1]
    cross = [ink[:-2, 1:-1], ink[2:, 1:-1], ink[1:-1, :-2], ink[1:-1, 2:]]
    dilated = centre | np.logical_or.reduce(cross)
    eroded = centre & np.logical_and.reduce(cross)
    edges = ((dilated & ~eroded) * 255).astype(np.uint8)
    return Image.fromarray(np.stack([edges] * 3, axis=-1), "RGB")


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """[N,3,32,32] in [-1,1] (digits-sd's image space) -> grey uint8 [N,32,32]."""
    x = np.asarray(images, dtype=np.float32).mean(axis=1)
    return np.round((x + 1) / 2 * 255).clip(0, 255).astype(np.uint8)


def mnist_uint8(images28: np.ndarray) -> np.ndarray:
    return np.round(images28 * 255).clip(0, 255).astype(np.uint8)


def control_images(digits_uint8: np.ndarray) -> np.ndarray:
    """Edge maps as the network takes them: float32 [N,3,32,32] in [0,1] (no normalisation to [-1,1])."""
    return np.stack([np.asarray(edge_map(d), dtype=np.float32).transpose(2, 0, 1) / 255 for d in digits_uint8])


def edge_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image IoU of two stacks of edge maps ([N,3,32,32] in [0,1])."""
    ea, eb = a[:, 0] > 0.5, b[:, 0] > 0.5
    inter = (ea & eb).sum(axis=(1, 2))
    union = (ea | eb).sum(axis=(1, 2))
    return inter / np.maximum(union, 1)


# ----------------------------------------------------------------------------
# the shipped networks


def ort_session(path: Path, threads: int):
    return mnist.ort_session(path, threads)


def shipped_unet(threads: int):
    """UNet2DConditionModel with the shipped weights, checked against models/digits-sd/unet/model.onnx."""
    import onnx
    from diffusers import UNet2DConditionModel
    from onnx import numpy_helper

    path = SD_DIR / "unet" / "model.onnx"
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumer = {name: node.op_type for node in graph.node for name in node.input if name in inits}
    renamed = [i.name for i in graph.initializer if i.name.startswith("onnx::")]
    queue = iter(renamed)

    def take(op: str) -> np.ndarray:
        name = next(queue)
        assert consumer[name] == op, f"{name} feeds {consumer[name]}, expected {op}"
        return inits[name]

    unet = UNet2DConditionModel.from_config(json.loads((SD_DIR / "unet" / "config.json").read_text())).eval()
    names = {module: name for name, module in unet.named_modules()}
    order = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m) if m not in order else None)
             for m in unet.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.Linear))]
    with torch.no_grad():
        unet(torch.zeros(1, 4, 8, 8), torch.tensor(1.0), encoder_hidden_states=torch.zeros(1, tc.MAX_LENGTH, 16))
    for h in hooks:
        h.remove()
    state = {k: torch.from_numpy(v.copy()) for k, v in inits.items() if not k.startswith("onnx::")}
    for module in order:  # the export's renamed initializers come in the order their modules run
        name = names[module]
        if name + ".weight" in inits:  # kept its name (a Gemm, a LayerNormalization)
            continue
        if isinstance(module, torch.nn.GroupNorm):  # InstanceNormalization, then Mul (scale) and Add (shift)
            state[name + ".weight"] = torch.from_numpy(take("Mul").reshape(-1).copy())
            state[name + ".bias"] = torch.from_numpy(take("Add").reshape(-1).copy())
        else:  # a Linear's weight as a MatMul's, transposed
            state[name + ".weight"] = torch.from_numpy(take("MatMul").T.copy())
    assert next(queue, None) is None, "an initializer of the U-Net was not matched"
    unet.load_state_dict(state, strict=True)  # every parameter set, no initializer left over
    diff = unet_vs_onnx(unet, path, threads)
    assert diff < 1e-4, f"the rebuilt U-Net differs from the shipped one by {diff}"
    log(f"U-Net rebuilt from {path.relative_to(REPO_DIR)} ({len(renamed)} renamed initializers matched): "
        f"max |torch - onnx| {diff:.1e}")
    for p in unet.parameters():
        p.requires_grad_(False)
    return unet, {"renamed_initializers": len(renamed), "rebuilt_unet_vs_onnx_max_abs_diff": diff}


@torch.no_grad()
def unet_vs_onnx(unet, path: Path, threads: int) -> float:
    session = ort_session(path, threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, 8, 8, generator=gen)
    hidden = torch.randn(4, tc.MAX_LENGTH, 16, generator=gen)
    diff = 0.0
    for t in (999, 500, 250, 21, 1):
        ours = unet(x, torch.tensor(float(t)), encoder_hidden_states=hidden).sample.numpy()
        theirs = session.run(None, {"sample": x.numpy(), "timestep": np.array(t, dtype=np.float32),
                                    "encoder_hidden_states": hidden.numpy()})[0]
        diff = max(diff, float(np.abs(ours - theirs).max()))
    return diff


def sd_config(part: str) -> dict:
    return json.loads((SD_DIR / part / ("scheduler_config.json" if part == "scheduler" else "config.json")).read_text())


def encode_latents(images_sd: torch.Tensor, threads: int, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std [N,4,8,8] of the shipped vae_encoder (unscaled)."""
    session = ort_session(SD_DIR / "vae_encoder" / "model.onnx", threads)
    params = np.concatenate([session.run(None, {"sample": images_sd[i:i + batch].numpy()})[0]
                             for i in range(0, len(images_sd), batch)])
    mean, logvar = torch.from_numpy(params).chunk(2, dim=1)
    return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))  # as diffusers' DiagonalGaussianDistribution


def make_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(SD_DIR / "tokenizer"))


def embed_prompts(prompts: list[str], threads: int) -> np.ndarray:
    """last_hidden_state [N,77,16] of the shipped text encoder, one row per prompt."""
    ids = tc.tokenize(make_tokenizer(), prompts).numpy()
    session = ort_session(SD_DIR / "text_encoder" / "model.onnx", threads)
    return session.run(["last_hidden_state"], {"input_ids": ids})[0]


# ----------------------------------------------------------------------------
# training


def build_controlnet(unet, args):
    from diffusers import ControlNetModel

    torch.manual_seed(args.seed)
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(args.cond_channels))


def caption_table(threads: int) -> tuple[torch.Tensor, int]:
    """Embeddings of every caption of every digit (row digit * len(TEMPLATES) + template), then the empty prompt."""
    prompts = [tc.caption(d, t) for d in range(10) for t in tc.TEMPLATES] + [""]
    return torch.from_numpy(embed_prompts(prompts, threads)), len(prompts) - 1


def draw_captions(labels: torch.Tensor, gen, empty_row: int, args) -> torch.Tensor:
    """digits-sd's caption mix ("a handwritten N" with main_caption_prob, else another phrasing), then dropout."""
    b, n_t = len(labels), len(tc.TEMPLATES)
    other = torch.randint(1, n_t, (b,), generator=gen)
    template = torch.where(torch.rand(b, generator=gen) < args.main_caption_prob, torch.zeros_like(other), other)
    rows = labels * n_t + template
    return torch.where(torch.rand(b, generator=gen) < args.caption_dropout, torch.full_like(rows, empty_row), rows)


def predict(unet, controlnet, zt, t, hidden, cond, scale: float = 1.0) -> torch.Tensor:
    down, mid = controlnet(zt, t, encoder_hidden_states=hidden, controlnet_cond=cond, conditioning_scale=scale,
                           return_dict=False)
    return unet(zt, t, encoder_hidden_states=hidden, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample


def train_controlnet(unet, controlnet, data: dict, args) -> dict:
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(sd_config("scheduler"))
    params = list(controlnet.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    mean, std, conds, labels, sf = data["mean"], data["std"], data["conds"], data["labels"], data["scaling_factor"]
    table, empty_row = data["captions"], data["empty_row"]
    perm, pos = torch.randperm(len(labels), generator=gen), 0
    losses, window, stopped_by = [], [], "steps"
    clock = Clock()
    controlnet.train()
    step = 0
    while step < args.max_steps:
        if clock.wall() >= 60 * args.max_minutes:
            stopped_by = "time"
            break
        step += 1
        if pos + args.batch > len(perm):
            perm, pos = torch.randperm(len(labels), generator=gen), 0
        idx = perm[pos:pos + args.batch]
        pos += args.batch
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * sf
        hidden = table[draw_captions(labels[idx], gen, empty_row, args)]
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(idx),), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        zt = noise_sched.add_noise(z0, noise, t)
        # the budget may end training at any step, so no decay: linear warm-up, then constant (as diffusers' script)
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / args.warmup)
        loss = F.mse_loss(predict(unet, controlnet, zt, t, hidden, conds[idx].expand(-1, 3, -1, -1)), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        window.append(loss.item())
        if step % args.log_every == 0:
            log(f"  controlnet step {step}: loss {np.mean(window):.4f} "
                f"({clock.wall() / step:.3f} s/step wall, {clock.cpu() / step:.3f} s/step CPU)")
            window = []
    controlnet.eval()
    timing = clock.record()
    log(f"  stopped by {stopped_by} after {step} steps, {timing['wall_s']} s")
    return {"steps": step, "stopped_by": stopped_by, "max_steps": args.max_steps, "max_minutes": args.max_minutes,
            **{f"train_{k}": v for k, v in timing.items()},
            "s_per_step_wall": round(timing["wall_s"] / max(step, 1), 4),
            "s_per_step_cpu": round(timing["cpu_s"] / max(step, 1), 4),
            "final_loss_last100_mean": round(float(np.mean(losses[-100:])), 5) if losses else None}


@torch.no_grad()
def heldout_loss(unet, controlnet, data: dict, seed: int) -> dict:
    """Noise-prediction loss on held-out digits (fixed t and noise), with and without the control, for the
    empty prompt and for "a handwritten N": what the control adds beyond the caption."""
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(sd_config("scheduler"))
    gen = torch.Generator().manual_seed(seed)
    mean, std, conds, labels = data["held_mean"], data["held_std"], data["held_conds"], data["held_labels"]
    z0 = (mean + std * torch.randn(mean.shape, generator=gen)) * data["scaling_factor"]
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(z0),), generator=gen)
    noise = torch.randn(z0.shape, generator=gen)
    zt = noise_sched.add_noise(z0, noise, t)
    cond = conds.expand(-1, 3, -1, -1)
    out = {}
    for prompt, rows in [("empty", torch.full_like(labels, data["empty_row"])),
                         ("a_handwritten_N", labels * len(tc.TEMPLATES))]:
        hidden = data["captions"][rows]
        for scale in (0.0, 1.0):
            pred = torch.cat([predict(unet, controlnet, zt[i:i + 250], t[i:i + 250], hidden[i:i + 250],
                                      cond[i:i + 250], scale) for i in range(0, len(z0), 250)])
            out[f"{prompt}_scale_{scale:g}"] = round(float(F.mse_loss(pred, noise)), 5)
    return out


# ----------------------------------------------------------------------------
# export


def export(unet, controlnet, data: dict, args) -> dict:
    import onnx

    sys.path.insert(0, str(REPO_DIR / "tests" / "data" / "pipelines"))
    from make_controlnet import UNetWithControlNet

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / "model.onnx"
    for old in OUT_DIR.iterdir():
        old.unlink()
    model = UNetWithControlNet(unet, [controlnet]).eval()
    gen = torch.Generator().manual_seed(args.seed + 2)
    example = (torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([1.0]),
               torch.randn(2, tc.MAX_LENGTH, 16, generator=gen), torch.rand(1, 2, 3, tc.IMAGE, tc.IMAGE, generator=gen),
               torch.ones(1, 1))
    with torch.no_grad():
        torch.onnx.export(model, example, str(path),
                          input_names=["sample", "timestep", "encoder_hidden_states", "controlnet_conds",
                                       "conditioning_scales"],
                          output_names=["noise_pred"],
                          dynamic_axes={"sample": {0: "2B", 2: "H", 3: "W"}, "encoder_hidden_states": {0: "2B"},
                                        "controlnet_conds": {1: "2B", 3: "4H", 4: "4W"}, "noise_pred": {0: "2B"}},
                          opset_version=tc.ONNX_OPSET, do_constant_folding=True, dynamo=False)
    (OUT_DIR / "controlnet_config.json").write_text(controlnet.to_json_string())
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)

    def shape(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    unet_bytes = (SD_DIR / "unet" / "model.onnx").stat().st_size
    files = {p.name: p.stat().st_size for p in sorted(OUT_DIR.iterdir())}
    extra = sum(files.values()) - unet_bytes
    assert extra <= MAX_EXTRA_BYTES, f"{OUT_DIR.name} is {extra} bytes beyond the U-Net's {unet_bytes}"
    res = {"opset": tc.ONNX_OPSET, "inputs": {i.name: shape(i) for i in proto.graph.input},
           "outputs": {o.name: shape(o) for o in proto.graph.output},
           "file_bytes": files, "shipped_unet_bytes": unet_bytes, "bytes_beyond_unet": extra,
           "controlnet_params": sum(p.numel() for p in controlnet.parameters()),
           **check_export(model, path, data, args)}
    log(f"exported {path.relative_to(REPO_DIR)}: {json.dumps(res)}")
    return res


@torch.no_grad()
def check_export(model, path: Path, data: dict, args) -> dict:
    """The exported graph against PyTorch at scale 1, and at scale 0 against the shipped U-Net's ONNX file."""
    combined = ort_session(path, args.threads)
    shipped = ort_session(SD_DIR / "unet" / "model.onnx", args.threads)
    gen = torch.Generator().manual_seed(args.seed + 3)
    n = 6
    x = torch.randn(n, 4, 8, 8, generator=gen)
    hidden = data["captions"][torch.randint(0, len(data["captions"]), (n,), generator=gen)]
    conds = data["held_conds"][:n].expand(-1, 3, -1, -1)[None].contiguous()
    vs_torch = vs_shipped = 0.0
    for t in (999, 500, 250, 21, 1):
        feeds = {"sample": x.numpy(), "timestep": np.array([t], dtype=np.float32),
                 "encoder_hidden_states": hidden.numpy(), "controlnet_conds": conds.numpy()}
        ours = model(x, torch.tensor([float(t)]), hidden, conds, torch.ones(1, 1)).numpy()
        got = combined.run(None, {**feeds, "conditioning_scales": np.ones((1, 1), np.float32)})[0]
        vs_torch = max(vs_torch, float(np.abs(ours - got).max()))
        off = combined.run(None, {**feeds, "conditioning_scales": np.zeros((1, 1), np.float32)})[0]
        plain = shipped.run(None, {"sample": x.numpy(), "timestep": np.array(t, dtype=np.float32),
                                   "encoder_hidden_states": hidden.numpy()})[0]
        vs_shipped = max(vs_shipped, float(np.abs(off - plain).max()))
    assert vs_torch < 1e-4, f"the exported graph differs from PyTorch by {vs_torch}"
    assert vs_shipped < 1e-4, f"at conditioning scale 0 the graph differs from the shipped U-Net by {vs_shipped}"
    return {"onnx_vs_torch_max_abs_diff_scale_1": vs_torch, "scale_0_vs_shipped_unet_max_abs_diff": vs_shipped}


# ----------------------------------------------------------------------------
# evaluation on ONNX Runtime


class OrtControlPipeline:
    """DDIM on ONNX Runtime: the exported U-Net + ControlNet graph and the shipped VAE decoder."""

    def __init__(self, threads: int) -> None:
        self.net = ort_session(OUT_DIR / "model.onnx", threads)
        self.decoder = ort_session(SD_DIR / "vae_decoder" / "model.onnx", threads)
        self.scaling_factor = sd_config("vae_decoder")["scaling_factor"]
        self.scheduler_config = sd_config("scheduler")

    def __call__(self, latents: torch.Tensor, cond_hidden: np.ndarray, uncond_hidden: np.ndarray,
                 controls: np.ndarray, scale: float, guidance: float, batch: int = 100) -> np.ndarray:
        """Images [N,3,32,32] in [-1,1]; hidden states are one row [77,16] shared by the batch."""
        return np.concatenate([self.sample(latents[i:i + batch], cond_hidden, uncond_hidden, controls[i:i + batch],
                                           scale, guidance) for i in range(0, len(latents), batch)])

    def sample(self, latents, cond_hidden, uncond_hidden, controls, scale, guidance) -> np.ndarray:
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(self.scheduler_config)
        sched.set_timesteps(EVAL_STEPS)
        b = len(latents)
        guided = guidance > 1.0
        # diffusers' order: unconditional half first; the control image goes to both halves
        hidden = np.concatenate([np.repeat(uncond_hidden[None], b, 0), np.repeat(cond_hidden[None], b, 0)]) \
            if guided else np.repeat(cond_hidden[None], b, 0)
        conds = np.concatenate([controls, controls]) if guided else controls
        feeds = {"encoder_hidden_states": hidden.astype(np.float32), "controlnet_conds": conds[None].astype(np.float32),
                 "conditioning_scales": np.full((1, 1), scale, dtype=np.float32)}
        x = latents.clone() * sched.init_noise_sigma
        for t in sched.timesteps:
            x_in = torch.cat([x, x]) if guided else x
            eps = torch.from_numpy(self.net.run(None, {**feeds, "sample": x_in.numpy(),
                                                       "timestep": np.array([t], dtype=np.float32)})[0])
            if guided:
                uncond, cond = eps.chunk(2)
                eps = uncond + guidance * (cond - uncond)
            x = sched.step(eps, t, x).prev_sample
        return self.decoder.run(None, {"latent_sample": (x / self.scaling_factor).numpy()})[0]


def classify(extractor, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and softmax probabilities of digits-sd images [N,3,32,32] in [-1,1]."""
    _, logits = extractor(tc.sd_to_classifier(torch.from_numpy(images)))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return logits.argmax(1), probs / probs.sum(1, keepdims=True)


def heldout_controls(images28: np.ndarray, labels: np.ndarray, held: np.ndarray, per_class: int):
    """The first `per_class` held-out digits of each class: their indices, labels and edge maps."""
    idx = np.concatenate([held[labels[held] == d][:per_class] for d in range(10)])
    return idx, labels[idx], control_images(mnist_uint8(images28[idx]))


def reconstruction_iou(pipe, images28: np.ndarray, controls: np.ndarray, threads: int) -> float:
    """Edge IoU of the digits themselves through the shipped VAE (posterior mean): about the most a sample
    could reach, as the decoder softens strokes."""
    mean, _ = encode_latents(tc.to_sd_space(images28), threads)
    images = pipe.decoder.run(None, {"latent_sample": mean.numpy()})[0]
    return round(float(edge_iou(control_images(to_uint8(images)), controls).mean()), 4)


def evaluate(images28, labels, held, extractor, args) -> dict:
    clock = Clock()
    pipe = OrtControlPipeline(args.threads)
    empty, eight = embed_prompts(["", CONFLICT_PROMPT], args.threads)
    idx, y, controls = heldout_controls(images28, labels, held, args.eval_per_class)
    latents = tc.eval_latents(len(idx), args.seed + 5000)
    free, conflict = {}, {}
    other = y != CONFLICT_DIGIT
    for scale in SCALES:
        images = pipe(latents, empty, empty, controls, scale, 1.0)
        pred, _ = classify(extractor, images)
        iou = edge_iou(control_images(to_uint8(images)), controls)
        free[f"{scale:g}"] = {"control_accuracy": round(float((pred == y).mean()), 4),
                              "per_digit_accuracy": [round(float((pred[y == d] == d).mean()), 3) for d in range(10)],
                              "edge_iou": round(float(iou.mean()), 4)}
        images = pipe(latents[other], eight, empty, controls[other], scale, CONFLICT_GUIDANCE)
        pred, _ = classify(extractor, images)
        conflict[f"{scale:g}"] = {"reads_as_prompt_8": round(float((pred == CONFLICT_DIGIT).mean()), 4),
                                  "reads_as_control_digit": round(float((pred == y[other]).mean()), 4),
                                  "edge_iou": round(float(edge_iou(control_images(to_uint8(images)),
                                                                   controls[other]).mean()), 4)}
        log(f"  scale {scale:g}: empty prompt, g = 1: {json.dumps(free[f'{scale:g}'])}; "
            f"\"{CONFLICT_PROMPT}\", g = {CONFLICT_GUIDANCE:g}: {json.dumps(conflict[f'{scale:g}'])}")
    return {"sampler": f"DDIMScheduler (shipped config), {EVAL_STEPS} steps, ONNX Runtime",
            "classifier": "models/mnist16-features.onnx", "control_images": len(idx),
            "per_class": args.eval_per_class, "latent_seeds": f"{args.seed + 5000} + i, one per control image",
            "edge_iou_of_vae_reconstructions": reconstruction_iou(pipe, images28[idx], controls, args.threads),
            "empty_prompt_g1": free,
            "conflict": {"prompt": CONFLICT_PROMPT, "guidance": CONFLICT_GUIDANCE,
                         "controls": f"edges of the {int(other.sum())} held-out digits above that are not 8",
                         "scales": conflict},
            **{f"eval_{k}": v for k, v in clock.record().items()}}


# ----------------------------------------------------------------------------


def prepare(images28, labels, train_idx, held_idx, args) -> dict:
    """Latent posteriors, control images and caption embeddings, computed once."""
    clock = Clock()
    mean, std = encode_latents(tc.to_sd_space(images28[train_idx]), args.threads)
    held = held_idx[:args.heldout_loss_digits]
    held_mean, held_std = encode_latents(tc.to_sd_space(images28[held]), args.threads)
    sf = sd_config("vae_encoder")["scaling_factor"]
    captions, empty_row = caption_table(args.threads)
    data = {"mean": mean, "std": std, "labels": torch.from_numpy(labels[train_idx]), "scaling_factor": sf,
            "conds": torch.from_numpy(control_images(mnist_uint8(images28[train_idx]))[:, :1]),
            "held_mean": held_mean, "held_std": held_std, "held_labels": torch.from_numpy(labels[held]),
            "held_conds": torch.from_numpy(control_images(mnist_uint8(images28[held]))[:, :1]),
            "captions": captions, "empty_row": empty_row}
    gen = torch.Generator().manual_seed(args.seed + 4)
    sampled = (mean + std * torch.randn(mean.shape, generator=gen)) * sf
    data["figures"] = {"latent": "posterior sample, drawn afresh every step (as digits-sd's U-Net was trained)",
                       "scaling_factor": sf, "scaled_latent_std_sample": round(float(sampled.std()), 4),
                       "scaled_latent_std_mean": round(float((mean * sf).std()), 4),
                       "posterior_std_mean": round(float(std.mean()), 4), "distinct_captions": len(captions),
                       **{f"prepare_{k}": v for k, v in clock.record().items()}}
    log(f"prepared {len(train_idx)} training digits: {json.dumps(data['figures'])}")
    return data


@torch.no_grad()
def latent_code_check(unet, data: dict, args, n: int = 100, guidance: float = 4.0) -> dict:
    """How close the shipped vae_encoder's latents are to the code the U-Net was trained on. The encoder was
    trained afterwards, and a frozen decoder alone cannot tell apart every pair of latents it decodes alike;
    so U-Net samples ("a handwritten N", DDIM 20) are decoded and encoded again, and the U-Net's own loss
    (no control) on its samples is set beside its loss on encoded held-out digits (same t and noise)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    y = torch.arange(n) % 10
    cond = data["captions"][y * len(tc.TEMPLATES)]
    uncond = data["captions"][torch.full_like(y, data["empty_row"])]
    sched = DDIMScheduler.from_config(sd_config("scheduler"))
    sched.set_timesteps(EVAL_STEPS)
    z = tc.eval_latents(n, args.seed + 7000)
    for t in sched.timesteps:
        u, c = unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
        z = sched.step(u + guidance * (c - u), t, z).prev_sample
    sf = data["scaling_factor"]
    decoder = ort_session(SD_DIR / "vae_decoder" / "model.onnx", args.threads)
    decoded = torch.from_numpy(decoder.run(None, {"latent_sample": (z / sf).numpy()})[0])
    again = encode_latents(decoded, args.threads)[0] * sf
    noise_sched = DDPMScheduler.from_config(sd_config("scheduler"))
    gen = torch.Generator().manual_seed(args.seed + 8)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (n,), generator=gen)
    noise = torch.randn(z.shape, generator=gen)

    def loss(z0, hidden):
        pred = unet(noise_sched.add_noise(z0, noise, t), t, encoder_hidden_states=hidden).sample
        return round(float(F.mse_loss(pred, noise)), 4)

    def rms(v):
        return v.pow(2).mean().sqrt()

    held = data["held_mean"][:n] * sf
    return {"reencoded_unet_samples_rel_rms_diff": round(float(rms(again - z) / rms(z)), 4),
            "unet_loss_on_own_samples": loss(z, cond),
            "unet_loss_on_encoded_heldout": loss(held, data["captions"][data["held_labels"][:n] * len(tc.TEMPLATES)]),
            "per_channel_mean_own_samples": [round(v, 3) for v in z.mean((0, 2, 3)).tolist()],
            "per_channel_mean_encoded_heldout": [round(v, 3) for v in held.mean((0, 2, 3)).tolist()]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 0.15-0.23 s a step on 2 cores: 4,000 steps take 10-15 min; the wall-clock limit stops a slower machine
    p.add_argument("--max-steps", type=int, default=4000, help="stop after this many steps ...")
    p.add_argument("--max-minutes", type=float, default=14.0, help="... or this much training wall time")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--cond-channels", type=int, nargs=3, default=[8, 16, 32],
                   help="conditioning embedding channels: 32x32, then two stride-2 stages to 16x16 and 8x8")
    p.add_argument("--caption-dropout", type=float, default=0.5)
    p.add_argument("--main-caption-prob", type=float, default=0.25)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--heldout-loss-digits", type=int, default=500)
    p.add_argument("--eval-per-class", type=int, default=20)
    p.add_argument("--seed", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "difflab" / "mnist")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    total = Clock()
    images28, labels = mnist.load_digits(mnist.fetch_mnist(args.cache))
    train_idx, held_idx = mnist.make_split(len(images28))
    extractor = mnist.FeatureExtractor(MODELS_DIR / "mnist16-features.onnx", args.threads)
    unet, rebuild = shipped_unet(args.threads)
    data = prepare(images28, labels, train_idx, held_idx, args)
    data["figures"]["latent_code_check"] = latent_code_check(unet, data, args)
    log(f"latent code check: {json.dumps(data['figures']['latent_code_check'])}")
    controlnet = build_controlnet(unet, args)
    log(f"ControlNet: {sum(p.numel() for p in controlnet.parameters())} params, conditioning embedding "
        f"{args.cond_channels}; batch {args.batch}, lr {args.lr}, "
        f"budget {args.max_steps} steps / {args.max_minutes} min")
    training = train_controlnet(unet, controlnet, data, args)
    training["heldout_loss"] = heldout_loss(unet, controlnet, data, args.seed + 6)
    log(f"held-out loss: {json.dumps(training['heldout_loss'])}")
    figures = {
        "controlnet": "diffusers ControlNetModel.from_unet of the shipped digits-sd U-Net (frozen), "
                      "control = edge_map of the digit (morphological gradient, 3x3 cross, binarised at 128)",
        "conditioning_embedding_out_channels": args.cond_channels, "batch_size": args.batch, "lr": args.lr,
        "warmup": args.warmup, "caption_dropout": args.caption_dropout, "seed": args.seed, **rebuild,
        "data": data.pop("figures"), "training": training, "onnx": export(unet, controlnet, data, args),
        "evaluation": evaluate(images28, labels, held_idx, extractor, args),
    }
    figures.update({f"script_{k}": v for k, v in total.record().items()})
    tc.write_json(MODELS_DIR / "figures_controlnet.json", figures)
    log(f"figures -> {(MODELS_DIR / 'figures_controlnet.json').relative_to(REPO_DIR)} "
        f"({figures['script_wall_s']} s wall in all)")


if __name__ == "__main__":
    main()
