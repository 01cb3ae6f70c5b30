"""The Python side of `training_records_vs_python.py`, run inside each library's own venv.

    python training_records_readers.py wandb-write DIR ROWS     # in the wandb venv
    python training_records_readers.py wandb-read RUN.wandb     # in the wandb venv
    python training_records_readers.py mlflow-write DB STEPS RUN_ID RUN_NAME EXPERIMENT
    python training_records_readers.py mlflow-read DB RUN_ID    # in the mlflow venv

Each command prints one JSON object on stdout: the seconds its work took inside this process (after the
imports), the library's version, and for the readers, per tag, the point count and first and last
`[step, value]`, in the shape of `difflab metrics --json`.
"""

import json
import os
import sqlite3
import sys
import time

WANDB_KEYS = ["train/loss", "train/lr", "train/grad_norm"]
MLFLOW_KEYS = WANDB_KEYS + ["train/ema_decay"]


def training_row(step, keys):
    """The scalars named by `keys` that a diffusion training loop logs at `step`: loss, warm-up learning
    rate, gradient norm and the EMA decay of diffusers' EMAModel warm-up."""
    row = {
        "train/loss": 0.05 + 1.0 / (1.0 + step / 1000.0),
        "train/lr": 1e-4 * min(1.0, (step + 1) / 1000.0),
        "train/grad_norm": 1.0 + 1.0 / (step + 1),
        "train/ema_decay": min(0.9999, (1.0 + step) / (10.0 + step)),
    }
    return {key: row[key] for key in keys}


def summarise(series):
    """Per tag, the point count and first and last `[step, value]` of a list of (step, value)."""
    return {
        tag: {"points": len(points), "first": list(points[0]), "last": list(points[-1])}
        for tag, points in series.items()
    }


def wandb_write(directory, rows):
    """Logs `rows` history rows (loss, lr, grad_norm) to an offline W&B run under `directory`, one
    `run.log` per step as a training loop does, and reports the `.wandb` file written."""
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    import wandb

    start = time.perf_counter()
    settings = wandb.Settings(x_disable_stats=True, x_disable_meta=True, console="off",
                              disable_git=True, save_code=False, silent=True)
    run = wandb.init(project="difflab-bench", id=f"bench{rows}", dir=directory, settings=settings)
    for step in range(rows):
        run.log(training_row(step, WANDB_KEYS), step=step)
    path = run.settings.sync_file
    run.finish()
    return {"wandb": wandb.__version__, "seconds": time.perf_counter() - start, "path": path}


def wandb_read(path):
    """Reads every scalar of a `.wandb` transaction log the way W&B's own Python code did (the legacy
    `wandb sync`, removed in 0.30): `DataStore.scan_data` for each record, `Record.ParseFromString`,
    and `json.loads` of each history item's `value_json`. Keys starting with `_` (`_step`, `_runtime`,
    `_timestamp`) are W&B's own and skipped, as difflab does."""
    import wandb
    from wandb.proto.wandb_internal_pb2 import Record
    from wandb.sdk.internal.datastore import DataStore

    start = time.perf_counter()
    store = DataStore()
    store.open_for_scan(path)
    series = {}
    while (data := store.scan_data()) is not None:
        record = Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") != "history":
            continue
        step = record.history.step.num
        for item in record.history.item:
            key = item.key or ".".join(item.nested_key)
            if key.startswith("_"):
                continue
            value = json.loads(item.value_json)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(key, []).append((step, float(value)))
    store.close()
    seconds = time.perf_counter() - start
    return {"wandb": wandb.__version__, "seconds": seconds, "scalars": summarise(series)}


def mlflow_write(db, steps, run_id, run_name, experiment):
    """Adds a finished run to experiment `experiment` of an MLflow SQLite store, logging MLFLOW_KEYS at
    `steps` steps 10 ms apart: its rows in `metrics` (inserted with `executemany`, every key at each
    step, as a training loop logs them) and `latest_metrics`, and its run-name tag."""
    start = time.perf_counter()
    t0 = 1_700_000_000_000
    with sqlite3.connect(db) as conn:
        (experiment_id,) = conn.execute("SELECT experiment_id FROM experiments WHERE name = ?",
                                        (experiment,)).fetchone()
        conn.execute(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
            "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
            "VALUES (?, ?, 'LOCAL', '', '', 'bench', 'FINISHED', ?, ?, '', 'active', ?, ?)",
            (run_id, run_name, t0, t0 + 10 * steps, os.path.join(os.path.dirname(db), "artifacts"),
             experiment_id))
        conn.execute("INSERT INTO tags (key, value, run_uuid) VALUES ('mlflow.runName', ?, ?)",
                     (run_name, run_id))
        conn.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, 0)",
            ((key, value, t0 + 10 * step, run_id, step)
             for step in range(steps) for key, value in training_row(step, MLFLOW_KEYS).items()))
        last = steps - 1
        conn.executemany(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
            "VALUES (?, ?, ?, ?, 0, ?)",
            ((key, value, t0 + 10 * last, last, run_id)
             for key, value in training_row(last, MLFLOW_KEYS).items()))
    return {"seconds": time.perf_counter() - start, "rows": steps * len(MLFLOW_KEYS)}


def mlflow_read(db, run_id):
    """Reads the run's metrics with MLflow's client: `MlflowClient(tracking_uri="sqlite:///DB")` (which
    opens the store and checks its schema), then `get_metric_history` for each key; each is timed."""
    import mlflow
    from mlflow import MlflowClient

    start = time.perf_counter()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    opened = time.perf_counter()
    histories = {key: client.get_metric_history(run_id, key) for key in MLFLOW_KEYS}
    done = time.perf_counter()
    series = {key: [(m.step, m.value) for m in history] for key, history in histories.items()}
    return {"mlflow": mlflow.__version__, "open_seconds": opened - start,
            "history_seconds": done - opened, "scalars": summarise(series)}


COMMANDS = {
    "wandb-write": lambda directory, rows: wandb_write(directory, int(rows)),
    "wandb-read": wandb_read,
    "mlflow-write": lambda db, steps, *run: mlflow_write(db, int(steps), *run),
    "mlflow-read": mlflow_read,
}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](*sys.argv[2:])))
