"""Optimum's side of benches/scale_sd15.sh: one image through ORTStableDiffusionPipeline on the CPU.

The same work as the script's difflab cell: one prompt, DDIM (a DDIMScheduler built from the folder's
scheduler config, as difflab's "ddim" starts from it), guidance 7.5 (a [uncond; cond] batch of 2 per step),
one image at 8 x the U-Net's sample_size a side, CPUExecutionProvider with ONNX Runtime's default threads.
Prints one `key value` line per measurement, in seconds:

    import_s      importing optimum.onnxruntime and diffusers (torch comes with them)
    load_s        ORTStableDiffusionPipeline.from_pretrained (every ONNX session) and the scheduler
    first_step_s  from the call to the end of the first denoising step (includes the text encoder)
    call_s        the whole call: text encoder, the steps, the VAE decoder, the image

    /work/venvs/pipelines/bin/python benches/scale_sd15_optimum.py --model DIR [--steps 4] [--guidance 7.5]
        [--prompt "a photo of a cat"] [--size PX] [--seed 0] [--save image.png]

(the environment of tests/data/pipelines/requirements.txt). Nothing is downloaded: HF_HUB_OFFLINE is set.
"""
import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="an Optimum ONNX Stable Diffusion export (folder)")
    parser.add_argument("--prompt", default="a photo of a cat")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--size", type=int, default=0,
                        help="image height and width in pixels (default: 8 x unet/config.json sample_size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the image here (PNG)")
    args = parser.parse_args()

    model = pathlib.Path(args.model)
    if not (model / "model_index.json").is_file():
        sys.exit(f"{model} is not a pipeline folder (no model_index.json)")
    size = args.size
    if size <= 0:
        sample_size = json.loads((model / "unet" / "config.json").read_text())["sample_size"]
        if isinstance(sample_size, (list, tuple)):
            sample_size = sample_size[0]
        size = 8 * int(sample_size)

    t0 = time.perf_counter()
    import torch
    from diffusers import DDIMScheduler
    from optimum.onnxruntime import ORTStableDiffusionPipeline
    print(f"import_s {time.perf_counter() - t0:.3f}", flush=True)

    t0 = time.perf_counter()
    pipe = ORTStableDiffusionPipeline.from_pretrained(str(model), provider="CPUExecutionProvider")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # scheduler/scheduler_config.json
    pipe.set_progress_bar_config(disable=True)
    print(f"load_s {time.perf_counter() - t0:.3f}", flush=True)

    marks = {}

    def on_step_end(_pipe, i, _t, kwargs):
        marks.setdefault("first", time.perf_counter())
        return kwargs

    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    out = pipe(prompt=args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
               height=size, width=size, num_images_per_prompt=1, generator=generator,
               output_type="pil", callback_on_step_end=on_step_end)
    call = time.perf_counter() - t0
    print(f"first_step_s {marks['first'] - t0:.3f}", flush=True)
    print(f"call_s {call:.3f}", flush=True)
    image = out.images[0]
    print(f"image {image.width}x{image.height}", flush=True)
    print(f"scheduler {type(pipe.scheduler).__name__} steps {args.steps} guidance {args.guidance}", flush=True)
    if args.save:
        image.save(args.save)


if __name__ == "__main__":
    main()
