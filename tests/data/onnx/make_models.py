"""Builds the tiny ONNX models that the engine tests run (checked in beside this script).

Needs only the `onnx` package (tested with onnx==1.23.2, see requirements.txt):

    python3 -m pip install -r tests/data/onnx/requirements.txt
    python3 tests/data/onnx/make_models.py

Every model is a stand-in for a diffusion U-Net with a known answer: most compute
`out = 0.5 * sample + float(timestep)` (the timestep broadcast over C, H, W), so a test can check the numbers
the engine returns. Opset 17 and IR version 8 keep them loadable by any ONNX Runtime from 1.14 on.
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = [helper.make_opsetid("", 17)]
C, H, W = 4, 8, 8


def save(graph, name):
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="difflab-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(HERE, name))
    print("wrote", name)


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def half_plus_t(sample, timestep, out, float_type, t_shape_1d=True, extra_nodes=(), extra_add=None):
    """Nodes for out = 0.5 * sample + cast(timestep) (+ extra_add), timestep broadcast per batch item."""
    nodes = [
        helper.make_node("Mul", [sample, "half"], ["scaled"]),
        helper.make_node("Cast", [timestep], ["t_float"], to=float_type),
    ]
    if t_shape_1d:
        nodes.append(helper.make_node("Reshape", ["t_float", "t_shape"], ["t_b111"]))
    else:
        nodes.append(helper.make_node("Identity", ["t_float"], ["t_b111"]))
    nodes.extend(extra_nodes)
    if extra_add is None:
        nodes.append(helper.make_node("Add", ["scaled", "t_b111"], [out]))
    else:
        nodes.append(helper.make_node("Add", ["scaled", "t_b111"], ["with_t"]))
        nodes.append(helper.make_node("Add", ["with_t", extra_add], [out]))
    np_type = np.float16 if float_type == TensorProto.FLOAT16 else np.float32
    inits = [const("half", 0.5, np_type)]
    if t_shape_1d:
        inits.append(const("t_shape", [-1, 1, 1, 1], np.int64))
    return nodes, inits


def tiny_f32():
    # diffusers / Optimum names, dynamic batch, int64 timesteps [batch].
    nodes, inits = half_plus_t("sample", "timestep", "out_sample", TensorProto.FLOAT)
    graph = helper.make_graph(
        nodes,
        "tiny_f32",
        [
            helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", C, H, W]),
            helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, ["batch", C, H, W])],
        inits,
    )
    save(graph, "tiny_f32.onnx")


def tiny_unused_initializer():
    # tiny_f32 with a weight no node reads: ONNX Runtime warns that it removes it, on any provider.
    nodes, inits = half_plus_t("sample", "timestep", "out_sample", TensorProto.FLOAT)
    inits.append(const("unused_weight", [0.0, 0.0, 0.0]))
    graph = helper.make_graph(
        nodes,
        "tiny_unused_initializer",
        [
            helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", C, H, W]),
            helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, ["batch", C, H, W])],
        inits,
    )
    save(graph, "tiny_unused_initializer.onnx")


def tiny_f16():
    # Half precision throughout, common alternative names, float16 timesteps.
    nodes, inits = half_plus_t("x", "t", "eps", TensorProto.FLOAT16)
    graph = helper.make_graph(
        nodes,
        "tiny_f16",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", C, H, W]),
            helper.make_tensor_value_info("t", TensorProto.FLOAT16, ["N"]),
        ],
        [helper.make_tensor_value_info("eps", TensorProto.FLOAT16, ["N", C, H, W])],
        inits,
    )
    save(graph, "tiny_f16.onnx")


def tiny_bf16():
    # bfloat16 inputs and output, as bf16 exports have them; float32 inside (ONNX Runtime's CPU kernels
    # take few bfloat16 ops), so the test checks difflab's packing and reading, not bf16 arithmetic.
    nodes, inits = half_plus_t("x32", "t", "eps32", TensorProto.FLOAT)
    nodes = [helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT)] + nodes
    nodes.append(helper.make_node("Cast", ["eps32"], ["eps"], to=TensorProto.BFLOAT16))
    graph = helper.make_graph(
        nodes,
        "tiny_bf16",
        [
            helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["N", C, H, W]),
            helper.make_tensor_value_info("t", TensorProto.BFLOAT16, ["N"]),
        ],
        [helper.make_tensor_value_info("eps", TensorProto.BFLOAT16, ["N", C, H, W])],
        inits,
    )
    save(graph, "tiny_bf16.onnx")


def tiny_fixed_batch1():
    # Exported with a fixed batch of one and a scalar float timestep.
    nodes, inits = half_plus_t("noisy", "timesteps", "noise_pred", TensorProto.FLOAT, t_shape_1d=False)
    graph = helper.make_graph(
        nodes,
        "tiny_fixed_batch1",
        [
            helper.make_tensor_value_info("noisy", TensorProto.FLOAT, [1, C, H, W]),
            helper.make_tensor_value_info("timesteps", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("noise_pred", TensorProto.FLOAT, [1, C, H, W])],
        inits,
    )
    save(graph, "tiny_fixed_batch1.onnx")


def tiny_class_cond():
    # Class-conditional (DiT / ADM style names): out = 0.5 * x + t + 0.01 * y, int32 timesteps.
    extra = [
        helper.make_node("Cast", ["y"], ["y_float"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["y_float", "t_shape"], ["y_b111"]),
        helper.make_node("Mul", ["y_b111", "hundredth"], ["y_term"]),
    ]
    nodes, inits = half_plus_t("x_t", "t", "output", TensorProto.FLOAT, extra_nodes=extra, extra_add="y_term")
    inits.append(const("hundredth", 0.01))
    graph = helper.make_graph(
        nodes,
        "tiny_class_cond",
        [
            helper.make_tensor_value_info("x_t", TensorProto.FLOAT, ["batch", C, H, W]),
            helper.make_tensor_value_info("t", TensorProto.INT32, ["batch"]),
            helper.make_tensor_value_info("y", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", C, H, W])],
        inits,
    )
    save(graph, "tiny_class_cond.onnx")


def tiny_text_cond():
    # Text-conditional (Stable Diffusion names): out = 0.5 * sample + t + mean(encoder_hidden_states) per item.
    extra = [
        helper.make_node("ReduceMean", ["encoder_hidden_states"], ["ehs_mean"], axes=[1, 2], keepdims=1),
        helper.make_node("Reshape", ["ehs_mean", "t_shape"], ["ehs_b111"]),
    ]
    nodes, inits = half_plus_t(
        "sample", "timestep", "out_sample", TensorProto.FLOAT, extra_nodes=extra, extra_add="ehs_b111"
    )
    graph = helper.make_graph(
        nodes,
        "tiny_text_cond",
        [
            helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", C, H, W]),
            helper.make_tensor_value_info("timestep", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT, ["batch", 3, 16]),
        ],
        [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, ["batch", C, H, W])],
        inits,
    )
    save(graph, "tiny_text_cond.onnx")


def bad_input_names():
    # Inputs named so that no role can be recognised.
    nodes, inits = half_plus_t("image", "noise_level", "out_sample", TensorProto.FLOAT)
    graph = helper.make_graph(
        nodes,
        "bad_input_names",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", C, H, W]),
            helper.make_tensor_value_info("noise_level", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, ["batch", C, H, W])],
        inits,
    )
    save(graph, "bad_input_names.onnx")


def bad_rank():
    # A flat sample (B x 256) instead of B x C x H x W.
    nodes = [
        helper.make_node("Mul", ["sample", "half"], ["scaled"]),
        helper.make_node("Cast", ["timestep"], ["t_float"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["t_float", "axis1"], ["t_b1"]),
        helper.make_node("Add", ["scaled", "t_b1"], ["out_sample"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bad_rank",
        [
            helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", C * H * W]),
            helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, ["batch", C * H * W])],
        [const("half", 0.5), const("axis1", [1], np.int64)],
    )
    save(graph, "bad_rank.onnx")


def bad_output_shape():
    # Returns a quarter of the sample (B x C x H/2 x W/2), as a VAE-like or mis-exported model would.
    nodes, inits = half_plus_t("sample", "timestep", "full", TensorProto.FLOAT)
    nodes.append(helper.make_node("Slice", ["full", "starts", "ends", "axes"], ["out_sample"]))
    inits += [
        const("starts", [0, 0], np.int64),
        const("ends", [H // 2, W // 2], np.int64),
        const("axes", [2, 3], np.int64),
    ]
    graph = helper.make_graph(
        nodes,
        "bad_output_shape",
        [
            helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", C, H, W]),
            helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, ["batch", C, H // 2, W // 2])],
        inits,
    )
    save(graph, "bad_output_shape.onnx")


def hidden_bad_output_shape():
    # Same wrong output, but its size depends on input values (Slice ends = [4, 4] + 0 * min(timestep)), so no
    # shape inference can tell: only a run shows it.
    nodes, inits = half_plus_t("sample", "timestep", "full", TensorProto.FLOAT)
    nodes += [
        helper.make_node("ReduceMin", ["timestep"], ["t_min"], keepdims=0),
        helper.make_node("Mul", ["t_min", "zero"], ["t_zero"]),
        helper.make_node("Add", ["ends", "t_zero"], ["ends_dyn"]),
        helper.make_node("Slice", ["full", "starts", "ends_dyn", "axes"], ["out_sample"]),
    ]
    inits += [
        const("zero", 0, np.int64),
        const("starts", [0, 0], np.int64),
        const("ends", [H // 2, W // 2], np.int64),
        const("axes", [2, 3], np.int64),
    ]
    graph = helper.make_graph(
        nodes,
        "hidden_bad_output_shape",
        [
            helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", C, H, W]),
            helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, ["batch", C, "h", "w"])],
        inits,
    )
    save(graph, "hidden_bad_output_shape.onnx")


def nan_between_450_and_550():
    # out = 0.5 * sample + 0 * sqrt((t - 450) * (t - 550)): finite except for 450 < t < 550, where the
    # square root of a negative number makes every value NaN. In a lab run DDIM 5 (timesteps 800, 600,
    # ..., 0) never meets such a t and DDIM 20 meets t = 500; `difflab info` times the model at t = 500.
    nodes = [
        helper.make_node("Mul", ["sample", "half"], ["scaled"]),
        helper.make_node("Cast", ["timestep"], ["t_float"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["t_float", "lo"], ["t_lo"]),
        helper.make_node("Sub", ["t_float", "hi"], ["t_hi"]),
        helper.make_node("Mul", ["t_lo", "t_hi"], ["product"]),
        helper.make_node("Sqrt", ["product"], ["root"]),
        helper.make_node("Mul", ["root", "zero"], ["gate"]),
        helper.make_node("Reshape", ["gate", "t_shape"], ["gate_b111"]),
        helper.make_node("Add", ["scaled", "gate_b111"], ["out_sample"]),
    ]
    inits = [
        const("half", 0.5),
        const("lo", 450.0),
        const("hi", 550.0),
        const("zero", 0.0),
        const("t_shape", [-1, 1, 1, 1], np.int64),
    ]
    graph = helper.make_graph(
        nodes,
        "nan_between_450_and_550",
        [
            helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", C, H, W]),
            helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, ["batch", C, H, W])],
        inits,
    )
    save(graph, "nan_between_450_and_550.onnx")


def tiny_external():
    # out = w * sample + timestep with w (0.5 everywhere) kept outside the graph, in tiny_external.onnx_data,
    # as Optimum stores a large U-Net's weights: a test changes bytes there and sees the change.
    nodes, inits = half_plus_t("sample", "timestep", "out_sample", TensorProto.FLOAT)
    inits[0] = const("half", np.full([1, C, H, W], 0.5))
    graph = helper.make_graph(
        nodes,
        "tiny_external",
        [
            helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", C, H, W]),
            helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, ["batch", C, H, W])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="difflab-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    data = "tiny_external.onnx_data"
    if os.path.exists(os.path.join(HERE, data)):
        os.remove(os.path.join(HERE, data))
    onnx.save(model, os.path.join(HERE, "tiny_external.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location=data, size_threshold=256)
    print("wrote tiny_external.onnx and", data)


def not_a_model():
    with open(os.path.join(HERE, "not_a_model.onnx"), "w") as f:
        f.write("This is a text file with an .onnx name, not an ONNX model.\n")
    print("wrote not_a_model.onnx")


if __name__ == "__main__":
    tiny_f32()
    tiny_unused_initializer()
    tiny_f16()
    tiny_bf16()
    tiny_fixed_batch1()
    tiny_class_cond()
    tiny_text_cond()
    bad_input_names()
    bad_rank()
    bad_output_shape()
    hidden_bad_output_shape()
    nan_between_450_and_550()
    tiny_external()
    not_a_model()
