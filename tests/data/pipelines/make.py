#!/usr/bin/env python3
"""Builds difflab's tiny random-weight diffusion pipelines, exports them with Optimum, and writes references.

Everything is made here from configs in code (no model hub):

  sd1        StableDiffusionPipeline, epsilon prediction, PNDM scheduler config as SD 1.5 ships it,
             tokenizer padded with <|endoftext|>
  sd2v       StableDiffusionPipeline, v-prediction, DDIM scheduler config as SD 2.1 ships it, tokenizer padded with "!"
  sdxl       StableDiffusionXLPipeline: text_encoder (CLIPTextModel) + text_encoder_2 (CLIPTextModelWithProjection),
             addition_embed_type "text_time", Euler scheduler config as SDXL base ships it
  classcond  class-conditional UNet2DModel (10 classes + 1 "null" class) at 3x16x16 with a DDPM scheduler config

The CLIP tokenizer is the real 49408-token one, built from the BPE file that open-clip-torch ships.
The three text-to-image pipelines are saved with diffusers' save_pretrained into a work folder and exported from
there with Optimum's `main_export` (optimum-onnx), so their layout and input names are Optimum's own. Optimum does not
export a bare UNet2DModel, so classcond's U-Net goes through torch.onnx.export with Optimum's U-Net names.

References (see README.md): ORTStableDiffusionPipeline / ORTStableDiffusionXLPipeline runs on fixed initial
latents, CLIPTokenizer ids for awkward prompts, text-encoder outputs, one classcond U-Net call.

Run it from the repository root (about 15 seconds on two cores, once the environment is installed):

    /work/venvs/pipelines/bin/python tests/data/pipelines/make.py
"""

import argparse
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 1234
TEXT_HIDDEN = 8  # the 49408-row token embedding dominates each text encoder: 49408 * 8 * 4 B = 1.58 MB
MAX_LENGTH = 77
LATENT_SIZE = 8  # U-Net sample_size; the VAE has 4 blocks (factor 8), so images are 64x64
UNET_CHANNELS = (8, 16)
SDXL_POOLED_DIM = 12  # text_encoder_2's projection_dim, unlike the hidden size so the two cannot be mixed up

PROMPTS = ["a red circle", "a cat"]
NEGATIVE_PROMPT = "blurry"
STEPS = 4
GUIDANCES = [1.0, 7.5]

AWKWARD_PROMPTS = [
    "",
    "a cat",
    "A CAT!!!",
    "café naïve 東京 🚀",
    "hello,world.(test)[x]{y}",
    "don't stop-believing",
    " ".join(
        f"{w}{i}" if i % 7 == 3 else w
        for i, w in enumerate(
            (
                "a very long prompt about a painting of a lighthouse on a rocky coast at dusk with waves "
                "crashing below seagulls circling overhead and warm light glowing from the lantern room while "
                "dark clouds gather over the distant horizon and a small fishing boat returns to the harbor "
                "its crew tired after a long day at sea the water shimmering in shades of orange purple and "
                "deep blue as the first stars appear above the cliffs and the wind carries the smell of salt "
                "and pine from the forest that climbs the hills behind the old stone keeper's cottage where "
                "a single candle burns in the window waiting for someone to come home tonight"
            ).split()[:120]
        )
    ),
    "   multiple   spaces  ",
    "a\nb\tc",
    "fish &amp; chips, 1234567 ½",
    "ÉCOLE Straße",
]


# --------------------------------------------------------------------------------------------------- helpers


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def seeded(offset):
    torch.manual_seed(SEED + offset)


def save_npy(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array)
    if array.dtype == np.float64 or array.dtype == np.float16:
        array = array.astype(np.float32)
    np.save(path, array)
    return {"file": str(path.relative_to(HERE)), "dtype": str(array.dtype), "shape": list(array.shape)}


