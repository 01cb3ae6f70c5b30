#!/usr/bin/env python3
"""Times difflab's log readers against TensorBoard's own loader on the same files.

  pip install tensorboard==2.21.0 tensorboardX==2.6.5 protobuf==7.36.2 crc32c==2.9.post0
  cargo build --release
  python3 benches/metrics_vs_tensorboard.py [--scalars 1000000] [--difflab target/release/difflab]

Writes (in a temporary folder, never committed):
  tb/events.out.tfevents.*  N scalars (tag train/loss), framed by tensorboardX's RecordWriter
  jsonl/metrics.jsonl       N lines {"step", "time", "loss", "lr"} (2N points)
then times, best of --repeat runs each:
  - TensorBoard: event_accumulator.EventAccumulator(path, size_guidance={"scalars": 0}).Reload()
    (the loader behind TensorBoard's scalar dashboard, keeping every point)
  - difflab: `difflab metrics PATH` end to end (process start, read, summary table)
and prints the ratio and JSON lines per second.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


def write_event_file(path, n):
    from tensorboardX.proto import event_pb2, summary_pb2
    from tensorboardX.record_writer import RecordWriter

    os.makedirs(path, exist_ok=True)
    writer = RecordWriter(os.path.join(path, "events.out.tfevents.1700000000.bench"))
    writer.write(event_pb2.Event(wall_time=1.7e9, file_version="brain.Event:2").SerializeToString())
    for step in range(n):
        value = summary_pb2.Summary.Value(tag="train/loss", simple_value=1.0 / (1 + step))
        event = event_pb2.Event(wall_time=1.7e9 + step * 0.01, step=step,
                                summary=summary_pb2.Summary(value=[value]))
        writer.write(event.SerializeToString())
    writer.close()


def write_jsonl(path, n):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for step in range(n):
            f.write(json.dumps({"step": step, "time": 1.7e9 + step * 0.01,
                                "loss": 1.0 / (1 + step), "lr": 1e-4}) + "\n")


def best_of(repeat, fn):
    times = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def tensorboard_load(path):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])


def difflab_load(exe, path):
    out = subprocess.run([exe, "metrics", path], check=True, capture_output=True, text=True)
    return out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scalars", type=int, default=1_000_000)
    ap.add_argument("--difflab", default="target/release/difflab")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tb-repeat", type=int, default=1, help="runs of the (slow) TensorBoard loader")
    args = ap.parse_args()

    root = tempfile.mkdtemp(prefix="difflab-bench-")
    try:
        tb, jl = os.path.join(root, "tb"), os.path.join(root, "jsonl")
        t = time.perf_counter()
        write_event_file(tb, args.scalars)
        write_jsonl(jl, args.scalars)
        size_tb = sum(os.path.getsize(os.path.join(tb, f)) for f in os.listdir(tb))
        size_jl = os.path.getsize(os.path.join(jl, "metrics.jsonl"))
        print(f"wrote {args.scalars} scalars: event file {size_tb / 1e6:.1f} MB, "
              f"JSON lines {size_jl / 1e6:.1f} MB ({time.perf_counter() - t:.1f} s)")

        d_tb, out = best_of(args.repeat, lambda: difflab_load(args.difflab, tb))
        assert f" {args.scalars} " in out, out
        print(f"difflab     event file : {d_tb:8.3f} s  ({args.scalars / d_tb / 1e6:.1f} M scalars/s)")
        t_tb, count = best_of(args.tb_repeat, lambda: tensorboard_load(tb))
        assert count == args.scalars, count
        print(f"TensorBoard event file : {t_tb:8.3f} s  ({args.scalars / t_tb / 1e6:.3f} M scalars/s)"
              f"  EventAccumulator")
        print(f"ratio: difflab is {t_tb / d_tb:.0f}x faster than EventAccumulator")

        d_jl, out = best_of(args.repeat, lambda: difflab_load(args.difflab, jl))
        assert f" {args.scalars} " in out, out
        print(f"difflab     JSON lines : {d_jl:8.3f} s  ({args.scalars / d_jl / 1e6:.2f} M lines/s, "
              f"{2 * args.scalars / d_jl / 1e6:.2f} M points/s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
