#!/usr/bin/env python3
"""Builds difflab's tiny random-weight flow-matching pipelines, exports them with Optimum, and writes references.

Everything is made here from configs in code (no model hub), in the same environment as make.py:

  sd3   StableDiffusion3Pipeline: SD3Transformer2DModel, text_encoder + text_encoder_2 (CLIPTextModelWithProjection,
        "CLIP-L" and "CLIP-G"), text_encoder_3 (T5EncoderModel), a 16-channel AutoencoderKL with SD3's
        scaling/shift factors, FlowMatchEulerDiscreteScheduler as SD3-medium ships it (shift 3.0)
  flux  FluxPipeline: FluxTransformer2DModel with guidance_embeds (FLUX.1-dev style), text_encoder (CLIPTextModel,
        pooled), text_encoder_2 (T5EncoderModel), a 16-channel AutoencoderKL with FLUX's factors,
        FlowMatchEulerDiscreteScheduler as FLUX.1-dev ships it (dynamic shifting)

The CLIP towers and the CLIP tokenizer are make.py's (imported from it): sd3's text_encoder has sd1's text-model
weights plus a projection, sd3's text_encoder_2 is sdxl's text_encoder_2, flux's text_encoder is sd1's. The T5
tokenizer is a small Unigram model built here (deterministically, from word and character counts over a caption
corpus written in this file) and saved as a T5TokenizerFast (tokenizer.json) with T5's special tokens
(<pad> 0, </s> 1, <unk> 2, <extra_id_99> ... <extra_id_0> at the end of the vocabulary). sd3 and flux share the same
T5 encoder weights and tokenizer, as the real checkpoints share t5-v1_1-xxl.

Export: optimum.exporters.onnx.main_export(task="text-to-image", library_name="diffusers", do_validation=True), i.e.
`optimum-cli export onnx --task text-to-image`. References: ORTStableDiffusion3Pipeline / ORTFluxPipeline runs on
fixed initial latents (see README-style notes in reference/reference.json), every ONNX Runtime call that the pipeline
makes to the transformer (first step) and the VAE decoder recorded with its exact feed, text-encoder outputs, and
tokenizer ids.

  sana  SanaPipeline: SanaTransformer2DModel, Gemma2Model text encoder, AutoencoderDC (DC-AE, spatial factor 2),
        a GemmaTokenizerFast over the same T5 Unigram model (BOS = id 2 "<unk>", no EOS), FlowMatchEulerDiscreteScheduler
        (shift 3.0). References: ORTSanaPipeline (optimum.onnxruntime.modeling_diffusion) with use_resolution_binning
        False and the pipeline's default complex_human_instruction, at 32x64 (latents 4x16x32). `--skip-sana` skips it.

Run it from the repository root:

    /work/venvs/pipelines/bin/python tests/data/pipelines/make_flow.py
"""

import argparse
import itertools
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ for make.py next to the data

import numpy as np  # noqa: E402
import torch  # noqa: E402

import make as base  # noqa: E402  (make.py in this folder: helpers, CLIP vocabulary, CLIP towers)

SEED = base.SEED
TEXT_HIDDEN = base.TEXT_HIDDEN  # 8, both CLIP towers
CLIP_L_PROJ = 8  # sd3 text_encoder projection_dim
CLIP_G_PROJ = base.SDXL_POOLED_DIM  # 12, sd3 text_encoder_2 projection_dim (= sdxl's text_encoder_2)
SD3_POOLED = CLIP_L_PROJ + CLIP_G_PROJ  # 20
T5_D_MODEL = 24  # wider than the 8 + 8 concatenated CLIP states, so SD3's zero padding to T5's width is visible
T5_MAX_LENGTH = 16  # max_sequence_length used in every reference run
LATENT_CHANNELS = 16
LATENT_SIZE = 8  # latents 16x8x8, images 64x64 (VAE factor 8)
IMAGE_SIZE = LATENT_SIZE * 8

PROMPTS = ["a red circle", "a cat"]
NEGATIVE_PROMPT = "blurry"
STEPS = 4

SD3_VAE = dict(scaling_factor=1.5305, shift_factor=0.0609)  # stable-diffusion-3-medium-diffusers/vae
FLUX_VAE = dict(scaling_factor=0.3611, shift_factor=0.1159)  # FLUX.1-dev/vae
SD3_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)  # stable-diffusion-3-medium-diffusers/scheduler
FLUX_SCHEDULER = dict(  # FLUX.1-dev/scheduler
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)

LONG_PROMPT = base.AWKWARD_PROMPTS[6]  # 120 words: 151 CLIP tokens, far more than 16 T5 tokens
TOKENIZER_PROMPTS = [
    "",
    "a red circle",
    "a cat",
    "blurry",
    "A CAT!!!",
    "a blue star, a green ring and a yellow heart on a black background with a white cross",  # 20 T5 tokens
    "the digit 7 written as seven",
    "   multiple   spaces  ",
    "a\nb\tc",
    "café naïve 東京 🚀",
    "<extra_id_0> and </s> inside",
    LONG_PROMPT,
]


# ------------------------------------------------------------------------------------------------ T5 tokenizer

COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "black", "white", "grey", "brown", "cyan"]
SHAPES = ["circle", "square", "triangle", "star", "hexagon", "diamond", "ring", "cross", "heart", "arrow"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
EXTRA_SENTENCES = [
    "a cat sitting next to a dog",
    "a photo of a small cat",
    "a painting of a lighthouse at dusk",
    "blurry, low quality, bad drawing",
    "The shape is large and bright.",
    "Two circles and three squares!",
    "Is it a star or a cross?",
    "a big red circle inside a small blue square",
]


def t5_corpus():
    lines = []
    for i, (c, s) in enumerate(itertools.product(COLOURS, SHAPES)):
        lines.append(f"a {c} {s}")
        lines.append(f"A {c} {s} on a {COLOURS[(i * 5 + 3) % len(COLOURS)]} background.")
    for i, d in enumerate(DIGITS):
        lines.append(f"the digit {i}, written as {d}")
        lines.append(f"a photo of the number {i} in {COLOURS[i]} ink")
        lines.append(f"{d} {SHAPES[i]}s")
    return lines + EXTRA_SENTENCES + [LONG_PROMPT]


def t5_unigram_vocab(corpus):
    """SentencePiece-like Unigram vocabulary, deterministic: pieces are "▁" + each alphabetic word of the corpus, "▁",
    and every printable ASCII character; score = log(relative frequency) (characters counted per occurrence, +1
    smoothing). (tokenizers' UnigramTrainer is not deterministic from run to run, so it is not used.)"""
    words, chars = Counter(), Counter()
    for line in corpus:
        for w in line.split():
            head = re.match(r"[A-Za-z]+", w)
            words["▁" + (head.group(0) if head else "")] += 1
            chars.update(w)
    words.pop("▁", None)
    chars.update(chr(c) for c in range(33, 127))  # smoothing: every printable ASCII character is a piece
    chars["▁"] = sum(len(line.split()) for line in corpus)
    counts = dict(chars)
    for w, n in words.items():
        counts[w] = counts.get(w, 0) + n
    total = float(sum(counts.values()))
    pieces = sorted(((p, math.log(n / total)) for p, n in counts.items()), key=lambda x: (-x[1], x[0]))
    return pieces


def t5_tokenizer(corpus=None):
    """A T5TokenizerFast over the Unigram vocabulary of `corpus` (default: this file's caption corpus)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import T5TokenizerFast

    extra_ids = 100
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + t5_unigram_vocab(corpus or t5_corpus())
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)]  # as T5Converter orders them
    tok = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    # As transformers' SpmConverter writes T5's tokenizer.json, with NFKC (+ tab/newline -> space) in place of the
    # precompiled nmt_nfkc map.
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Replace(Regex("[\t\n\r]"), " "),  # nmt_nfkc maps these to spaces
            normalizers.Strip(left=False, right=True),
            normalizers.Replace(Regex(" {2,}"), "▁"),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    t5 = T5TokenizerFast(tokenizer_object=tok, extra_ids=extra_ids, model_max_length=512)
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    assert t5.convert_tokens_to_ids("<extra_id_0>") == len(vocab) - 1
    return t5


# ------------------------------------------------------------------------------------------------ components


def seeded(offset):
    torch.manual_seed(SEED + offset)


def t5_encoder(vocab_len):
    from transformers import T5Config, T5EncoderModel

    vocab_size = -(-vocab_len // 128) * 128  # rounded up as T5's 32100 tokens -> 32128 embeddings
    seeded(601)
    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=T5_D_MODEL,
            d_kv=8,
            d_ff=32,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=20,
            dropout_rate=0.0,
            feed_forward_proj="gated-gelu",  # T5 v1.1 (t5-v1_1-xxl in SD3 and FLUX)
            layer_norm_epsilon=1e-6,
            tie_word_embeddings=False,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
            use_cache=False,
        )
    )


def vae16(factors, offset):
    from diffusers import AutoencoderKL

    seeded(offset)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 8, 8, 8),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=IMAGE_SIZE,
        force_upcast=True,
        use_quant_conv=False,  # as the SD3 and FLUX VAEs
        use_post_quant_conv=False,
        **factors,
    )


def clip_towers():
    """make.py's towers: L (CLIPTextModel, quick_gelu) and G with projection 12 (CLIPTextModelWithProjection);
    sd3's text_encoder is L's text model plus a new 8 -> 8 projection."""
    from transformers import CLIPTextModelWithProjection

    tower_l, _tower_g, tower_g_proj = base.text_encoders()
    seeded(401)
    l_proj = CLIPTextModelWithProjection(base.text_config("quick_gelu", projection_dim=CLIP_L_PROJ))
    l_proj.text_model.load_state_dict(tower_l.text_model.state_dict())
    return tower_l, l_proj, tower_g_proj


def build_sd3(work, vocab_dir, t5_tok, t5, l_proj, g_proj):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    seeded(402)
    transformer = SD3Transformer2DModel(
        sample_size=LATENT_SIZE,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=T5_D_MODEL,
        caption_projection_dim=16,  # = heads * head_dim, as SD3 (1536 = 24 * 64)
        pooled_projection_dim=SD3_POOLED,
        out_channels=LATENT_CHANNELS,
        pos_embed_max_size=16,  # patches: latents up to 32x32 (256x256 images)
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER),
        vae=vae16(SD3_VAE, 403),
        text_encoder=l_proj,
        tokenizer=base.clip_tokenizer(vocab_dir, "<|endoftext|>"),
        text_encoder_2=g_proj,
        tokenizer_2=base.clip_tokenizer(vocab_dir, "!"),
        text_encoder_3=t5,
        tokenizer_3=t5_tok,
    )
    pipe.save_pretrained(work / "sd3", safe_serialization=True)
    return work / "sd3"


def build_flux(work, vocab_dir, t5_tok, t5, tower_l):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    seeded(502)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,  # 2x2 packed latents
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_D_MODEL,
        pooled_projection_dim=TEXT_HIDDEN,  # CLIPTextModel pooler_output
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim, as (16, 56, 56) sums to 128
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=vae16(FLUX_VAE, 503),
        text_encoder=tower_l,
        tokenizer=base.clip_tokenizer(vocab_dir, "<|endoftext|>"),
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    pipe.save_pretrained(work / "flux", safe_serialization=True)
    return work / "flux"


def build_sana(work, t5_tok):
    """Tiny SanaPipeline: SanaTransformer2DModel, Gemma2 text encoder, DC-AE (spatial factor 2), a GemmaTokenizerFast
    over the T5 Unigram model (BOS = id 2, no EOS), FlowMatchEulerDiscreteScheduler (shift 3.0)."""
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model, GemmaTokenizerFast

    seeded(701)
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(t5_tok) + 28,
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=4,
            max_position_embeddings=512,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        )
    )
    seeded(702)
    transformer = SanaTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=4,
        num_layers=1,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=8,
        patch_size=1,
    )
    seeded(703)
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1),
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    tokenizer = GemmaTokenizerFast(
        tokenizer_object=t5_tok.backend_tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        bos_token="<unk>",
    )
    pipe = SanaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    src = work / "sana"
    pipe.save_pretrained(src, safe_serialization=True)
    return src


# ----------------------------------------------------------------------------------------------- references


class Recorder:
    """Wraps session.run of ORT parts of a pipeline and keeps each call's exact feed and outputs (numpy)."""

    def __init__(self, pipe, names):
        self.calls = {n: [] for n in names}
        self._sessions = []
        for name in names:
            sess = getattr(pipe, name).session
            orig = sess.run

            def run(output_names, feed, *args, _name=name, _orig=orig, _sess=sess, **kwargs):
                outs = _orig(output_names, feed, *args, **kwargs)
                onames = output_names or [o.name for o in _sess.get_outputs()]
                self.calls[_name].append(
                    ({k: np.array(v) for k, v in feed.items()}, {k: np.array(v) for k, v in zip(onames, outs)})
                )
                return outs

            sess.run = run
            self._sessions.append(sess)

    def clear(self):
        for v in self.calls.values():
            v.clear()

    def restore(self):
        for sess in self._sessions:
            del sess.run


def save_call(ref, prefix, call):
    """One recorded ONNX Runtime call: the exact feed (dtypes kept) and the outputs."""
    feed, outs = call
    return {
        "inputs": {k: save_npy_exact(ref / f"{prefix}_in_{k}.npy", v) for k, v in feed.items()},
        "outputs": {k: save_npy_exact(ref / f"{prefix}_out_{k.replace('.', '_')}.npy", v) for k, v in outs.items()},
    }


def save_npy_exact(path, array):
    """Keeps the dtype (save_npy turns float64/float16 into float32; integer arrays are kept anyway)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array)
    np.save(path, array)
    return {"file": str(path.relative_to(HERE)), "dtype": str(array.dtype), "shape": list(array.shape)}


def fresh_ref(dst):
    ref = dst / "reference"
    if ref.exists():
        shutil.rmtree(ref)
    ref.mkdir(parents=True)
    return ref


def initial_latents(offset):
    g = torch.Generator().manual_seed(SEED + offset)
    return torch.randn(len(PROMPTS), LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE, generator=g, dtype=torch.float32)


def sched_state(pipe):
    return {
        "timesteps": [float(t) for t in pipe.scheduler.timesteps],
        "sigmas": [float(s) for s in pipe.scheduler.sigmas],
    }


def sd3_references(dst):
    from optimum.onnxruntime import ORTStableDiffusion3Pipeline

    pipe = ORTStableDiffusion3Pipeline.from_pretrained(str(dst), provider="CPUExecutionProvider")
    pipe.set_progress_bar_config(disable=True)
    ref = fresh_ref(dst)
    latents = initial_latents(407)
    rec = Recorder(pipe, ["transformer", "vae_decoder"])
    out = {
        "pipeline": type(pipe).__name__,
        "prompts": PROMPTS,
        "num_inference_steps": STEPS,
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
        "max_sequence_length": T5_MAX_LENGTH,
        "scheduler": base.plain_config(pipe.scheduler.config),
        "vae": {k: pipe.vae.config[k] for k in ("scaling_factor", "shift_factor")},
        "initial_latents": base.save_npy(ref / "initial_latents.npy", latents.numpy()),
        "note": (
            "latents= is the saved initial_latents [2,16,8,8] as-is (flow matching: no init_noise_sigma). "
            "guidance_scale 1.0 runs no CFG (batch 2, prompts only); 5.0 runs CFG with batch 4 = [negative x2, "
            "prompt x2]; without a negative prompt the negative branch encodes '' (real encodings, not zeros). "
            "images: output_type='np', NHWC, clamp(decoded/2+0.5, 0, 1). final_latents: output_type='latent'. "
            "step_latents[i]: latents after step i. transformer_step0: the exact feed ORT got at the first step "
            "(encoder_hidden_states = 77 CLIP tokens (L|G penultimate states, zero-padded to 24) + 16 T5 tokens; "
            "pooled_projections = [CLIP-L text_embeds | CLIP-G text_embeds]) and its output. vae_decoder_call: the "
            "decoder's feed (final_latents / scaling_factor + shift_factor) and output for case g5."
        ),
        "cases": [],
    }
    cases = [("g1", 1.0, NEGATIVE_PROMPT), ("g5", 5.0, NEGATIVE_PROMPT), ("g5_noneg", 5.0, None)]
    for tag, g, neg in cases:
        steps = []

        def grab(p, i, t, kw, steps=steps):
            steps.append((float(t), kw["latents"].detach().clone().numpy()))
            return kw

        kwargs = dict(
            prompt=PROMPTS,
            negative_prompt=[neg] * len(PROMPTS) if neg else None,
            num_inference_steps=STEPS,
            guidance_scale=g,
            height=IMAGE_SIZE,
            width=IMAGE_SIZE,
            max_sequence_length=T5_MAX_LENGTH,
            latents=latents.clone(),
        )
        rec.clear()
        images = pipe(**kwargs, output_type="np", callback_on_step_end=grab).images
        calls = {k: list(v) for k, v in rec.calls.items()}
        sched = sched_state(pipe)
        final = pipe(**kwargs, output_type="latent").images
        final = final.numpy() if isinstance(final, torch.Tensor) else np.asarray(final)
        assert np.array_equal(final, steps[-1][1]), "latent run differs from the image run's last step"
        assert len(calls["transformer"]) == STEPS and len(calls["vae_decoder"]) == 1
        case = {
            "name": tag,
            "guidance_scale": g,
            "do_classifier_free_guidance": g > 1,
            "negative_prompt": neg,
            **sched,
            "images": base.save_npy(ref / f"{tag}_images.npy", np.asarray(images, dtype=np.float32)),
            "final_latents": base.save_npy(ref / f"{tag}_final_latents.npy", final),
            "step_latents": base.save_npy(ref / f"{tag}_step_latents.npy", np.stack([s for _, s in steps])),
            "transformer_timesteps_fed": [float(c[0]["timestep"].reshape(-1)[0]) for c in calls["transformer"]],
            "transformer_step0": save_call(ref, f"{tag}_transformer_step0", calls["transformer"][0]),
            "image_stats": {"min": float(np.min(images)), "max": float(np.max(images)), "mean": float(np.mean(images))},
        }
        if tag == "g5":
            case["vae_decoder_call"] = save_call(ref, f"{tag}_vae_decoder", calls["vae_decoder"][0])
            expect = final / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
            assert np.allclose(calls["vae_decoder"][0][0]["latent_sample"], expect, atol=1e-6)
        out["cases"].append(case)
        print(f"  sd3 {tag}: timesteps {[round(t, 2) for t in sched['timesteps']]}, images in "
              f"[{case['image_stats']['min']:.3f}, {case['image_stats']['max']:.3f}]")
    rec.restore()
    out["text_encoders"] = text_encoder_references(
        dst, ref,
        [("text_encoder", "tokenizer", "clip"), ("text_encoder_2", "tokenizer_2", "clip"),
         ("text_encoder_3", "tokenizer_3", "t5")],
    )
    check_sd3_feeds(out, latents.numpy())
    out["tokenizers"] = tokenizer_references(
        dst, [("tokenizer", "clip"), ("tokenizer_2", "clip"), ("tokenizer_3", "t5")]
    )
    base.write_json(ref / "reference.json", out)


def flux_references(dst):
    from diffusers import FluxPipeline
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
    from optimum.onnxruntime import ORTFluxPipeline

    pipe = ORTFluxPipeline.from_pretrained(str(dst), provider="CPUExecutionProvider")
    pipe.set_progress_bar_config(disable=True)
    ref = fresh_ref(dst)
    latents = initial_latents(507)
    packed = FluxPipeline._pack_latents(latents, len(PROMPTS), LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
    assert torch.equal(FluxPipeline._unpack_latents(packed, IMAGE_SIZE, IMAGE_SIZE, 8), latents)
    image_seq_len = packed.shape[1]
    cfg = pipe.scheduler.config
    mu = calculate_shift(
        image_seq_len, cfg["base_image_seq_len"], cfg["max_image_seq_len"], cfg["base_shift"], cfg["max_shift"]
    )
    rec = Recorder(pipe, ["transformer", "vae_decoder"])
    out = {
        "pipeline": type(pipe).__name__,
        "prompts": PROMPTS,
        "num_inference_steps": STEPS,
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
        "max_sequence_length": T5_MAX_LENGTH,
        "scheduler": base.plain_config(pipe.scheduler.config),
        "vae": {k: pipe.vae.config[k] for k in ("scaling_factor", "shift_factor")},
        "image_seq_len": int(image_seq_len),
        "mu": mu,
        "sigmas_passed": [float(s) for s in np.linspace(1.0, 1 / STEPS, STEPS)],
        "initial_latents": base.save_npy(ref / "initial_latents.npy", latents.numpy()),
        "initial_latents_packed": base.save_npy(ref / "initial_latents_packed.npy", packed.numpy()),
        "note": (
            "latents= is initial_latents_packed [2,16,64] (the pipeline takes packed latents as-is); "
            "initial_latents [2,16,8,8] is the same unpacked. guidance_scale is fed to the transformer's guidance "
            "input (embedded guidance, no CFG batch); true_cfg runs a second transformer call per step with the "
            "negative prompt: noise = neg + true_cfg_scale * (pos - neg). final_latents / step_latents are packed "
            "[.., 2, 16, 64] (output_type='latent' returns packed latents); final_latents_unpacked is [2,16,8,8]. "
            "images: output_type='np', NHWC. transformer_step0 (and _neg for true CFG) is the exact ORT feed at step 0."
        ),
        "cases": [],
    }
    cases = [("g3.5", 3.5, None, 1.0), ("g3.5_truecfg4", 3.5, NEGATIVE_PROMPT, 4.0)]
    for tag, g, neg, true_cfg in cases:
        steps = []

        def grab(p, i, t, kw, steps=steps):
            steps.append((float(t), kw["latents"].detach().clone().numpy()))
            return kw

        kwargs = dict(
            prompt=PROMPTS,
            negative_prompt=[neg] * len(PROMPTS) if neg else None,
            true_cfg_scale=true_cfg,
            num_inference_steps=STEPS,
            guidance_scale=g,
            height=IMAGE_SIZE,
            width=IMAGE_SIZE,
            max_sequence_length=T5_MAX_LENGTH,
            latents=packed.clone(),
        )
        rec.clear()
        images = pipe(**kwargs, output_type="np", callback_on_step_end=grab).images
        calls = {k: list(v) for k, v in rec.calls.items()}
        sched = sched_state(pipe)
        final = pipe(**kwargs, output_type="latent").images
        final = final.numpy() if isinstance(final, torch.Tensor) else np.asarray(final)
        assert np.array_equal(final, steps[-1][1]), "latent run differs from the image run's last step"
        per_step = 2 if true_cfg > 1 and neg else 1
        assert len(calls["transformer"]) == STEPS * per_step and len(calls["vae_decoder"]) == 1
        unpacked = FluxPipeline._unpack_latents(torch.from_numpy(final), IMAGE_SIZE, IMAGE_SIZE, 8).numpy()
        case = {
            "name": tag,
            "guidance_scale": g,
            "true_cfg_scale": true_cfg,
            "negative_prompt": neg,
            **sched,
            "images": base.save_npy(ref / f"{tag}_images.npy", np.asarray(images, dtype=np.float32)),
            "final_latents": base.save_npy(ref / f"{tag}_final_latents.npy", final),
            "final_latents_unpacked": base.save_npy(ref / f"{tag}_final_latents_unpacked.npy", unpacked),
            "step_latents": base.save_npy(ref / f"{tag}_step_latents.npy", np.stack([s for _, s in steps])),
            "transformer_timesteps_fed": [
                float(c[0]["timestep"].reshape(-1)[0]) for c in calls["transformer"][::per_step]
            ],
            "transformer_step0": save_call(ref, f"{tag}_transformer_step0", calls["transformer"][0]),
            "image_stats": {"min": float(np.min(images)), "max": float(np.max(images)), "mean": float(np.mean(images))},
        }
        if per_step == 2:
            case["transformer_step0_neg"] = save_call(ref, f"{tag}_transformer_step0_neg", calls["transformer"][1])
        if tag == "g3.5":
            case["vae_decoder_call"] = save_call(ref, f"{tag}_vae_decoder", calls["vae_decoder"][0])
            expect = unpacked / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
            assert np.allclose(calls["vae_decoder"][0][0]["latent_sample"], expect, atol=1e-6)
        out["cases"].append(case)
        print(f"  flux {tag}: timesteps {[round(t, 2) for t in sched['timesteps']]}, images in "
              f"[{case['image_stats']['min']:.3f}, {case['image_stats']['max']:.3f}]")
    rec.restore()
    out["text_encoders"] = text_encoder_references(
        dst, ref, [("text_encoder", "tokenizer", "clip"), ("text_encoder_2", "tokenizer_2", "t5")]
    )
    check_flux_feeds(out, packed.numpy())
    out["tokenizers"] = tokenizer_references(dst, [("tokenizer", "clip"), ("tokenizer_2", "t5")])
    base.write_json(ref / "reference.json", out)


SANA_HEIGHT, SANA_WIDTH = 32, 64  # Sana wants multiples of 32; latents [4, 16, 32] (DC-AE factor 2), not square
SANA_LATENT_CHANNELS = 4
SANA_GUIDANCE = 4.5


def sana_default_chi():
    """SanaPipeline.__call__'s default complex_human_instruction (pipeline_sana.py:755-764)."""
    import inspect

    from diffusers import SanaPipeline

    return list(inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default)


def sana_tokenize(tok, prompts, chi, max_sequence_length):
    """What SanaPipeline._get_gemma_prompt_embeds tokenizes (pipeline_sana.py:300-326): lower().strip() of each
    prompt, the complex human instruction joined with "\n" and prepended, right padding to max_length_all."""
    tok.padding_side = "right"
    texts = [p.lower().strip() for p in prompts]  # _text_preprocessing with clean_caption=False
    info = {"prompts": list(prompts), "preprocessed": list(texts), "complex_human_instruction": chi or None}
    if not chi:
        max_length_all = max_sequence_length
    else:
        chi_prompt = "\n".join(chi)
        chi_ids = tok.encode(chi_prompt)  # with the BOS the tokenizer adds
        texts = [chi_prompt + t for t in texts]
        max_length_all = len(chi_ids) + max_sequence_length - 2
        info.update(chi_prompt=chi_prompt, num_chi_prompt_tokens=len(chi_ids), chi_prompt_ids=chi_ids)
    enc = tok(texts, padding="max_length", max_length=max_length_all, truncation=True, add_special_tokens=True,
              return_tensors="np")
    ids, mask = enc.input_ids.astype(np.int64), enc.attention_mask.astype(np.int64)
    info.update(texts_tokenized=texts, max_length=max_length_all)
    return info, ids, mask


def sana_select_index(max_sequence_length):
    """encode_prompt's select_index (pipeline_sana.py:407-408): the first position and the last max_length-1."""
    return [0] + list(range(-max_sequence_length + 1, 0))


def sana_text_encoder_references(dst, src, ref, chi):
    """The text encoder (ONNX Runtime) on the exact ids/masks that the pipeline feeds: 'prompts' (with the complex
    human instruction, before select_index), 'prompts_no_chi' (complex_human_instruction=None) and 'negative'
    (["blurry", ""], no instruction, no select_index, as the pipeline encodes negatives). Also compared with the torch
    Gemma2Model the export came from."""
    import onnxruntime as ort
    from transformers import Gemma2Model, GemmaTokenizerFast

    tok = GemmaTokenizerFast.from_pretrained(str(dst / "tokenizer"))
    sess = ort.InferenceSession(str(dst / "text_encoder" / "model.onnx"), providers=["CPUExecutionProvider"])
    torch_te = Gemma2Model.from_pretrained(str(src / "text_encoder")).eval() if src is not None else None
    sel = sana_select_index(T5_MAX_LENGTH)
    result = {
        "note": (
            "input_ids/attention_mask are what the pipeline feeds (int64, right padded). 'prompts' is before "
            "select_index; the transformer gets last_hidden_state[:, select_index] and attention_mask[:, "
            "select_index]. 'negative' is fed to the transformer as is (no select_index)."
        ),
        "select_index": sel,
        "batches": {},
    }
    batches = [("prompts", PROMPTS, chi), ("prompts_no_chi", PROMPTS, None), ("negative", [NEGATIVE_PROMPT, ""], None)]
    for label, prompts, c in batches:
        info, ids, mask = sana_tokenize(tok, prompts, c, T5_MAX_LENGTH)
        outs = dict(zip([o.name for o in sess.get_outputs()],
                        sess.run(None, {"input_ids": ids, "attention_mask": mask})))
        entry = {k: v for k, v in info.items() if k not in ("chi_prompt", "complex_human_instruction", "chi_prompt_ids")}
        if c:
            n = info["num_chi_prompt_tokens"]
            entry["chi_prompt_ids_are_the_prefix"] = all(row[:n] == info["chi_prompt_ids"] for row in ids.tolist())
            entry["chi_prompt_last_tokens"] = tok.convert_ids_to_tokens(info["chi_prompt_ids"][-3:])
        entry["input_ids"] = ids.tolist()
        entry["attention_mask"] = mask.tolist()
        entry["outputs"] = {k: base.save_npy(ref / f"text_encoder_{label}_{k}.npy", v) for k, v in outs.items()}
        if label.startswith("prompts"):
            entry["selected_positions"] = [i % ids.shape[1] for i in sel]
            entry["selected_input_ids"] = ids[:, sel].tolist()
            entry["selected_attention_mask"] = mask[:, sel].tolist()
        if torch_te is not None:
            with torch.no_grad():
                t = torch_te(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
            d = np.abs(t - outs["last_hidden_state"])
            real = mask.astype(bool)
            entry["onnx_vs_torch_max_abs_diff"] = {
                "real_tokens": float(d[real].max()),
                "padding": float(d[~real].max()) if (~real).any() else None,
            }
        result["batches"][label] = entry
    return result, tok


def sana_tokenizer_references(tok, dst):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(dst / "tokenizer" / "tokenizer.json"))
    tok.padding_side = "right"
    rows = []
    for p in TOKENIZER_PROMPTS:
        enc = tok(p, padding="max_length", max_length=T5_MAX_LENGTH, truncation=True)
        untruncated = tok(p, truncation=False).input_ids
        pipe_text = p.lower().strip()
        pipe_enc = tok(pipe_text, padding="max_length", max_length=T5_MAX_LENGTH, truncation=True)
        rows.append({
            "prompt": p,
            "ids": enc.input_ids,
            "attention_mask": enc.attention_mask,
            "untruncated_length": len(untruncated),
            "untruncated_ids": untruncated,
            "tokens": tok.convert_ids_to_tokens(untruncated),
            "tokenizers_lib_ids": raw.encode(p).ids,
            "tokenizers_lib_equal": raw.encode(p).ids == untruncated,
            "pipeline_text": pipe_text,
            "pipeline_ids": pipe_enc.input_ids,
            "pipeline_attention_mask": pipe_enc.attention_mask,
        })
    return {
        "tokenizer": {
            "class": type(tok).__name__,
            "call": f"tokenizer(prompt, padding='max_length', max_length={T5_MAX_LENGTH}, truncation=True), "
                    "padding_side='right' (the pipeline sets it; GemmaTokenizerFast's class default is 'left')",
            "pipeline_text": "prompt.lower().strip() (SanaPipeline._text_preprocessing, clean_caption=False)",
            "pad_token": tok.pad_token,
            "pad_token_id": tok.pad_token_id,
            "bos_token": tok.bos_token,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "unk_token_id": tok.unk_token_id,
            "add_bos_token": tok.add_bos_token,
            "add_eos_token": tok.add_eos_token,
            "default_padding_side": type(tok).padding_side,
            "truncation_side": tok.truncation_side,
            "vocab_size": len(tok),
            "prompts": rows,
        }
    }


def sana_references(dst, src):
    from optimum.onnxruntime.modeling_diffusion import ORTSanaPipeline  # not exported by optimum.onnxruntime

    pipe = ORTSanaPipeline.from_pretrained(str(dst), provider="CPUExecutionProvider")
    pipe.set_progress_bar_config(disable=True)
    ref = fresh_ref(dst)
    chi = sana_default_chi()
    vsf = pipe.vae_scale_factor
    g = torch.Generator().manual_seed(SEED + 707)
    latents = torch.randn(len(PROMPTS), SANA_LATENT_CHANNELS, SANA_HEIGHT // vsf, SANA_WIDTH // vsf, generator=g,
                          dtype=torch.float32)
    rec = Recorder(pipe, ["text_encoder", "transformer", "vae_decoder"])
    out = {
        "pipeline": type(pipe).__name__,
        "prompts": PROMPTS,
        "negative_prompt": NEGATIVE_PROMPT,
        "num_inference_steps": STEPS,
        "height": SANA_HEIGHT,
        "width": SANA_WIDTH,
        "max_sequence_length": T5_MAX_LENGTH,
        "use_resolution_binning": False,
        "complex_human_instruction": chi,
        "complex_human_instruction_note": "the pipeline's default (pipeline_sana.py:755-764), passed explicitly",
        "chi_prompt": "\n".join(chi),
        "scheduler": base.plain_config(pipe.scheduler.config),
        "vae": {
            "scaling_factor": pipe.vae.config["scaling_factor"],
            "shift_factor": pipe.vae.config.get("shift_factor"),
            "latent_channels": pipe.vae.config["latent_channels"],
            "encoder_block_out_channels": list(pipe.vae.config["encoder_block_out_channels"]),
            "decoder_block_out_channels": list(pipe.vae.config["decoder_block_out_channels"]),
            "vae_scale_factor": vsf,
            "decode": "vae_decoder(latent_sample = latents / scaling_factor); no shift",
        },
        "transformer_timestep_scale": pipe.transformer.config["timestep_scale"],
        "initial_latents": base.save_npy(ref / "initial_latents.npy", latents.numpy()),
        "note": (
            "latents= is initial_latents [2,4,16,32] as is. use_resolution_binning=False. guidance_scale 1.0 runs no "
            "CFG (batch 2); 4.5 runs CFG with batch 4 = [negative x2, prompt x2], the negative encoded without the "
            "complex human instruction and without select_index. images: output_type='np', NHWC, "
            "clamp(decoded/2+0.5, 0, 1), [2,32,64,3]. final_latents: output_type='latent' [2,4,16,32]. "
            "step_latents[i]: latents after step i. transformer_step0: the exact ORT feed and output at step 0. "
            "vae_decoder_call (case g4.5): feed = final_latents / scaling_factor."
        ),
        "cases": [],
    }
    te_calls = None
    for tag, gs in [("g1", 1.0), (f"g{SANA_GUIDANCE:g}", SANA_GUIDANCE)]:
        steps = []

        def grab(p, i, t, kw, steps=steps):
            steps.append((float(t), kw["latents"].detach().clone().numpy()))
            return kw

        kwargs = dict(
            prompt=PROMPTS,
            negative_prompt=NEGATIVE_PROMPT,
            num_inference_steps=STEPS,
            guidance_scale=gs,
            height=SANA_HEIGHT,
            width=SANA_WIDTH,
            max_sequence_length=T5_MAX_LENGTH,
            complex_human_instruction=chi,
            use_resolution_binning=False,
            latents=latents.clone(),
        )
        rec.clear()
        images = pipe(**kwargs, output_type="np", callback_on_step_end=grab).images
        calls = {k: list(v) for k, v in rec.calls.items()}
        sched = sched_state(pipe)
        final = pipe(**kwargs, output_type="latent").images
        final = final.numpy() if isinstance(final, torch.Tensor) else np.asarray(final)
        assert np.array_equal(final, steps[-1][1]), "latent run differs from the image run's last step"
        cfg = gs > 1
        assert len(calls["text_encoder"]) == (2 if cfg else 1)
        assert len(calls["transformer"]) == STEPS and len(calls["vae_decoder"]) == 1
        case = {
            "name": tag,
            "guidance_scale": gs,
            "do_classifier_free_guidance": cfg,
            **sched,
            "images": base.save_npy(ref / f"{tag}_images.npy", np.asarray(images, dtype=np.float32)),
            "final_latents": base.save_npy(ref / f"{tag}_final_latents.npy", final),
            "step_latents": base.save_npy(ref / f"{tag}_step_latents.npy", np.stack([s for _, s in steps])),
            "transformer_timesteps_fed": [float(c[0]["timestep"].reshape(-1)[0]) for c in calls["transformer"]],
            "transformer_step0": save_call(ref, f"{tag}_transformer_step0", calls["transformer"][0]),
            "image_stats": {"min": float(np.min(images)), "max": float(np.max(images)), "mean": float(np.mean(images))},
        }
        if cfg:
            te_calls = calls["text_encoder"]
            case["vae_decoder_call"] = save_call(ref, f"{tag}_vae_decoder", calls["vae_decoder"][0])
            expect = final / pipe.vae.config["scaling_factor"]
            assert np.allclose(calls["vae_decoder"][0][0]["latent_sample"], expect, rtol=1e-6, atol=1e-6)
        out["cases"].append(case)
        print(f"  sana {tag}: timesteps {[round(t, 2) for t in sched['timesteps']]}, images in "
              f"[{case['image_stats']['min']:.3f}, {case['image_stats']['max']:.3f}]")
    rec.restore()
    out["text_encoders"], tok = sana_text_encoder_references(dst, src, ref, chi)
    check_sana_feeds(out, latents.numpy(), te_calls)
    out["tokenizers"] = sana_tokenizer_references(tok, dst)
    base.write_json(ref / "reference.json", out)


def check_sana_feeds(out, latents, te_calls):
    """The pipeline's text-encoder feeds are what sana_tokenize builds; the transformer gets [negative x2 (no select),
    prompts[:, select_index]] (CFG) or the prompts alone, masks the same way, timestep = t * timestep_scale."""
    b = out["text_encoders"]["batches"]
    sel = out["text_encoders"]["select_index"]
    pos_feed, neg_feed = te_calls[0][0], te_calls[1][0]
    assert np.array_equal(pos_feed["input_ids"], np.array(b["prompts"]["input_ids"]))
    assert np.array_equal(pos_feed["attention_mask"], np.array(b["prompts"]["attention_mask"]))
    assert np.array_equal(neg_feed["input_ids"], np.array(b["negative"]["input_ids"])[[0, 0]])
    assert np.array_equal(neg_feed["attention_mask"], np.array(b["negative"]["attention_mask"])[[0, 0]])
    pos = _load(b["prompts"]["outputs"]["last_hidden_state"])[:, sel]
    pos_mask = np.array(b["prompts"]["attention_mask"])[:, sel]
    neg = _load(b["negative"]["outputs"]["last_hidden_state"])[[0, 0]]
    neg_mask = np.array(b["negative"]["attention_mask"])[[0, 0]]
    for case in out["cases"]:
        feed = {k: _load(v) for k, v in case["transformer_step0"]["inputs"].items()}
        if case["do_classifier_free_guidance"]:
            ehs, mask, x = np.concatenate([neg, pos]), np.concatenate([neg_mask, pos_mask]), np.concatenate([latents] * 2)
        else:
            ehs, mask, x = pos, pos_mask, latents
        assert np.allclose(feed["encoder_hidden_states"], ehs, rtol=0, atol=1e-6), case["name"]
        assert np.array_equal(feed["encoder_attention_mask"], mask) and feed["encoder_attention_mask"].dtype == np.int64
        assert np.array_equal(feed["hidden_states"], x)
        t0 = np.float32(case["timesteps"][0] * out["transformer_timestep_scale"])
        assert feed["timestep"].shape == (x.shape[0],) and np.all(feed["timestep"] == t0)


def _load(entry):
    return np.load(HERE / entry["file"])


def check_sd3_feeds(out, latents):
    """The recorded transformer feed is what the report says: [CLIP-L penultimate | CLIP-G penultimate | zeros] over
    77 tokens, then T5 over 16; pooled = [L text_embeds | G text_embeds]; CFG batch = [negative, prompt]."""
    te = out["text_encoders"]

    def enc(name, batch, output, row):
        return _load(te[name]["batches"][batch]["outputs"][output])[row]

    for case in out["cases"]:
        feed = {k: _load(v) for k, v in case["transformer_step0"]["inputs"].items()}
        n = len(PROMPTS)
        halves = [("prompts", range(n), range(n))]
        if case["do_classifier_free_guidance"]:  # negative rows first; "" (row 1 of the 'negative' batch) if none
            neg_rows = [0] * n if case["negative_prompt"] else [1] * n
            halves = [("negative", range(n), neg_rows), ("prompts", range(n, 2 * n), range(n))]
        for batch, rows, enc_rows in halves:
            for row, er in zip(rows, enc_rows):
                e, p = feed["encoder_hidden_states"][row], feed["pooled_projections"][row]
                assert np.array_equal(e[:77, :TEXT_HIDDEN], enc("text_encoder", batch, "hidden_states.1", er))
                assert np.array_equal(e[:77, TEXT_HIDDEN:2 * TEXT_HIDDEN], enc("text_encoder_2", batch, "hidden_states.1", er))
                assert not e[:77, 2 * TEXT_HIDDEN:].any()
                assert np.array_equal(e[77:], enc("text_encoder_3", batch, "last_hidden_state", er))
                pooled = np.concatenate(
                    [enc("text_encoder", batch, "text_embeds", er), enc("text_encoder_2", batch, "text_embeds", er)]
                )
                assert np.array_equal(p, pooled)
        assert np.array_equal(feed["hidden_states"][-n:], latents)
        assert np.all(feed["timestep"] == np.float32(case["timesteps"][0]))


def check_flux_feeds(out, packed):
    """Flux's transformer feed: T5 states, CLIP pooler_output, guidance = guidance_scale, timestep = t / 1000,
    txt_ids zeros [16, 3], img_ids [i, (0, row, col)]."""
    te = out["text_encoders"]

    def enc(name, batch, output):
        return _load(te[name]["batches"][batch]["outputs"][output])

    side = LATENT_SIZE // 2
    img_ids = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)
    img_ids = np.concatenate([np.zeros((side * side, 1), np.int64), img_ids], 1)
    for case in out["cases"]:
        calls = [("prompts", case["transformer_step0"])]
        if "transformer_step0_neg" in case:
            calls.append(("negative", case["transformer_step0_neg"]))
        for batch, call in calls:
            feed = {k: _load(v) for k, v in call["inputs"].items()}
            rows = [0, 0] if batch == "negative" else [0, 1]
            assert np.array_equal(feed["encoder_hidden_states"], enc("text_encoder_2", batch, "last_hidden_state")[rows])
            assert np.array_equal(feed["pooled_projections"], enc("text_encoder", batch, "pooler_output")[rows])
            assert np.all(feed["guidance"] == np.float32(case["guidance_scale"]))
            assert np.all(feed["timestep"] == np.float32(case["timesteps"][0] / 1000))
            assert np.array_equal(feed["txt_ids"], np.zeros((T5_MAX_LENGTH, 3), np.int64))
            assert np.array_equal(feed["img_ids"], img_ids)
            assert np.array_equal(feed["hidden_states"], packed)