def finite_json(obj):
    """Strict JSON: a non-finite float (DPMSolverMultistep's lambda_min_clipped is -inf) becomes "-inf"/"inf"/"nan"."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return "nan" if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(finite_json(obj), f, indent=2, ensure_ascii=False, sort_keys=False, allow_nan=False)
        f.write("\n")


def versions():
    names = [
        "torch", "transformers", "diffusers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "numpy",
        "tokenizers", "huggingface-hub", "ftfy", "open-clip-torch", "safetensors",
    ]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = None
    return out


# ------------------------------------------------------------------------------------------------ tokenizer


def bytes_to_unicode():
    """CLIP's (and GPT-2's) reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_clip_vocab(dst):
    """vocab.json + merges.txt of the real CLIP BPE (49408 tokens), from open-clip-torch's bpe_simple_vocab_16e6."""
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it (it needs torchvision)
    if spec is None or spec.origin is None:
        sys.exit("open-clip-torch is needed for its BPE file: pip install --no-deps open-clip-torch (see README)")
    gz = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(gz).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(m) for m in merges)
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    assert len(vocab) == 49408, len(vocab)
    dst.mkdir(parents=True, exist_ok=True)
    with open(dst / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(dst / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(" ".join(m) for m in merges) + "\n")
    return dst / "vocab.json", dst / "merges.txt", sha256(gz)


def clip_tokenizer(vocab_dir, pad_token):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        vocab_file=str(vocab_dir / "vocab.json"),
        merges_file=str(vocab_dir / "merges.txt"),
        pad_token=pad_token,
        model_max_length=MAX_LENGTH,
    )


# ------------------------------------------------------------------------------------------------ components


def text_config(act, projection_dim=TEXT_HIDDEN):
    from transformers import CLIPTextConfig

    # bos/eos/pad ids 0/2/1 as the SD checkpoints' text_encoder/config.json have them (the legacy eos id 2 makes the
    # pooled output take the argmax of input_ids, i.e. the first <|endoftext|>).
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=4 * TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_LENGTH,
        hidden_act=act,
        projection_dim=projection_dim,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


def vae(scaling_factor, force_upcast, offset):
    from diffusers import AutoencoderKL

    seeded(offset)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=LATENT_SIZE * 8,
        scaling_factor=scaling_factor,
        force_upcast=force_upcast,
    )


