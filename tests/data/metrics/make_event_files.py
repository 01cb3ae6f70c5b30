#!/usr/bin/env python3
"""Writes the TensorBoard event files the metrics tests read, with real TensorBoard writers.

Run from anywhere; the files land beside this script, under tb/. The outputs are committed, so
the tests need no Python. Pinned versions (what these files were made with):

    pip install tensorboardX==2.6.5 protobuf==7.36.2 numpy==2.4.6

Files:
  tb/simple/           tensorboardX add_scalar: `simple_value` summaries (train/loss, train/lr)
  tb/tensors/          rank-0 tensor summaries, as TF 2.x writes them, in float, double and half
                       precision, each both in the typed field (float_val, double_val, half_val)
                       and in tensor_content
  tb/corrupt_crc/      like simple/, with the data checksum of record 10 broken and the length
                       checksum of record 20 broken
  tb/truncated/        like simple/, cut in the middle of its last record
"""

import os
import shutil
import struct
import sys

import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
TB = os.path.join(HERE, "tb")
NAME = "events.out.tfevents.1700000000.difflab"
WALL0 = 1_700_000_000.0


def write_run(name, fill):
    """Writes one event file with `fill(writer)` and gives it a fixed name."""
    run = os.path.join(TB, name)
    shutil.rmtree(run, ignore_errors=True)
    writer = SummaryWriter(logdir=run, flush_secs=3600)
    fill(writer)
    writer.close()
    files = [f for f in os.listdir(run) if f.startswith("events.out.tfevents.")]
    assert len(files) == 1, files
    os.replace(os.path.join(run, files[0]), os.path.join(run, NAME))
    return os.path.join(run, NAME)


def simple(writer):
    for step in range(50):
        loss = 2.0 * np.exp(-step / 15.0) + 0.05 * np.sin(step)
        writer.add_scalar("train/loss", loss, step, walltime=WALL0 + step)
        writer.add_scalar("train/lr", 1e-3 * 0.95**step, step, walltime=WALL0 + step)


def scalar_metadata():
    md = summary_pb2.SummaryMetadata()
    md.plugin_data.plugin_name = "scalars"
    return md


def tensor_value(tag, dtype, value, content):
    t = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto())
    if dtype == types_pb2.DT_FLOAT:
        if content:
            t.tensor_content = struct.pack("<f", value)
        else:
            t.float_val.append(value)
    elif dtype == types_pb2.DT_DOUBLE:
        if content:
            t.tensor_content = struct.pack("<d", value)
        else:
            t.double_val.append(value)
    elif dtype == types_pb2.DT_HALF:
        bits = int(np.array(value, dtype=np.float16).view(np.uint16))
        if content:
            t.tensor_content = struct.pack("<H", bits)
        else:
            t.half_val.append(bits)
    return summary_pb2.Summary.Value(tag=tag, tensor=t, metadata=scalar_metadata())


def tensors(writer):
    fw = writer._get_file_writer()
    kinds = [
        ("float", types_pb2.DT_FLOAT),
        ("double", types_pb2.DT_DOUBLE),
        ("half", types_pb2.DT_HALF),
    ]
    for step in range(20):
        value = 1.0 / (step + 1) + 0.25
        values = []
        for name, dtype in kinds:
            values.append(tensor_value(f"tensor/{name}", dtype, value, content=False))
            values.append(tensor_value(f"tensor/{name}_content", dtype, value, content=True))
        fw.add_summary(summary_pb2.Summary(value=values), step, WALL0 + step)


def records(data):
    """Offsets (start, end) of each TFRecord in an event file."""
    out, pos = [], 0
    while pos + 12 <= len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, pos + 12 + n + 4))
        pos += 12 + n + 4
    return out


def main():
    write_run("simple", simple)
    write_run("tensors", tensors)

    path = write_run("corrupt_crc", simple)
    data = bytearray(open(path, "rb").read())
    recs = records(data)
    start, end = recs[10]
    data[end - 1] ^= 0xFF  # data checksum of record 10
    start, end = recs[20]
    data[start + 9] ^= 0xFF  # length checksum of record 20
    open(path, "wb").write(bytes(data))

    path = write_run("truncated", simple)
    data = open(path, "rb").read()
    start, end = records(data)[-1]
    open(path, "wb").write(data[: start + (end - start) // 2])
    print("wrote", TB, file=sys.stderr)


if __name__ == "__main__":
    main()
