"""MLflow's own reading of the benchmark database: `MlflowClient.get_metric_history` for the 4 keys of the
1-million-row run that `tests/mlflow_bench.rs` builds.

    MLFLOW_BENCH_DB=/tmp/bench.db cargo test --release --test mlflow_bench -- --ignored --nocapture
    python benches/mlflow_vs_python.py /tmp/bench.db      # in a venv with `pip install mlflow`
"""

import sys
import time

from mlflow import MlflowClient

RUN = "0bench0000000000000000000000000a"
KEYS = ["train/loss", "train/lr", "train/grad_norm", "val/fid"]


def main(path):
    t = time.perf_counter()
    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    client.get_run(RUN)
    opened = time.perf_counter() - t
    t = time.perf_counter()
    points = sum(len(client.get_metric_history(RUN, key)) for key in KEYS)
    secs = time.perf_counter() - t
    print(f"client + get_run: {opened:.2f} s")
    print(f"get_metric_history x4: {points} points in {secs:.2f} s = {points / secs / 1e6:.3f} M rows/s")


if __name__ == "__main__":
    main(sys.argv[1])
