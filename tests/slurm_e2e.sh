#!/usr/bin/env bash
# End to end on a real Slurm: a single-node cluster (installed and started by tests/slurm/start_slurm.sh
# when this runs as root with apt-get) runs a 3-task array of the analytic experiment and its merge job;
# the merged results must equal an unsharded run of the same experiment. Run from anywhere:
#   tests/slurm_e2e.sh        (DIFFLAB_BIN=path/to/difflab to skip the build)
# Exit 77: skipped, with the reason on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash tests/slurm/start_slurm.sh

bin=${DIFFLAB_BIN:-}
if [[ -z $bin ]]; then
  cargo build --quiet
  bin=target/debug/difflab
fi
bin=$(realpath "$bin")

# The jobs run on this machine, so a local folder is the "shared" one.
work=$(mktemp -d /tmp/difflab-slurm-e2e.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat > "$work/exp.toml" <<TOML
name = "slurm-e2e"
output = "out"
[model]
path = "analytic"
sample_shape = [1, 16, 16]
[sampling]
seeds = 8
batch = 16
[[sampler]]
name = "dpm++2m"
steps = [5, 10]
[[sampler]]
name = "euler-a"
steps = 8
[quality]
features = "$root/models/mnist16-features.onnx"
reference = "$root/models/mnist16-reference.npz"
samples = 160
kid_subsets = 10
kid_subset_size = 50
reference_sampler = "dpm++3m:100"
TOML

"$bin" run "$work/exp.toml" --out "$work/single" 2>"$work/single.log"

mapfile -t ids < <("$bin" slurm "$work/exp.toml" --array 3 2>"$work/submit.log")
if [[ ${#ids[@]} -ne 2 ]]; then
  echo "slurm-e2e: difflab slurm did not print an array and a merge job id:" >&2
  cat "$work/submit.log" >&2
  exit 1
fi
array=${ids[0]} merge=${ids[1]}
echo "submitted array job $array and merge job $merge"

# Wait for both jobs to leave the queue.
for _ in $(seq 300); do
  [[ -z $(squeue -h -j "$array,$merge" 2>/dev/null) ]] && break
  sleep 1
done
if [[ -n $(squeue -h -j "$array,$merge" 2>/dev/null) ]]; then
  echo "slurm-e2e: jobs still queued after 300 s:" >&2
  squeue -j "$array,$merge" >&2
  exit 1
fi

logs=$work/out/slurm
for i in 0 1 2; do
  log=$logs/difflab-slurm-e2e-${array}_$i.out
  grep -q "shard $i/3 (from SLURM_ARRAY_TASK_ID=$i" "$log" || {
    echo "slurm-e2e: task $i did not run shard $i/3:" >&2; cat "$log" >&2; exit 1; }
done
merge_log=$logs/difflab-slurm-e2e-merge-$merge.out
grep -q "merged 3 shards" "$merge_log" || {
  echo "slurm-e2e: the merge job did not merge:" >&2; cat "$merge_log" >&2; exit 1; }

# The merged results against the unsharded run: FID to 1e-9 relative, KID and sample counts exactly,
# the reference error to 1e-12, and the grids byte for byte.
python3 - "$work/single" "$work/out" <<'PY'
import json, sys, pathlib
one, many = (pathlib.Path(p) for p in sys.argv[1:3])
a = {c["name"]: c for c in json.loads((one / "results.json").read_text())["cells"]}
b = {c["name"]: c for c in json.loads((many / "results.json").read_text())["cells"]}
assert a.keys() == b.keys(), (a.keys(), b.keys())
for name, x in a.items():
    y = b[name]
    assert (x["samples"], x["nfe"], x["key"]) == (y["samples"], y["nfe"], y["key"]), name
    assert abs(x["fid"] - y["fid"]) <= 1e-9 * abs(x["fid"]), (name, x["fid"], y["fid"])
    assert (x["kid"], x["kid_std"]) == (y["kid"], y["kid_std"]), name
    assert abs(x["ref_rmse"] - y["ref_rmse"]) <= 1e-12 * x["ref_rmse"], name
    assert (one / x["grid"]).read_bytes() == (many / y["grid"]).read_bytes(), name
    print(f"{name}: FID {x['fid']:.6f} = merged {y['fid']:.6f}, KID {y['kid']:.4f}, ref RMSE {y['ref_rmse']:.3e}")
PY
# With TensorRT among the providers a prebuild job loads the networks first (building the engines where
# TensorRT is; here it falls back to the CPU) and the array waits for it to succeed.
cat > "$work/trt.toml" <<TOML
name = "slurm-trt"
output = "trt-out"
[model]
path = "$root/models/mnist16-unet.onnx"
providers = ["tensorrt", "cpu"]
[sampling]
seeds = 4
[[sampler]]
name = "ddim"
steps = 3
TOML
mapfile -t trt < <("$bin" slurm "$work/trt.toml" --array 2 2>"$work/trt-submit.log")
if [[ ${#trt[@]} -ne 3 ]]; then
  echo "slurm-e2e: with TensorRT, difflab slurm did not print a prebuild, an array and a merge job id:" >&2
  cat "$work/trt-submit.log" >&2
  exit 1
fi
for _ in $(seq 300); do
  [[ -z $(squeue -h -j "${trt[0]},${trt[1]},${trt[2]}" 2>/dev/null) ]] && break
  sleep 1
done
trt_logs=$work/trt-out/slurm
grep -q "loaded in" "$trt_logs/difflab-slurm-trt-prebuild-${trt[0]}.out" || {
  echo "slurm-e2e: the prebuild job did not load the model:" >&2
  cat "$trt_logs"/difflab-slurm-trt-prebuild-*.out >&2; exit 1; }
grep -q "merged 2 shards" "$trt_logs/difflab-slurm-trt-merge-${trt[2]}.out" || {
  echo "slurm-e2e: the array after the prebuild did not run and merge:" >&2
  cat "$trt_logs"/*.out >&2; exit 1; }
# The array started only after the prebuild ended (afterok).
pre_end=$(stat -c %Y "$trt_logs/difflab-slurm-trt-prebuild-${trt[0]}.out")
first_task=$(stat -c %W "$trt_logs/difflab-slurm-trt-${trt[1]}_0.out")
if [[ $first_task != 0 && $first_task -lt $pre_end ]]; then
  echo "slurm-e2e: task 0 started before the prebuild ended" >&2; exit 1
fi

echo "slurm-e2e: passed (array job $array, merge job $merge; prebuild ${trt[0]} before array ${trt[1]})"
