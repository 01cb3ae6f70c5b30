#!/usr/bin/env python3
"""Builds the float16 test pipelines from sd1/ with ONNX Runtime's float16 converter.

  sd1-fp16/                  sd1 with its text encoder, U-Net and VAE decoder converted to float16, inputs and
                             outputs included (keep_io_types=False), as GPU users export with
                             `optimum-cli export onnx --dtype fp16`: the text encoder returns float16 hidden states.
  overflow/vae_decoder/      sd1-fp16's VAE decoder whose conv_in output is scaled by 1e5 and stored as float16,
                             so it overflows to inf and the decoded image is NaN (the SDXL fp16 VAE failure);
                             overflow/vae_decoder_f32/ scales the same activation in float32, where the group norm
                             after it brings it back, and decodes finite images. config.json sets force_upcast as
                             SDXL's does. (ONNX Runtime's CPU provider computes most float16 nodes in float32, so
                             the overflow is made explicit with a Cast rather than left to the kernels.)
  overflow/text_encoder/     sd1-fp16's text encoder with last_hidden_state multiplied by 1e6 after the final
                             layer norm (65504, float16's largest, once converted), so it overflows to inf.

Run from the repository root with onnx and onnxruntime installed (the goldens environment of
tests/data/goldens/samplers2/README.md has both; about 5 seconds):

    /work/venvs/goldens/bin/python tests/data/pipelines/make_fp16.py
"""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16

HERE = Path(__file__).resolve().parent
SRC = HERE / "sd1"
FP16 = HERE / "sd1-fp16"
OVERFLOW = HERE / "overflow"
NETWORKS = ("text_encoder", "unet", "vae_decoder")


def to_fp16(model):
    return convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=False)


def scale_tensor(model, tensor, factor, store_as):
    """Multiplies the activation `tensor` by factor in float32 and, with store_as, casts the product to that
    type before the nodes that read it."""
    scaled = tensor + "_scaled"
    readers = [n for n in model.graph.node if tensor in n.input]
    for node in readers:
        node.input[:] = [scaled if i == tensor else i for i in node.input]
    factor_name = tensor + "_factor"
    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, dtype=np.float32), factor_name))
    wide = tensor + "_f32"
    product = tensor + "_product" if store_as is not None else scaled
    nodes = [
        onnx.helper.make_node("Cast", [tensor], [wide], to=onnx.TensorProto.FLOAT),
        onnx.helper.make_node("Mul", [wide, factor_name], [product]),
    ]
    if store_as is not None:
        nodes.append(onnx.helper.make_node("Cast", [product], [scaled], to=store_as))
    producer = next(k for k, n in enumerate(model.graph.node) if tensor in n.output)
    for k, node in enumerate(nodes):
        model.graph.node.insert(producer + 1 + k, node)


def scale_output(model, output, factor):
    """Renames the node output `output` and multiplies it by factor into a new `output`."""
    inner = output + "_unscaled"
    for node in model.graph.node:
        node.input[:] = [inner if i == output else i for i in node.input]
        node.output[:] = [inner if o == output else o for o in node.output]
    factor_name = output + "_factor"
    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, dtype=np.float32), factor_name))
    model.graph.node.append(onnx.helper.make_node("Mul", [inner, factor_name], [output], name=output + "_scale"))


def main():
    if FP16.exists():
        shutil.rmtree(FP16)
    shutil.copytree(SRC, FP16, ignore=shutil.ignore_patterns("reference", "vae_encoder"))
    index = json.loads((FP16 / "model_index.json").read_text())
    index.pop("vae_encoder", None)
    (FP16 / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    for part in NETWORKS:
        model = onnx.load(SRC / part / "model.onnx")
        onnx.save(to_fp16(model), FP16 / part / "model.onnx")
        print(f"sd1-fp16/{part}/model.onnx", (FP16 / part / "model.onnx").stat().st_size, "bytes")

    if OVERFLOW.exists():
        shutil.rmtree(OVERFLOW)
    vae_config = json.loads((SRC / "vae_decoder/config.json").read_text())
    vae_config["force_upcast"] = True
    vae32 = onnx.load(SRC / "vae_decoder/model.onnx")
    vae16 = to_fp16(vae32)
    conv_in = next(n.output[0] for n in vae32.graph.node if n.name.endswith("decoder/conv_in/Conv"))
    scale_tensor(vae32, conv_in, 1e5, None)
    scale_tensor(vae16, conv_in, 1e5, onnx.TensorProto.FLOAT16)
    for folder, model in (("vae_decoder_f32", vae32), ("vae_decoder", vae16)):
        (OVERFLOW / folder).mkdir(parents=True)
        onnx.save(model, OVERFLOW / folder / "model.onnx")
        (OVERFLOW / folder / "config.json").write_text(json.dumps(vae_config, indent=2) + "\n")
    print("overflow VAE: scaled", conv_in)

    text = onnx.load(SRC / "text_encoder/model.onnx")
    scale_output(text, "last_hidden_state", 1e6)
    (OVERFLOW / "text_encoder").mkdir(parents=True)
    onnx.save(to_fp16(text), OVERFLOW / "text_encoder/model.onnx")
    shutil.copy(SRC / "text_encoder/config.json", OVERFLOW / "text_encoder/config.json")
    print("overflow text encoder: last_hidden_state scaled")


if __name__ == "__main__":
    main()