def text_encoders():
    """Two CLIP text towers: "L" (quick_gelu, as OpenAI's CLIP ViT-L in SD 1.x and SDXL's text_encoder) and "G"
    (gelu, as the OpenCLIP towers in SD 2.x and SDXL's text_encoder_2). sd1 and sdxl share L's weights and sd2v and
    sdxl's text_encoder_2 share G's, as the real checkpoints share towers; identical weights also let git store the
    big token-embedding tables once per tower."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    seeded(2)
    tower_l = CLIPTextModel(text_config("quick_gelu"))
    seeded(102)
    tower_g = CLIPTextModel(text_config("gelu", projection_dim=SDXL_POOLED_DIM))
    seeded(203)
    tower_g_proj = CLIPTextModelWithProjection(text_config("gelu", projection_dim=SDXL_POOLED_DIM))
    tower_g_proj.text_model.load_state_dict(tower_g.text_model.state_dict())
    return tower_l, tower_g, tower_g_proj


def build_sd(name, work, vocab_dir, v_prediction, text_encoder):
    from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    base = 100 if v_prediction else 0
    seeded(base + 1)
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=UNET_CHANNELS,
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=TEXT_HIDDEN,
        # SD 1.x: attention_head_dim is (in diffusers' naming quirk) the number of heads; SD 2.x: per-block head dims
        attention_head_dim=(4, 8) if v_prediction else 2,
        use_linear_projection=v_prediction,
    )
    common = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        steps_offset=1,
    )
    if v_prediction:  # SD 2.1 (768-v) ships a DDIM config
        scheduler = DDIMScheduler(**common, clip_sample=False, prediction_type="v_prediction")
    else:  # SD 1.5 ships PNDM with skip_prk_steps
        scheduler = PNDMScheduler(**common, skip_prk_steps=True)
    tokenizer = clip_tokenizer(vocab_dir, "!" if v_prediction else "<|endoftext|>")
    pipe = StableDiffusionPipeline(
        vae=vae(0.18215, False, base + 3),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(work / name, safe_serialization=True)
    return work / name


def build_sdxl(work, vocab_dir, text_encoder, text_encoder_2):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    pooled_dim = SDXL_POOLED_DIM
    time_embed_dim = 4
    seeded(201)
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=UNET_CHANNELS,
        layers_per_block=1,
        transformer_layers_per_block=(1, 2),
        norm_num_groups=8,
        cross_attention_dim=2 * TEXT_HIDDEN,  # hidden states of both encoders, concatenated
        attention_head_dim=(4, 8),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + pooled_dim,
    )
    scheduler = EulerDiscreteScheduler(  # as stable-diffusion-xl-base-1.0 ships it
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        prediction_type="epsilon",
        steps_offset=1,
        timestep_spacing="leading",
        use_karras_sigmas=False,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae(0.13025, True, 204),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=clip_tokenizer(vocab_dir, "<|endoftext|>"),
        tokenizer_2=clip_tokenizer(vocab_dir, "!"),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(work / "sdxl", safe_serialization=True)
    return work / "sdxl"


def build_classcond(work):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    seeded(301)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        block_out_channels=UNET_CHANNELS,
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=4,
        num_class_embeds=11,  # classes 0..9, and 10 as the "no class" label for classifier-free guidance
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=True
    )
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(work / "classcond", safe_serialization=True)
    return work / "classcond"


# ---------------------------------------------------------------------------------------------------- export


def export_optimum(src, dst):
    from optimum.exporters.onnx import main_export

    if dst.exists():
        shutil.rmtree(dst)
    # Export from inside the work folder with a relative name, so that the `_name_or_path` that the configs record
    # is "sd1" and not a temporary path (the files are then the same from run to run).
    here = os.getcwd()
    os.chdir(src.parent)
    try:
        main_export(
            model_name_or_path=src.name,
            output=str(dst),
            task="text-to-image",
            library_name="diffusers",
            device="cpu",
            do_validation=True,
        )
    finally:
        os.chdir(here)


class _ClassCondUNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, class_labels):
        return self.unet(sample, timestep, class_labels=class_labels, return_dict=False)[0]


def export_classcond(src, dst):
    """Optimum has no exporter for a bare UNet2DModel: torch.onnx.export with Optimum's U-Net names and opset."""
    from diffusers import UNet2DModel

    if dst.exists():
        shutil.rmtree(dst)
    here = os.getcwd()
    os.chdir(src.parent)  # a relative path, as for the Optimum exports: the config's _name_or_path is "classcond/unet"
    try:
        unet = UNet2DModel.from_pretrained(f"{src.name}/unet").eval()
    finally:
        os.chdir(here)
    (dst / "unet").mkdir(parents=True)
    shutil.copy(src / "model_index.json", dst / "model_index.json")
    shutil.copytree(src / "scheduler", dst / "scheduler")
    unet.save_config(dst / "unet")
    sample = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(SEED))
    # Rank-0 float timestep as in Optimum's U-Net exports (UNet2DModel broadcasts it over the batch).
    timestep = torch.tensor(500.0, dtype=torch.float32)
    class_labels = torch.tensor([3, 10], dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(
            _ClassCondUNet(unet),
            (sample, timestep, class_labels),
            str(dst / "unet" / "model.onnx"),
            input_names=["sample", "timestep", "class_labels"],
            output_names=["out_sample"],
            dynamic_axes={"sample": {0: "batch_size"}, "class_labels": {0: "batch_size"}, "out_sample": {0: "batch_size"}},
            opset_version=18,
            do_constant_folding=True,
            dynamo=False,
        )


def drop_untracked(dst):
    """Optimum's export also writes the fast tokenizer's tokenizer.json (~2 MB each) when the tokenizer is fast;
    ours are slow CLIPTokenizers, as in the SD checkpoints, so there is normally nothing to drop."""
    dropped = []
    for p in sorted(dst.rglob("tokenizer.json")):
        dropped.append(str(p.relative_to(HERE)))
        p.unlink()
    return dropped


# ------------------------------------------------------------------------------------------------- describe


def describe_onnx(path):
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path), load_external_data=False)

    def vi(v):
        t = v.type.tensor_type
        shape = []
        for d in t.shape.dim:
            shape.append(d.dim_param if d.HasField("dim_param") else int(d.dim_value))
        return {"name": v.name, "dtype": TensorProto.DataType.Name(t.elem_type).lower(), "shape": shape}

    init_names = {i.name for i in model.graph.initializer}
    return {
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [vi(i) for i in model.graph.input if i.name not in init_names],
        "outputs": [vi(o) for o in model.graph.output],
    }


def describe_dir(dst):
    files = {}
    models = {}
    for p in sorted(dst.rglob("*")):
        if not p.is_file() or "reference" in p.relative_to(dst).parts:
            continue
        rel = str(p.relative_to(dst))
        files[rel] = {"bytes": p.stat().st_size, "sha256": sha256(p)}
        if p.suffix == ".onnx":
            models[str(p.parent.relative_to(dst))] = describe_onnx(p)
    return files, models


