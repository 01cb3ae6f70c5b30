"""difflab's W&B and MLflow readers against the libraries' own Python readers, on 1 million rows each.

    cargo build --release        # in the repository root
    python3 -m venv /work/venvs/wandb && /work/venvs/wandb/bin/pip install wandb==0.29.0 protobuf==7.36.2
    python3 -m venv /work/venvs/mlflow && /work/venvs/mlflow/bin/pip install mlflow==3.17.2
    python3 benches/training_records_vs_python.py [--rounds 7] [--only wandb|mlflow]
        [--data /work/bench] [--wandb-python /work/venvs/wandb/bin/python]
        [--mlflow-python /work/venvs/mlflow/bin/python] [--difflab target/release/difflab]

Any Python 3.9+ runs this script (it needs only the standard library); it starts the two venvs'
interpreters for the Python side, with `training_records_readers.py` beside it. wandb is pinned to
0.29.0, the last release that ships W&B's Python reader of `.wandb` files
(`wandb.sdk.internal.datastore.DataStore`, used by the legacy `wandb sync`; 0.30.0 removed it).

The inputs are made once under --data (outside the repository) and reused; a missing one is remade:
  wandb/rows-1000000/  an offline run written by wandb itself (`WANDB_MODE=offline`, `wandb.init`,
                       `run.log` of train/loss, train/lr, train/grad_norm for steps 0..999,999)
  wandb/rows-1/        the same with one row
  mlflow/steps-250000/mlflow.db  a copy of tests/data/runs/mlflow_sqlite/mlflow.db (MLflow 3.17's schema
                       and indexes) plus one run with 4 keys x 250,000 steps, inserted with sqlite3's
                       executemany in logging order (every key at each step)
  mlflow/fixture/mlflow.db       the fixture copy alone

Timing: each round runs difflab and the Python reader once each, alternating which goes first. difflab
is `difflab metrics PATH --json > /dev/null` as a subprocess (wall clock, so process start included; the
same command on the small input shows what start costs). The Python reader runs in a fresh process and
times itself after its imports: W&B's `DataStore.scan_data` + `Record.ParseFromString` + `json.loads` of
each history value; MLflow's `get_metric_history` for the 4 keys, without and with creating the
`MlflowClient`. Before the rounds both sides' per-tag point counts and first and last points are
compared, and the script stops if they differ; every round's Python counts are checked again.

Prints, per benchmark: the input, the versions and load average, a line per round (seconds and the ratio
Python time / difflab time), the median ratio with its min and max, the median times and rows per second.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
READERS = BENCHES / "training_records_readers.py"
FIXTURE_DB = BENCHES.parent / "tests" / "data" / "runs" / "mlflow_sqlite" / "mlflow.db"
WANDB_ROWS = 1_000_000
MLFLOW_STEPS = 250_000
MLFLOW_RUN = "b3e1c4d2a0f94e6b8c7d5a1f2e3d4c5b"
MLFLOW_RUN_NAME = "bench-1m"
MLFLOW_EXPERIMENT = "difflab-fixtures"


def python_side(python, *args):
    """Runs a command of `training_records_readers.py` with the venv's `python`; returns the process's
    wall-clock seconds and the JSON it printed."""
    start = time.perf_counter()
    out = subprocess.run([python, str(READERS), *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - start, json.loads(out.stdout)


def wandb_input(python, data, rows):
    """The `.wandb` file of an offline run of `rows` rows under `data/wandb/rows-N/`, written by wandb
    itself the first time (in a `.partial` folder renamed when complete)."""
    folder = data / "wandb" / f"rows-{rows}"
    found = sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))
    if found:
        return found[0]
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    wall, made = python_side(python, "wandb-write", str(partial), str(rows))
    partial.rename(folder)
    path = folder / Path(made["path"]).relative_to(partial)
    print(f"wrote {path} with wandb {made['wandb']}: {rows:,} rows, {path.stat().st_size / 1e6:.1f} MB "
          f"in {made['seconds']:.1f} s ({wall:.1f} s with the process)")
    return path


def mlflow_input(python, data, steps):
    """`data/mlflow/steps-N/mlflow.db`: a copy of the fixture database plus the benchmark run of 4 keys
    x `steps` steps (the copy alone, under `fixture/`, for `steps=0`), made the first time."""
    path = data / "mlflow" / (f"steps-{steps}" if steps else "fixture") / "mlflow.db"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name("mlflow.db.partial")
    shutil.copyfile(FIXTURE_DB, partial)
    if steps:
        _, made = python_side(python, "mlflow-write", str(partial), str(steps), MLFLOW_RUN,
                              MLFLOW_RUN_NAME, MLFLOW_EXPERIMENT)
        print(f"wrote {path}: {made['rows']:,} metric rows, {partial.stat().st_size / 1e6:.1f} MB "
              f"in {made['seconds']:.1f} s")
    partial.rename(path)
    return path


def difflab_seconds(exe, path):
    """Wall-clock seconds of `difflab metrics PATH --json > /dev/null`."""
    start = time.perf_counter()
    subprocess.run([exe, "metrics", str(path), "--json"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def difflab_scalars(exe, path, run):
    """The scalars of `run` in `difflab metrics PATH --json`: per tag, points, first and last."""
    out = subprocess.run([exe, "metrics", str(path), "--json"], check=True, capture_output=True, text=True)
    runs = json.loads(out.stdout)["runs"]
    if run not in runs:
        sys.exit(f"difflab shows no run {run!r} in {path}; it shows {sorted(runs)}")
    return {tag: {k: s[k] for k in ("points", "first", "last")} for tag, s in runs[run]["scalars"].items()}


def check_same(what, difflab, python, rows):
    """Stops the script unless difflab and the Python reader saw the same points, `rows` per tag."""
    if difflab != python or any(s["points"] != rows for s in python.values()):
        sys.exit(f"{what}: difflab and Python read different points (or not {rows:,} per tag)\n"
                 f"  difflab: {json.dumps(difflab, sort_keys=True)}\n"
                 f"  python:  {json.dumps(python, sort_keys=True)}")


def run_rounds(rounds, difflab, python):
    """Runs `rounds` rounds of the callables `difflab` and `python`, alternating which goes first, and
    returns the results of each as two lists."""
    ours, theirs = [], []
    for i in range(rounds):
        if i % 2 == 0:
            ours.append(difflab())
            theirs.append(python())
        else:
            theirs.append(python())
            ours.append(difflab())
    return ours, theirs


def ratio_line(label, ratios):
    """`label: median Rx (min Ax, max Bx)`."""
    return (f"{label}: median {statistics.median(ratios):.1f}x "
            f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x)")


def load():
    """The 1, 5 and 15 minute load averages as text."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_wandb(args):
    """W&B: 1 million history rows, difflab against DataStore + Record + json.loads."""
    big = wandb_input(args.wandb_python, args.data, WANDB_ROWS)
    small = wandb_input(args.wandb_python, args.data, 1)
    run = big.stem.removeprefix("run-")
    _, python = python_side(args.wandb_python, "wandb-read", str(big))
    check_same("W&B", difflab_scalars(args.difflab, big.parent, run), python["scalars"], WANDB_ROWS)

    keys = len(python["scalars"])
    print(f"\n== W&B: {big} ({big.stat().st_size / 1e6:.1f} MB), {WANDB_ROWS:,} history rows x "
          f"{keys} keys; wandb {python['wandb']}; load average {load()}")

    def difflab_round():
        return difflab_seconds(args.difflab, big.parent), difflab_seconds(args.difflab, small.parent)

    def python_round():
        wall, out = python_side(args.wandb_python, "wandb-read", str(big))
        check_same("W&B", python["scalars"], out["scalars"], WANDB_ROWS)
        return out["seconds"], wall

    ours, theirs = run_rounds(args.rounds, difflab_round, python_round)
    ratios = [p / d for (d, _), (p, _) in zip(ours, theirs)]
    print("round  difflab s  python s   ratio")
    for i, ((d, _), (p, _), r) in enumerate(zip(ours, theirs, ratios), 1):
        print(f"{i:5}  {d:9.3f}  {p:8.2f}  {r:6.1f}x")
    print(ratio_line("python / difflab", ratios))
    d = statistics.median(x for x, _ in ours)
    start = statistics.median(x for _, x in ours)
    p = statistics.median(x for x, _ in theirs)
    p_wall = statistics.median(x for _, x in theirs)
    points = WANDB_ROWS * keys
    print(f"difflab: median {d:.3f} s = {WANDB_ROWS / d / 1e6:.2f} M rows/s ({points / d / 1e6:.2f} M "
          f"points/s), process start included; on the 1-row run {start:.3f} s")
    print(f"python:  median {p:.2f} s = {WANDB_ROWS / p / 1e6:.3f} M rows/s ({points / p / 1e6:.3f} M "
          f"points/s) after imports; {p_wall:.2f} s with interpreter start and imports")
    print(f"load average after: {load()}")


