#!/usr/bin/env python3
"""The digit feature network for 32x32 RGB samples (models/mnist32-features.onnx).

The text-to-digit pipeline (models/digits-sd) draws 32x32 RGB digits: MNIST's 28x28 with 2 pixels of
background around, grey in all three channels. The feature network mnist16-features.onnx saw 28x28 digits
resized to 16x16. This script puts in front of it, inside one ONNX graph, exactly what turns a 32x32 sample back
into that view: the channel mean, the 2-pixel crop, and train.py's antialiased bilinear 28 -> 16 resize as two
fixed matrices (the resize is linear, so W_h @ x @ W_w^T equals it). The held-out digits padded to 32x32 then
give the same features as the 16x16 network gives on train.py's data, so mnist16-reference.npz is the reference
for both; the script checks that on all 1000 held-out digits and writes check vectors.

    /work/venvs/pipelines/bin/python models/export_features32.py

(the environment of models/requirements-conditional.txt; about 10 s.)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, compose, helper, numpy_helper

MODELS = Path(__file__).resolve().parent
sys.path.insert(0, str(MODELS))
import train as mnist  # noqa: E402  (the data helpers: fetch, split, 28 -> 16)

PAD, IMAGE, SIZE = 2, 32, mnist.SIZE
SOURCE = MODELS / "mnist16-features.onnx"
OUT = MODELS / "mnist32-features.onnx"
CHECK = MODELS / "checks" / "features32_check.json"


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The [n_out, n_in] matrix of torch's antialiased bilinear resize along one axis."""
    # n_in one-row images, resized along their width (torch's antialiased kernel mishandles a height-only
    # resize of width-1 images, so the basis is laid along the width).
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, None, :]
    rows = F.interpolate(eye, size=(1, n_out), mode="bilinear", align_corners=False, antialias=True)
    return rows[:, 0, 0, :].T.numpy()


def front_graph() -> onnx.ModelProto:
    """image [B,3,32,32] in [-1,1] -> x16 [B,1,16,16] in [-1,1], as train.py prepares its digits."""
    wh = resize_matrix(IMAGE - 2 * PAD, SIZE).astype(np.float32)
    consts = [
        numpy_helper.from_array(wh, "wh"),
        numpy_helper.from_array(np.ascontiguousarray(wh.T), "wwt"),
        numpy_helper.from_array(np.array([PAD, PAD], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([IMAGE - PAD, IMAGE - PAD], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("Add", ["grey", "one"], ["g1"]),
        helper.make_node("Mul", ["g1", "half"], ["unit"]),  # [0, 1]
        helper.make_node("Clip", ["unit", "zero", "one"], ["unit_c"]),
        helper.make_node("Slice", ["unit_c", "starts", "ends", "axes"], ["crop"]),
        helper.make_node("MatMul", ["wh", "crop"], ["rows"]),
        helper.make_node("MatMul", ["rows", "wwt"], ["small"]),
        helper.make_node("Clip", ["small", "zero", "one"], ["small_c"]),
        helper.make_node("Mul", ["small_c", "two"], ["s2"]),
        helper.make_node("Sub", ["s2", "one"], ["x16"]),
    ]
    graph = helper.make_graph(
        nodes, "crop_and_resize",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, IMAGE, IMAGE])],
        [helper.make_tensor_value_info("x16", TensorProto.FLOAT, ["batch", 1, SIZE, SIZE])],
        initializer=consts,
    )
    source = onnx.load(str(SOURCE))
    return helper.make_model(graph, opset_imports=source.opset_import, ir_version=source.ir_version)


def build() -> onnx.ModelProto:
    source = onnx.load(str(SOURCE))
    classifier_input = source.graph.input[0].name
    merged = compose.merge_models(front_graph(), source, io_map=[("x16", classifier_input)])
    onnx.checker.check_model(merged)
    return merged


def padded(images28: np.ndarray) -> np.ndarray:
    """[N,28,28] in [0,1] -> [N,3,32,32] in [-1,1], as models/train_conditional.py draws its digits."""
    x = np.pad(images28, ((0, 0), (PAD, PAD), (PAD, PAD)))
    return np.repeat((x * 2.0 - 1.0)[:, None], 3, axis=1).astype(np.float32)


def main() -> None:
    onnx.save(build(), str(OUT))
    images, labels = mnist.load_digits(mnist.fetch_mnist(Path.home() / ".cache" / "difflab" / "mnist"))
    _, held = mnist.make_split(len(images))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    net32 = ort.InferenceSession(str(OUT), opts, providers=["CPUExecutionProvider"])
    net16 = ort.InferenceSession(str(SOURCE), opts, providers=["CPUExecutionProvider"])
    f32, l32 = net32.run(["features", "logits"], {"image": padded(images[held])})
    x16 = mnist.to_model_space(images[held]).numpy()
    f16, l16 = net16.run(["features", "logits"], {net16.get_inputs()[0].name: x16})
    reference = np.load(MODELS / "mnist16-reference.npz")["features"]
    diff = float(np.abs(f32 - f16).max())
    ref_diff = float(np.abs(f32 - reference).max())
    accuracy = float((l32.argmax(1) == labels[held]).mean())
    print(f"{OUT.name}: features vs the 16x16 network max |diff| {diff:.2e}, vs the reference {ref_diff:.2e}; "
          f"held-out accuracy {accuracy:.4f}")
    if diff > 1e-4 or ref_diff > 1e-4:
        sys.exit("error: the 32x32 front does not reproduce the 16x16 view")
    first = [int(np.flatnonzero(labels[held] == d)[0]) for d in range(10)]
    check = {
        "description": "one held-out digit of each class, 28x28 in [0,1] padded to 32x32 by 2 pixels, as "
                       "[10,1,32,32] grey in [-1,1] (the network takes it in 3 equal channels), with the "
                       "network's features and logits",
        "image_grey": padded(images[held][first])[:, 0].ravel().round(7).tolist(),
        "labels": labels[held][first].tolist(),
        "features": f32[first].ravel().tolist(),
        "logits": l32[first].ravel().tolist(),
        "features_dim": int(f32.shape[1]),
        "max_abs_diff_vs_16": diff,
        "heldout_accuracy": accuracy,
    }
    CHECK.write_text(json.dumps(check) + "\n")


if __name__ == "__main__":
    main()
