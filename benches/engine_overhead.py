"""Python onnxruntime on the model engine_overhead.rs times, with the same settings (CPU, one intra-op thread,
sequential execution, default graph optimisation), batches 1 and 16: the per-call cost of `session.run`.

    python3 -m pip install onnxruntime==1.32.0 numpy
    python3 benches/engine_overhead.py
"""

import os
import statistics
import time

import numpy as np
import onnxruntime as ort

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "onnx", "tiny_f32.onnx")


def median_call(fn, min_time=3.0, warmup=1.0):
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        fn()
    samples = []
    end = time.perf_counter() + min_time
    while time.perf_counter() < end:
        n = 100
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n)
    return statistics.median(samples)


def main():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])
    print(f"onnxruntime {ort.__version__}, {os.path.basename(MODEL)}, CPU, 1 intra-op thread")
    for batch in (1, 16):
        sample = np.sin(np.arange(batch * 4 * 8 * 8, dtype=np.float32) * 0.37).reshape(batch, 4, 8, 8)
        timestep = np.full((batch,), 500, dtype=np.int64)
        feeds = {"sample": sample, "timestep": timestep}
        t = median_call(lambda: session.run(["out_sample"], feeds))
        print(f"engine_overhead/python_run/{batch}: {t * 1e6:.2f} µs per call")


if __name__ == "__main__":
    main()
