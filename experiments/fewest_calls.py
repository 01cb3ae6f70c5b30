"""Reads a run's results.csv and prints, for each target error against the reference solve, the sampler ×
schedule combinations that reach it in the fewest model calls (NFE interpolated log-log between the step
counts run), as README.md's table "Which sampler, which schedule" shows them.

    python3 experiments/fewest_calls.py experiments/out/web-ui-samplers/results.csv 0.1 0.05 0.02

Standard library only.
"""

import csv
import math
import sys
from collections import defaultdict


def curves(path, column):
    """(sampler label without its schedule, schedule) -> sorted [(nfe, error, accuracy, fid)]."""
    out = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["status"] != "done" or not row.get(column):
                continue
            schedule = row.get("schedule", "")
            sampler = row["sampler"].replace(f" {schedule}", "") if schedule else row["sampler"]
            out[(sampler, schedule)].append(
                (int(row["nfe"]), float(row[column]), row.get("accuracy", ""), row.get("fid", ""))
            )
    return {k: sorted(v) for k, v in out.items()}


def calls_to_reach(points, target):
    """NFE where the error first falls to `target`, log-log between the two runs around it; None if never."""
    for (n0, e0, *_), (n1, e1, *_) in zip(points, points[1:]):
        if e0 <= target:
            return float(n0)
        if e1 <= target < e0:
            t = (math.log(target) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))
    if points and points[-1][1] <= target:
        return float(points[-1][0])
    return None


def main():
    path, targets = sys.argv[1], [float(t) for t in sys.argv[2:]] or [0.1, 0.05]
    data = curves(path, "ref_rmse")
    names = sorted(data)
    print("| sampler | schedule | " + " | ".join(f"NFE to RMSE {t:g}" for t in targets) + " | accuracy, FID at most NFE |")
    print("|---|---|" + "---|" * len(targets) + "---|")
    rows = []
    for key in names:
        reach = [calls_to_reach(data[key], t) for t in targets]
        rows.append((reach, key))
    # Best first by the last target reached, then by the first.
    rows.sort(key=lambda r: tuple(x if x is not None else math.inf for x in reversed(r[0])))
    for reach, (sampler, schedule) in rows:
        cells = " | ".join(f"{x:.1f}" if x is not None else "—" for x in reach)
        n, _, acc, fid = data[(sampler, schedule)][-1]
        quality = f"{float(acc):.3f}, {float(fid):.0f} ({n})" if acc and fid else "—"
        print(f"| {sampler} | {schedule} | {cells} | {quality} |")


if __name__ == "__main__":
    main()