def load_tokenizer(path, kind):
    from transformers import CLIPTokenizer, T5TokenizerFast

    return CLIPTokenizer.from_pretrained(str(path)) if kind == "clip" else T5TokenizerFast.from_pretrained(str(path))


def tokenize(tok, kind, prompts):
    max_length = base.MAX_LENGTH if kind == "clip" else T5_MAX_LENGTH
    return tok(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="np"), max_length


def text_encoder_references(dst, ref, pairs):
    """Every output of each text encoder for PROMPTS and for [NEGATIVE_PROMPT, ""], as ONNX Runtime gives it."""
    import onnxruntime as ort

    result = {"note": "batch 'prompts' = PROMPTS, batch 'negative' = [negative prompt, empty string]"}
    for enc, tok_dir, kind in pairs:
        tok = load_tokenizer(dst / tok_dir, kind)
        sess = ort.InferenceSession(str(dst / enc / "model.onnx"), providers=["CPUExecutionProvider"])
        entry = {"tokenizer": tok_dir, "batches": {}}
        for label, prompts in [("prompts", PROMPTS), ("negative", [NEGATIVE_PROMPT, ""])]:
            enc_in, max_length = tokenize(tok, kind, prompts)
            ids = enc_in.input_ids.astype(np.int64)
            outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input_ids": ids})))
            entry["batches"][label] = {
                "prompts": prompts,
                "max_length": max_length,
                "input_ids": ids.tolist(),
                "outputs": {
                    k: base.save_npy(ref / f"{enc}_{label}_{k.replace('.', '_')}.npy", v) for k, v in outs.items()
                },
            }
        result[enc] = entry
    return result