# ----------------------------------------------------------------------------------------------- references


def scheduler_for(kind, shipped_config):
    """DDIM and DPM++ 2M built from the shipped config, with SD's DDIM settings made explicit."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if kind == "ddim":
        return DDIMScheduler.from_config(shipped_config, clip_sample=False, set_alpha_to_one=False)
    if kind == "dpmpp_2m":
        return DPMSolverMultistepScheduler.from_config(
            shipped_config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=False
        )
    raise ValueError(kind)


def plain_config(cfg):
    return {k: v for k, v in dict(cfg).items() if not k.startswith("_") or k == "_class_name"}


def pipeline_references(name, dst, xl, cases, extra_cases=()):
    from optimum.onnxruntime import ORTStableDiffusionPipeline, ORTStableDiffusionXLPipeline

    cls = ORTStableDiffusionXLPipeline if xl else ORTStableDiffusionPipeline
    pipe = cls.from_pretrained(str(dst), provider="CPUExecutionProvider")
    pipe.set_progress_bar_config(disable=True)
    shipped = dict(pipe.scheduler.config)
    ref = dst / "reference"
    if ref.exists():
        shutil.rmtree(ref)
    latents = torch.randn(
        len(PROMPTS), 4, LATENT_SIZE, LATENT_SIZE, generator=torch.Generator().manual_seed(SEED + 7), dtype=torch.float32
    )
    out = {
        "pipeline": cls.__name__,
        "prompts": PROMPTS,
        "num_inference_steps": STEPS,
        "height": LATENT_SIZE * 8,
        "width": LATENT_SIZE * 8,
        "initial_latents": save_npy(ref / "initial_latents.npy", latents.numpy()),
        "note": (
            "Initial latents are passed as `latents=` (the pipeline multiplies them by init_noise_sigma, 1.0 for "
            "DDIM and DPM++ 2M). Images are output_type='np': (decoded / 2 + 0.5).clamp(0, 1), NHWC float32. "
            "step_latents[i] are the latents after step i (callback_on_step_end); the last equals final_latents "
            "(output_type='latent', before the 1/scaling_factor and the VAE). guidance_scale 1.0 runs no "
            "classifier-free guidance (the negative prompt is not used)."
        ),
        "cases": [],
    }
    for sched_kind, g, neg in list(cases) + list(extra_cases):
        pipe.scheduler = scheduler_for(sched_kind, shipped)
        tag = f"{sched_kind}_g{g:g}" + ("" if neg else "_noneg")
        steps = []

        def grab(p, i, t, kw, steps=steps):
            steps.append((int(t), kw["latents"].detach().clone().numpy()))
            return kw

        kwargs = dict(
            prompt=PROMPTS,
            negative_prompt=[NEGATIVE_PROMPT] * len(PROMPTS) if neg else None,
            num_inference_steps=STEPS,
            guidance_scale=g,
            latents=latents.clone(),
        )
        images = pipe(**kwargs, output_type="np", callback_on_step_end=grab).images
        final = pipe(**kwargs, output_type="latent").images
        final = final.numpy() if isinstance(final, torch.Tensor) else np.asarray(final)
        assert np.array_equal(final, steps[-1][1]), "latent run differs from the image run's last step"
        case = {
            "name": tag,
            "scheduler": plain_config(pipe.scheduler.config),
            "guidance_scale": g,
            "negative_prompt": NEGATIVE_PROMPT if neg else None,
            "timesteps": [t for t, _ in steps],
            "images": save_npy(ref / f"{tag}_images.npy", np.asarray(images, dtype=np.float32)),
            "final_latents": save_npy(ref / f"{tag}_final_latents.npy", final),
            "step_latents": save_npy(ref / f"{tag}_step_latents.npy", np.stack([s for _, s in steps])),
            "image_stats": {"min": float(np.min(images)), "max": float(np.max(images)), "mean": float(np.mean(images))},
        }
        if xl:
            case["add_time_ids"] = [LATENT_SIZE * 8, LATENT_SIZE * 8, 0, 0, LATENT_SIZE * 8, LATENT_SIZE * 8]
        out["cases"].append(case)
        print(f"  {name} {tag}: images {images.shape} in [{case['image_stats']['min']:.3f}, {case['image_stats']['max']:.3f}]")
    out["text_encoders"] = text_encoder_references(dst, ref, xl)
    write_json(ref / "reference.json", out)


def text_encoder_references(dst, ref, xl):
    import onnxruntime as ort
    from transformers import CLIPTokenizer

    prompt = PROMPTS[0]
    result = {"prompt": prompt}
    pairs = [("text_encoder", "tokenizer")] + ([("text_encoder_2", "tokenizer_2")] if xl else [])
    for enc, tok_dir in pairs:
        tok = CLIPTokenizer.from_pretrained(str(dst / tok_dir))
        ids = tok(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="np").input_ids
        sess = ort.InferenceSession(str(dst / enc / "model.onnx"), providers=["CPUExecutionProvider"])
        feed_type = {i.name: i.type for i in sess.get_inputs()}
        feed = {"input_ids": ids.astype(np.int32 if feed_type["input_ids"] == "tensor(int32)" else np.int64)}
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        entry = {"input_ids": ids[0].tolist(), "input_dtype": feed_type["input_ids"], "outputs": {}}
        for oname, val in outs.items():
            entry["outputs"][oname] = save_npy(ref / f"{enc}_{oname.replace('.', '_')}.npy", val)
        result[enc] = entry
    return result


def tokenizer_references(sd1, sd2v):
    """ids + attention masks (padded/truncated to 77) from transformers' CLIPTokenizer, for both pad tokens.

    `ids` is the slow CLIPTokenizer with ftfy installed (what the pipelines use when ftfy is there, and the text
    cleaning the original CLIP does); `ids_without_ftfy` is the same tokenizer's fallback (BERT BasicTokenizer: it
    puts spaces around CJK characters, among others) and `ids_fast` is CLIPTokenizerFast converted from the same
    files; `fast_equal` and `without_ftfy_equal` say whether those equal `ids`."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast
    from transformers.models.bert.tokenization_bert import BasicTokenizer

    out = {"max_length": MAX_LENGTH, "call": "tokenizer(prompt, padding='max_length', max_length=77, truncation=True)", "tokenizers": {}}
    for label, d in [("endoftext_pad", sd1 / "tokenizer"), ("bang_pad", sd2v / "tokenizer")]:
        slow = CLIPTokenizer.from_pretrained(str(d))
        assert slow.fix_text is not None, "install ftfy (requirements.txt) for the reference tokenization"
        plain = CLIPTokenizer.from_pretrained(str(d))
        plain.fix_text = None
        plain.nlp = BasicTokenizer(strip_accents=False, do_split_on_punc=False)
        fast = CLIPTokenizerFast.from_pretrained(str(d), from_slow=True)
        rows = []
        for p in AWKWARD_PROMPTS:
            enc = slow(p, padding="max_length", max_length=MAX_LENGTH, truncation=True)
            unpadded = slow(p, truncation=False).input_ids
            a = enc.input_ids
            b = plain(p, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
            c = fast(p, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
            rows.append(
                {
                    "prompt": p,
                    "ids": a,
                    "attention_mask": enc.attention_mask,
                    "untruncated_length": len(unpadded),
                    "tokens": slow.convert_ids_to_tokens(unpadded),
                    "ids_without_ftfy": b,
                    "ids_fast": c,
                    "fast_equal": a == c,
                    "without_ftfy_equal": a == b,
                }
            )
        out["tokenizers"][label] = {
            "folder": str(d.relative_to(HERE)),
            "pad_token": slow.pad_token,
            "pad_token_id": slow.pad_token_id,
            "bos_token_id": slow.bos_token_id,
            "eos_token_id": slow.eos_token_id,
            "prompts": rows,
        }
    write_json(HERE / "tokenizer_reference.json", out)
    for label, t in out["tokenizers"].items():
        fast = [r["prompt"] for r in t["prompts"] if not r["fast_equal"]]
        plain = [r["prompt"] for r in t["prompts"] if not r["without_ftfy_equal"]]
        print(f"  tokenizer {label}: pad id {t['pad_token_id']}; fast differs on {fast!r}, no-ftfy on {plain!r}")


def classcond_reference(dst):
    import onnxruntime as ort

    ref = dst / "reference"
    if ref.exists():
        shutil.rmtree(ref)
    sess = ort.InferenceSession(str(dst / "unet" / "model.onnx"), providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in sess.get_inputs()}
    g = torch.Generator().manual_seed(SEED + 11)
    sample = torch.randn(3, 3, 16, 16, generator=g).numpy()
    labels = np.array([0, 7, 10], dtype=np.int64)
    out = {"note": "One U-Net call: out_sample = unet(sample, timestep, class_labels); label 10 is the null class.", "calls": []}
    for t in [999, 500, 1]:
        tv = np.array(t, dtype=np.int64 if types["timestep"] == "tensor(int64)" else np.float32)
        (y,) = sess.run(None, {"sample": sample, "timestep": tv, "class_labels": labels})
        out["calls"].append({"timestep": t, "out_sample": save_npy(ref / f"out_sample_t{t}.npy", y)})
    out["sample"] = save_npy(ref / "sample.npy", sample)
    out["class_labels"] = labels.tolist()
    out["timestep_dtype"] = types["timestep"]
    write_json(ref / "reference.json", out)


# ------------------------------------------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=None, help="where the diffusers pipelines are saved (a temp dir)")
    ap.add_argument("--skip-references", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    started = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="difflab-pipelines-"))
    work.mkdir(parents=True, exist_ok=True)
    vocab_json, merges_txt, bpe_sha = write_clip_vocab(work / "clip-vocab")

    print("building pipelines in", work)
    tower_l, tower_g, tower_g_proj = text_encoders()
    srcs = {
        "sd1": build_sd("sd1", work, work / "clip-vocab", False, tower_l),
        "sd2v": build_sd("sd2v", work, work / "clip-vocab", True, tower_g),
        "sdxl": build_sdxl(work, work / "clip-vocab", tower_l, tower_g_proj),
        "classcond": build_classcond(work),
    }
    dropped = []
    for name in ["sd1", "sd2v", "sdxl"]:
        print("exporting", name)
        export_optimum(srcs[name], HERE / name)
        dropped += drop_untracked(HERE / name)
    print("exporting classcond (torch.onnx.export)")
    export_classcond(srcs["classcond"], HERE / "classcond")
    export_seconds = time.time() - started

    if not args.skip_references:
        print("references")
        both = [(s, g, True) for s in ("ddim", "dpmpp_2m") for g in GUIDANCES]
        pipeline_references("sd1", HERE / "sd1", False, both)
        pipeline_references("sd2v", HERE / "sd2v", False, [("ddim", 7.5, True), ("dpmpp_2m", 7.5, True)])
        pipeline_references("sdxl", HERE / "sdxl", True, both, extra_cases=[("ddim", 7.5, False)])
        tokenizer_references(HERE / "sd1", HERE / "sd2v")
        classcond_reference(HERE / "classcond")

    manifest = {
        "generated_by": "tests/data/pipelines/make.py",
        "versions": versions(),
        "seed": SEED,
        "clip_bpe": {"source": "open_clip/bpe_simple_vocab_16e6.txt.gz", "sha256": bpe_sha},
        "dropped_files": dropped,
        "pipelines": {},
    }
    total = 0
    for name in ["sd1", "sd2v", "sdxl", "classcond"]:
        files, models = describe_dir(HERE / name)
        ref_files = {
            str(p.relative_to(HERE / name)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
            for p in sorted((HERE / name / "reference").rglob("*"))
            if p.is_file()
        }
        size = sum(f["bytes"] for f in files.values()) + sum(f["bytes"] for f in ref_files.values())
        total += size
        manifest["pipelines"][name] = {
            "bytes": size,
            "exporter": "torch.onnx.export (dynamo=False, opset 18)" if name == "classcond" else "optimum main_export",
            "models": models,
            "files": files,
            "reference_files": ref_files,
        }
    tok_ref = HERE / "tokenizer_reference.json"
    if tok_ref.exists():
        manifest["tokenizer_reference"] = {"bytes": tok_ref.stat().st_size, "sha256": sha256(tok_ref)}
        total += tok_ref.stat().st_size
    manifest["total_bytes"] = total
    write_json(HERE / "manifest.json", manifest)
    if args.work is None:
        shutil.rmtree(work)
    print(f"done in {time.time() - started:.0f} s (build and export {export_seconds:.0f} s); {total / 1e6:.2f} MB here")




if __name__ == "__main__":
    main()