def bench_mlflow(args):
    """MLflow: 1 million metric rows, difflab against MlflowClient.get_metric_history."""
    big = mlflow_input(args.mlflow_python, args.data, MLFLOW_STEPS)
    small = mlflow_input(args.mlflow_python, args.data, 0)
    _, python = python_side(args.mlflow_python, "mlflow-read", str(big), MLFLOW_RUN)
    difflab = difflab_scalars(args.difflab, big, f"{MLFLOW_EXPERIMENT}/{MLFLOW_RUN_NAME}")
    check_same("MLflow", difflab, python["scalars"], MLFLOW_STEPS)
    keys = len(python["scalars"])
    rows = MLFLOW_STEPS * keys

    print(f"\n== MLflow: {big} ({big.stat().st_size / 1e6:.1f} MB), one run of {keys} keys x "
          f"{MLFLOW_STEPS:,} steps = {rows:,} rows; mlflow {python['mlflow']}; load average {load()}")

    def difflab_round():
        return difflab_seconds(args.difflab, big), difflab_seconds(args.difflab, small)

    def python_round():
        wall, out = python_side(args.mlflow_python, "mlflow-read", str(big), MLFLOW_RUN)
        check_same("MLflow", python["scalars"], out["scalars"], MLFLOW_STEPS)
        return out["history_seconds"], out["open_seconds"] + out["history_seconds"], wall

    ours, theirs = run_rounds(args.rounds, difflab_round, python_round)
    history = [h / d for (d, _), (h, _, _) in zip(ours, theirs)]
    with_client = [c / d for (d, _), (_, c, _) in zip(ours, theirs)]
    print("round  difflab s  history s  client+history s   ratio  ratio with client")
    for i, ((d, _), (h, c, _), r, rc) in enumerate(zip(ours, theirs, history, with_client), 1):
        print(f"{i:5}  {d:9.3f}  {h:9.2f}  {c:16.2f}  {r:6.1f}x  {rc:16.1f}x")
    print(ratio_line("python (get_metric_history x4) / difflab", history))
    print(ratio_line("python (MlflowClient + get_metric_history x4) / difflab", with_client))
    d = statistics.median(x for x, _ in ours)
    start = statistics.median(x for _, x in ours)
    h = statistics.median(x for x, _, _ in theirs)
    c = statistics.median(x for _, x, _ in theirs)
    wall = statistics.median(x for _, _, x in theirs)
    print(f"difflab: median {d:.3f} s = {rows / d / 1e6:.2f} M rows/s, process start included; on the "
          f"fixture alone {start:.3f} s")
    print(f"python:  median {h:.2f} s = {rows / h / 1e6:.3f} M rows/s (get_metric_history); {c:.2f} s = "
          f"{rows / c / 1e6:.3f} M rows/s with MlflowClient; {wall:.2f} s with interpreter start and imports")
    print(f"load average after: {load()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--only", choices=["wandb", "mlflow"])
    ap.add_argument("--data", type=lambda p: Path(p).resolve(), default="/work/bench")
    ap.add_argument("--wandb-python", default="/work/venvs/wandb/bin/python")
    ap.add_argument("--mlflow-python", default="/work/venvs/mlflow/bin/python")
    ap.add_argument("--difflab", default=str(BENCHES.parent / "target" / "release" / "difflab"))
    args = ap.parse_args()
    if args.only != "mlflow":
        bench_wandb(args)
    if args.only != "wandb":
        bench_mlflow(args)


if __name__ == "__main__":
    main()