def tokenizer_references(dst, tokenizers):
    from tokenizers import Tokenizer

    out = {}
    for tok_dir, kind in tokenizers:
        tok = load_tokenizer(dst / tok_dir, kind)
        raw = Tokenizer.from_file(str(dst / tok_dir / "tokenizer.json")) if kind == "t5" else None
        rows = []
        for p in TOKENIZER_PROMPTS:
            enc, max_length = tokenize(tok, kind, p)
            untruncated = tok(p, truncation=False).input_ids
            row = {
                "prompt": p,
                "ids": enc.input_ids[0].tolist(),
                "attention_mask": enc.attention_mask[0].tolist(),
                "untruncated_length": len(untruncated),
                "untruncated_ids": untruncated,
                "tokens": tok.convert_ids_to_tokens(untruncated),
            }
            if raw is not None:
                row["tokenizers_lib_ids"] = raw.encode(p).ids
                row["tokenizers_lib_equal"] = row["tokenizers_lib_ids"] == untruncated
            rows.append(row)
        out[tok_dir] = {
            "class": type(tok).__name__,
            "call": f"tokenizer(prompt, padding='max_length', max_length={max_length}, truncation=True)",
            "pad_token": tok.pad_token,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
            "unk_token_id": tok.unk_token_id,
            "vocab_size": len(tok),
            "prompts": rows,
        }
    return out


