#!/usr/bin/env bash
# Per-call overhead of the U-Net's predict (packing, binding, reading back) between two difflab binaries:
# `difflab info`'s median predict time at batch 2 on two small conditional U-Nets, where overhead is a large
# share of the call. Baseline and candidate alternate in rounds; prints each round and the median ratio
# candidate/baseline with its min–max. Run on an idle machine:
#   benches/predict_calls.sh path/to/baseline/difflab target/release/difflab [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1 cand=$2 rounds=${3:-6}
us() { awk '/^  batch/ { v=$3; if ($4=="ms") v*=1000; if ($4=="s") v*=1e6; print v }'; }
time_of() { # binary, model args...
  local bin=$1; shift
  "$bin" info "$@" --ep cpu --batch 2 --seconds 2 2>/dev/null | us
}
out=$(mktemp)
for r in $(seq "$rounds"); do
  for who in base cand; do
    bin=${!who}
    d=$(time_of "$bin" models/digits-sd/unet/model.onnx --sample-shape 4,8,8)
    s=$(time_of "$bin" tests/data/pipelines/sd1)
    echo "$r $who $d $s" | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for col, name in [(2, "digits-sd unet"), (3, "tiny sd1 unet")]:
    by = {}
    for r, who, *v in rows:
        by.setdefault(r, {})[who] = float(v[col - 2])
    ratios = [x["cand"] / x["base"] for x in by.values()]
    print(f"{name}: candidate/baseline median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}) over {len(ratios)} rounds")
PY
rm -f "$out"