# ------------------------------------------------------------------------------------------------------ main


def file_table(folder):
    return {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": base.sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=None, help="where the diffusers pipelines are saved (a temp dir)")
    ap.add_argument("--skip-references", action="store_true")
    ap.add_argument("--skip-sana", "--skip-sana-check", action="store_true", help="do not build/export sana/")
    args = ap.parse_args()
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    started = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="difflab-flow-"))
    work.mkdir(parents=True, exist_ok=True)
    _, _, bpe_sha = base.write_clip_vocab(work / "clip-vocab")

    print("building pipelines in", work)
    t5_tok = t5_tokenizer()
    t5 = t5_encoder(len(t5_tok))
    tower_l, l_proj, g_proj = clip_towers()
    srcs = {
        "sd3": build_sd3(work, work / "clip-vocab", t5_tok, t5, l_proj, g_proj),
        "flux": build_flux(work, work / "clip-vocab", t5_tok, t5, tower_l),
    }
    for name in ["sd3", "flux"]:
        print("exporting", name)
        base.export_optimum(srcs[name], HERE / name)
        stray = [p for p in (HERE / name).rglob("tokenizer.json") if "CLIP" in (p.parent / "tokenizer_config.json").read_text()]
        assert not stray, f"unexpected CLIP tokenizer.json: {stray}"
    export_seconds = time.time() - started

    if not args.skip_references:
        print("references")
        sd3_references(HERE / "sd3")
        flux_references(HERE / "flux")
    ref_seconds = time.time() - started - export_seconds

    names = ["sd3", "flux"]
    if not args.skip_sana:
        print("exporting sana")
        sana_src = build_sana(work, t5_tok)
        base.export_optimum(sana_src, HERE / "sana")
        names.append("sana")
        if not args.skip_references:
            print("references (sana)")
            sana_references(HERE / "sana", sana_src)
    sana_seconds = time.time() - started - export_seconds - ref_seconds

    manifest = {
        "generated_by": "tests/data/pipelines/make_flow.py",
        "versions": base.versions(),
        "seed": SEED,
        "clip_bpe": {"source": "open_clip/bpe_simple_vocab_16e6.txt.gz", "sha256": bpe_sha},
        "pipelines": {},
    }
    total = 0
    for name in names:
        files, models = base.describe_dir(HERE / name)
        ref_files = file_table(HERE / name / "reference")
        ref_files = {f"reference/{k}": v for k, v in ref_files.items()}
        size = sum(f["bytes"] for f in files.values()) + sum(f["bytes"] for f in ref_files.values())
        total += size
        manifest["pipelines"][name] = {
            "bytes": size,
            "exporter": "optimum main_export",
            "models": models,
            "files": files,
            "reference_files": ref_files,
        }
    manifest["total_bytes"] = total
    base.write_json(HERE / "manifest_flow.json", manifest)
    if args.work is None:
        shutil.rmtree(work)
    print(
        f"done in {time.time() - started:.0f} s (build and export {export_seconds:.0f} s, references "
        f"{ref_seconds:.0f} s, sana {sana_seconds:.0f} s); {total / 1e6:.2f} MB here"
    )


if __name__ == "__main__":
    main()
