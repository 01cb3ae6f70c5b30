#!/usr/bin/env bash
# difflab at full Stable Diffusion 1.5 size, against Optimum's ORTStableDiffusionPipeline on the same export.
#
# Too big for CI: run it by hand on an idle machine (the build takes about 9 minutes and 10-12 GB of memory on
# 2 cores, the export about 4.5 GB of disk plus 4 GB for the PyTorch copy beside it). See --help.
set -euo pipefail
export LC_ALL=C # a '.' in $EPOCHREALTIME and in printf's numbers

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE_DIR=${DIFFLAB_SCALE_DIR:-$HOME/.cache/difflab/scale}
PY=${SCALE_PYTHON:-/work/venvs/pipelines/bin/python}
MAKE=${MAKE_SD15:-/work/shared/scale/make_sd15.py}
TOKENIZER=$REPO/models/digits-sd/tokenizer
OPTIMUM_PY=$REPO/benches/scale_sd15_optimum.py

usage() {
	cat <<EOF
Usage: benches/scale_sd15.sh [options]

Times difflab on a full-size Stable Diffusion 1.5 ONNX pipeline (random weights) and Optimum's
ORTStableDiffusionPipeline on the same export, then prints a Markdown table:

  1. builds the pipeline once, cached: \$MAKE_SD15 OUT models/digits-sd/tokenizer, with OUT =
     \${DIFFLAB_SCALE_DIR:-~/.cache/difflab/scale}/sd15 (skipped when OUT/model_index.json exists);
  2. under /usr/bin/time -v: \`difflab run\` of one cell (DDIM 4 steps, guidance 7.5, one seed,
     "a photo of a cat", CPU) in a fresh output folder and a fresh difflab cache (so the model's files are
     hashed, as on a user's first run), the same run again with nothing to do, Optimum on the same work
     (benches/scale_sd15_optimum.py), and \`difflab info OUT\`;
  3. the dashboard (\`difflab ui\`) in a detached 160x48 tmux session: the time from saving the experiment
     to the pane showing a new sampler label, and a new step count (and that cell done).

Options:
  --model DIR        use this pipeline folder instead of building one (step 1 is skipped), e.g.
                     tests/data/pipelines/sd1 for a quick check of the script itself
  --difflab BIN      the difflab binary (default: \$DIFFLAB, else target/release/difflab of this repository)
  --table FILE       also write the Markdown table to FILE
  --logs DIR         where each measurement's raw output goes
                     (default: \$DIFFLAB_SCALE_DIR/logs/<date-time>)
  --info-args "ARGS" extra arguments for \`difflab info\` (e.g. "--batch 2 --seconds 5")
  --ui-timeout SECS  how long to wait for the dashboard each time (default 900)
  --no-optimum       skip Optimum (no Python environment needed when --model is given)
  --no-ui            skip the dashboard (no tmux needed)
  --keep             keep the temporary folder (experiment, outputs, difflab cache)
  -h, --help         this text

Environment:
  DIFFLAB_SCALE_DIR  the cache folder of the built pipeline (default ~/.cache/difflab/scale)
  SCALE_PYTHON       the Python with torch, diffusers 0.36, transformers 4.57, optimum-onnx 0.1
                     (default /work/venvs/pipelines/bin/python; see tests/data/pipelines/requirements.txt)
  MAKE_SD15          the builder script (default /work/shared/scale/make_sd15.py; not in this repository)
  DIFFLAB            the difflab binary (as --difflab)
EOF
}

die() {
	printf 'scale_sd15: error: %s\n' "$*" >&2
	exit 1
}
say() { printf '== %s\n' "$*" >&2; }
warn() { printf 'scale_sd15: warning: %s\n' "$*" >&2; }

MODEL=""
DIFFLAB_BIN=${DIFFLAB:-$REPO/target/release/difflab}
TABLE=""
LOGS=""
INFO_ARGS=""
UI_TIMEOUT=900
OPTIMUM=1
UI=1
KEEP=0
while (($#)); do
	case $1 in
	--model) MODEL=${2:?--model needs a folder}; shift 2 ;;
	--difflab) DIFFLAB_BIN=${2:?--difflab needs a path}; shift 2 ;;
	--table) TABLE=${2:?--table needs a file}; shift 2 ;;
	--logs) LOGS=${2:?--logs needs a folder}; shift 2 ;;
	--info-args) INFO_ARGS=${2?--info-args needs a value}; shift 2 ;;
	--ui-timeout) UI_TIMEOUT=${2:?--ui-timeout needs seconds}; shift 2 ;;
	--no-optimum) OPTIMUM=0; shift ;;
	--no-ui) UI=0; shift ;;
	--keep) KEEP=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done
[[ $UI_TIMEOUT =~ ^[0-9]+$ ]] || die "--ui-timeout takes whole seconds, not '$UI_TIMEOUT'"
read -r -a INFO_EXTRA <<<"$INFO_ARGS"

# ---------------------------------------------------------------------------------------------- checks

[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (GNU time; Debian: apt-get install time)"
[[ -x $DIFFLAB_BIN ]] || die "no difflab binary at $DIFFLAB_BIN: run \`cargo build --release\` in $REPO, or give --difflab"
DIFFLAB_BIN=$(cd "$(dirname "$DIFFLAB_BIN")" && pwd)/$(basename "$DIFFLAB_BIN")
if ((UI)); then
	command -v tmux >/dev/null || die "tmux is missing (needed for the dashboard's reload latency; or give --no-ui)"
fi

python_help() {
	local venv
	venv=/work/venvs/pipelines
	[[ $PY == */bin/python* ]] && venv=${PY%/bin/python*}
	cat >&2 <<EOF
The Python environment is $PY (\$SCALE_PYTHON). Create it (Python 3.11, about 7 GB with torch's CUDA wheels) with
  python3.11 -m venv $venv
  $venv/bin/pip install -r $REPO/tests/data/pipelines/requirements.txt
  $venv/bin/pip install --no-deps -r $REPO/tests/data/pipelines/requirements-vocab.txt
or point SCALE_PYTHON at a Python with torch, diffusers 0.36, transformers 4.57 and optimum-onnx 0.1.
EOF
}

# The imports the build (optimum.exporters) and Optimum's side (optimum.onnxruntime) need, checked before
# anything long starts. Prints the versions.
check_python() {
	local need=$1 out
	[[ -x $PY ]] || { python_help; die "no Python at $PY ($need needs it)"; }
	if ! out=$("$PY" -c '
import importlib.metadata as m
import torch, diffusers, transformers, onnxruntime, optimum.onnxruntime, optimum.exporters.onnx
print(" ".join(f"{p} {m.version(p)}" for p in ("torch", "diffusers", "transformers", "optimum-onnx", "onnxruntime")))
' 2>&1); then
		printf '%s\n' "$out" | tail -n 5 >&2
		python_help
		die "$PY cannot import what $need needs (above)"
	fi
	printf '%s\n' "$out" | tail -n 1
}

NEED_BUILD=0
if [[ -n $MODEL ]]; then
	[[ -d $MODEL ]] || die "--model $MODEL: no such folder"
	MODEL=$(cd "$MODEL" && pwd)
	[[ -f $MODEL/model_index.json ]] || die "--model $MODEL: not a pipeline folder (no model_index.json)"
else
	MODEL=$SCALE_DIR/sd15
	[[ -f $MODEL/model_index.json ]] || NEED_BUILD=1
fi
if ((NEED_BUILD)); then
	[[ -f $MAKE ]] || die "the builder script $MAKE is missing: it lives outside this repository (/work/shared/scale/make_sd15.py); point MAKE_SD15 at it, or give --model DIR to use a pipeline you have"
	[[ -f $TOKENIZER/vocab.json ]] || die "no CLIP tokenizer at $TOKENIZER"
fi
PY_VERSIONS=""
if ((NEED_BUILD || OPTIMUM)); then
	what=$( ((NEED_BUILD)) && echo "building the pipeline" || echo "Optimum's side (or give --no-optimum)")
	say "checking $PY"
	PY_VERSIONS=$(check_python "$what")
	say "python: $PY_VERSIONS"
fi

[[ -n $LOGS ]] || LOGS=$SCALE_DIR/logs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$LOGS"
LOGS=$(cd "$LOGS" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/difflab-scale.XXXXXX")
TMUX_SOCKET=difflab-scale-$$
# Ends the dashboard's tmux server and waits (up to 10 s, then SIGKILL) for the processes in its pane, by
# their ids, so that nothing writes into the temporary folder while it is removed.
stop_ui() {
	local pane_pid pids=() p i
	pane_pid=$(tmux -L "$TMUX_SOCKET" display-message -p -t scale '#{pane_pid}' 2>/dev/null) || return 0
	mapfile -t pids < <(pgrep -P "$pane_pid" 2>/dev/null || true)
	pids+=("$pane_pid")
	tmux -L "$TMUX_SOCKET" kill-server 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && break; p=""; done
		[[ -z $p ]] && return 0
		sleep 0.1
	done
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
cleanup() {
	if ((UI)); then
		stop_ui
		rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$TMUX_SOCKET"
	fi
	if ((KEEP)); then
		printf 'scale_sd15: kept the temporary folder %s\n' "$WORK" >&2
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say "logs in $LOGS, temporary files in $WORK"

# ---------------------------------------------------------------------------------------------- helpers

now() { printf '%s' "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

# Wall seconds and peak RSS (kB) from a `/usr/bin/time -v` report.
wall_s() {
	awk -F': ' '/Elapsed \(wall clock\)/ {
		n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s }' "$1"
}
rss_kb() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$1"; }
human_kb() {
	awk -v k="$1" 'BEGIN { if (k >= 1048576) printf "%.2f GiB", k / 1048576; else printf "%.0f MiB", k / 1024 }'
}
# "wall s, peak RSS" of a measurement ($1 = its .time file); below 0.1 s (time -v counts hundredths) the wall
# is this script's own clock around the command, in milliseconds.
wall_rss() {
	local w
	w=$(wall_s "$1")
	if awk -v w="$w" 'BEGIN { exit !(w < 0.1) }' && [[ -s ${1%.time}.wall ]]; then
		w=$(awk '{ printf "%.3f", $1 }' "${1%.time}.wall")
	fi
	printf '%s s, %s' "$w" "$(human_kb "$(rss_kb "$1")")"
}

# Each line of stdin with the time it arrived (no process started per line), then made seconds since $1.
stamp() {
	local t0=$1 line
	local -a lines=()
	while IFS= read -r line; do
		lines+=("$EPOCHREALTIME"$'\t'"$line")
	done
	((${#lines[@]})) || return 0
	printf '%s\n' "${lines[@]}" | awk -F'\t' -v t0="$t0" 'BEGIN { OFS = "\t" } { $1 = sprintf("%.3f", $1 - t0); print }'
}
# The time (column 1) of the first stamped line matching the regex $2 in file $1; empty if none.
stamp_of() { awk -F'\t' -v re="$2" '$2 ~ re { print $1; exit }' "$1"; }

toml_str() {
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

# A /usr/bin/time -v measurement: $1 = log name; the command follows. stdout -> NAME.out, stderr stamped
# -> NAME.err, the time report -> NAME.time.
measure() {
	local name=$1 t0 rc=0
	shift
	printf '%s\n' "$*" >"$LOGS/$name.cmd"
	t0=$(now)
	/usr/bin/time -v -o "$LOGS/$name.time" "$@" 2>&1 >"$LOGS/$name.out" | stamp "$t0" >"$LOGS/$name.err" || rc=$?
	awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }' >"$LOGS/$name.wall"
	return "$rc"
}
show_tail() { printf -- '--- %s (last lines)\n' "$1" >&2; tail -n "${2:-15}" "$1" >&2; }

# ---------------------------------------------------------------------------------------------- machine

CORES=$(nproc)
MEM_KB=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $COMMIT != unknown ]] && ! git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock build.rs 2>/dev/null; then
	COMMIT="$COMMIT (with uncommitted changes in src/)"
fi
VERSION=$("$DIFFLAB_BIN" --version 2>/dev/null || echo "difflab ?")
BIN_AGE=""
if head_t=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null) && (($(stat -c %Y "$DIFFLAB_BIN") < head_t)); then
	BIN_AGE="the binary ($(date -d "@$(stat -c %Y "$DIFFLAB_BIN")" '+%F %T')) is older than commit $COMMIT: it may not be that commit's build"
	warn "$BIN_AGE"
fi
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
awk -v l="${LOAD%% *}" -v c="$CORES" 'BEGIN { exit !(l > 0.25 * c) }' &&
	warn "load average $LOAD on $CORES cores: the machine is not idle, the timings will be noisy"
MACHINE="$CORES cores${CPU:+ ($CPU)}, $(human_kb "$MEM_KB") memory, load average $LOAD at the start; $VERSION at commit $COMMIT ($DIFFLAB_BIN)"
printf '%s\n' "$MACHINE" "python: ${PY_VERSIONS:-not used}" >"$LOGS/machine.txt"
say "machine: $MACHINE"

# ---------------------------------------------------------------------------------------------- 1. build

if ((NEED_BUILD)); then
	mkdir -p "$SCALE_DIR"
	free_kb=$(df -Pk "$SCALE_DIR" | awk 'NR == 2 { print $4 }')
	((free_kb > 10 * 1048576)) || warn "$(human_kb "$free_kb") free in $SCALE_DIR; the build writes about 9 GB (the export and its PyTorch copy)"
	avail_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
	((avail_kb > 12 * 1048576)) || warn "$(human_kb "$avail_kb") of memory available; the build needs 10-12 GB"
	partial=$MODEL.partial
	rm -rf "$partial" "$partial-torch"
	say "building a full-size SD 1.5 pipeline in $MODEL (about 9 minutes on 2 cores; log: $LOGS/build.log)"
	t0=$(now)
	if ! "$PY" "$MAKE" "$partial" "$TOKENIZER" >"$LOGS/build.log" 2>&1; then
		show_tail "$LOGS/build.log" 30
		die "building the pipeline failed (log: $LOGS/build.log; the half-built $partial is left for a look)"
	fi
	[[ -f $partial/model_index.json ]] || die "the build finished but wrote no $partial/model_index.json (log: $LOGS/build.log)"
	rm -rf "$MODEL" "$MODEL-torch"
	mv "$partial" "$MODEL"
	[[ -d $partial-torch ]] && mv "$partial-torch" "$MODEL-torch"
	say "built in $(since "$t0") s: $MODEL ($(du -sh "$MODEL" | cut -f1)); its PyTorch copy $MODEL-torch can be deleted"
else
	say "pipeline: $MODEL ($(du -sh "$MODEL" 2>/dev/null | cut -f1))"
fi

# The latent size from the U-Net's config (64 for SD 1.5, 8 for the test pipeline); images are 8x that.
read -r LATENT_C LATENT_S < <(awk '
	/"in_channels"[ \t]*:/ { gsub(/[^0-9]/, "", $0); c = $0 }
	/"sample_size"[ \t]*:/ { line = $0; sub(/.*"sample_size"[ \t]*:[ \t]*\[?[ \t]*/, "", line); s = line + 0 }
	END { print c, s }' "$MODEL/unet/config.json") || true
[[ ${LATENT_C:-} =~ ^[0-9]+$ && ${LATENT_S:-} =~ ^[0-9]+$ && $LATENT_S -gt 0 ]] ||
	die "could not read in_channels and sample_size from $MODEL/unet/config.json"
IMAGE=$((8 * LATENT_S))
say "latents ${LATENT_C}x${LATENT_S}x${LATENT_S}, images ${IMAGE}x${IMAGE}"

# Read every file once so that difflab and Optimum both start from a warm page cache (the first measured
# run would otherwise pay the disk alone).
say "reading the pipeline's files once (page cache)"
find "$MODEL" -type f -exec cat {} + >/dev/null

# ---------------------------------------------------------------------------------------------- 2. measurements

PROMPT="a photo of a cat"
STEPS=4
GUIDANCE=7.5
LABEL=ddim
EXP=$WORK/lab/scale.toml
mkdir -p "$WORK/lab"
export DIFFLAB_CACHE_DIR=$WORK/difflab-cache # fresh: the first run hashes the model's files, as a user's does

write_exp() { # $1 = label, $2 = steps; written beside and renamed, as editors save
	cat >"$EXP.new" <<EOF
# benches/scale_sd15.sh: one cell on $(basename "$MODEL")
name = "scale"
output = $(toml_str "$WORK/lab/out")

[model]
path = $(toml_str "$MODEL")
providers = ["cpu"]
sample_shape = [$LATENT_C, $LATENT_S, $LATENT_S]

[conditioning]
prompts = [$(toml_str "$PROMPT")]

[sampling]
seeds = 1

[[sampler]]
name = "ddim"
label = $(toml_str "$1")
steps = $2
guidance = [$GUIDANCE]
EOF
	mv "$EXP.new" "$EXP"
}
write_exp "$LABEL" "$STEPS"
cp "$EXP" "$LOGS/experiment.toml"
CELL="$LABEL $STEPS g$GUIDANCE"

# a. the first run of the cell
say "difflab run: the first run of one cell ($CELL)"
if ! measure run-first "$DIFFLAB_BIN" run "$EXP"; then
	show_tail "$LOGS/run-first.err"
	die "difflab run failed (logs: $LOGS/run-first.*)"
fi
RUN1=$(wall_rss "$LOGS/run-first.time")
LOADED_AT=$(stamp_of "$LOGS/run-first.err" '[0-9]+ cells?, model on ')
CELL_AT=$(stamp_of "$LOGS/run-first.err" 'samples?, .*ms/sample')
CELL_WALL=$(jq -r '.cells[0].wall_s // empty' "$WORK/lab/out/results.json" 2>/dev/null || true)
MODEL_MS=$(jq -r '.cells[0].model_ms_per_step // empty' "$WORK/lab/out/results.json" 2>/dev/null || true)
cp "$WORK/lab/out/results.json" "$LOGS/run-first.results.json" 2>/dev/null || true
RUN1_NOTE="model loaded (the 'model on' line) at ${LOADED_AT:-?} s, cell done at ${CELL_AT:-?} s"
[[ -n $CELL_WALL ]] && RUN1_NOTE+="; the cell's sampling $(printf '%.2f' "$CELL_WALL") s ($(printf '%.0f' "$MODEL_MS") ms of model per step)"
# Whatever difflab says itself about load or preview times.
while IFS= read -r line; do
	RUN1_NOTE+="; difflab: \"$line\""
done < <(cut -f2- "$LOGS/run-first.err" | grep -iE '(load|preview)[^(]*[0-9.]+ ?(ms|s)\b' | head -n 3 || true)
RUN1_NOTE+="; no first-preview time printed by \`difflab run\`"
say "first run: $RUN1 ($RUN1_NOTE)"

# b. the same run with nothing to do
say "difflab run: again, nothing to do"
if ! measure run-again "$DIFFLAB_BIN" run "$EXP"; then
	show_tail "$LOGS/run-again.err"
	die "the second difflab run failed (logs: $LOGS/run-again.*)"
fi
RUN2=$(wall_rss "$LOGS/run-again.time")
if grep -q 'model was not loaded' "$LOGS/run-again.err"; then
	RUN2_NOTE="loaded no network"
else
	RUN2_NOTE="LOADED THE MODEL (no 'the model was not loaded' line)"
fi
grep -q 'unchanged, reused' "$LOGS/run-again.err" || RUN2_NOTE+="; the cell was NOT reported reused"
awk -v w="$(wall_s "$LOGS/run-again.time")" 'BEGIN { exit !(w < 1) }' || RUN2_NOTE+="; OVER 1 s"
say "rerun: $RUN2 ($RUN2_NOTE)"

# c. Optimum on the same export and work
OPT1="n/a" OPT_NOTE="not run (--no-optimum)"
if ((OPTIMUM)); then
	say "Optimum: ORTStableDiffusionPipeline, DDIM $STEPS steps, guidance $GUIDANCE, ${IMAGE}x${IMAGE}, CPU"
	if ! measure optimum "$PY" "$OPTIMUM_PY" --model "$MODEL" --prompt "$PROMPT" --steps "$STEPS" \
		--guidance "$GUIDANCE" --size "$IMAGE" --save "$WORK/optimum.png"; then
		show_tail "$LOGS/optimum.err"
		die "Optimum's run failed (logs: $LOGS/optimum.*)"
	fi
	OPT1=$(wall_rss "$LOGS/optimum.time")
	o() { awk -v k="$1" '$1 == k { printf "%.2f", $2; exit }' "$LOGS/optimum.out"; }
	OPT_NOTE="Optimum: import $(o import_s) s, load $(o load_s) s, call $(o call_s) s (first step done $(o first_step_s) s into the call)"
	say "Optimum: $OPT1 ($OPT_NOTE)"
fi

# d. difflab info on the folder
say "difflab info $MODEL ${INFO_ARGS:+($INFO_ARGS)}"
if ! measure info "$DIFFLAB_BIN" info "$MODEL" ${INFO_EXTRA[@]+"${INFO_EXTRA[@]}"}; then
	show_tail "$LOGS/info.err"
	die "difflab info failed (logs: $LOGS/info.*)"
fi
INFO=$(wall_rss "$LOGS/info.time")
INFO_NOTE=$(awk '/^[ \t]+batch [0-9]+ / { sub(/^[ \t]+/, ""); gsub(/[ \t]+/, " "); printf "%s%s", sep, $0; sep = "; " }' "$LOGS/info.out")
INFO_NOTE="U-Net calls timed: ${INFO_NOTE:-none printed} (the wall time includes them)"
peak=$(grep -iE '^(peak|memory)' "$LOGS/info.out" | head -n 1 | tr -s ' \t' ' ' || true)
[[ -n $peak ]] && INFO_NOTE+="; difflab: \"$peak\""
[[ -n $INFO_ARGS ]] && INFO_NOTE+="; with $INFO_ARGS"
say "info: $INFO ($INFO_NOTE)"

# ---------------------------------------------------------------------------------------------- 3. dashboard

UI_LABEL="n/a" UI_STEPS="n/a" UI_LABEL_NOTE="not run (--no-ui)" UI_STEPS_NOTE="not run (--no-ui)"
if ((UI)); then
	UI_LOG=$LOGS/ui.log
	: >"$UI_LOG"
	T=(tmux -L "$TMUX_SOCKET")
	pane() { "${T[@]}" capture-pane -p -t scale 2>/dev/null || true; }
	status_line() { awk 'NF { last = $0 } END { print last }' <<<"$1"; }
	# Polls the pane every 50 ms until the extended regex $1 matches it (and, with $2 = done, the status line
	# says done); prints the seconds since $3. Logs each new status line on the way.
	wait_pane() {
		local re=$1 want=$2 t0=$3 deadline p st last=""
		deadline=$(awk -v t="$EPOCHREALTIME" -v s="$UI_TIMEOUT" 'BEGIN { printf "%d", t + s }')
		while :; do
			p=$(pane)
			st=$(status_line "$p")
			if [[ $st != "$last" ]]; then
				printf '%8s s  %s\n' "$(since "$t0")" "$st" >>"$UI_LOG"
				last=$st
			fi
			if grep -qE -- "$re" <<<"$p" && { [[ $want != done ]] || grep -qE ' done [0-9]+/[0-9]+' <<<"$st"; }; then
				since "$t0"
				return 0
			fi
			if grep -q '\[difflab ui exited' <<<"$p"; then
				printf '%s\n' "$p" >>"$UI_LOG"
				return 1
			fi
			((${EPOCHREALTIME%.*} < deadline)) || { printf '%s\n' "$p" >>"$UI_LOG"; return 1; }
			sleep 0.05
		done
	}
	snap() { { printf -- '--- pane: %s\n' "$1"; pane | grep -v '^[│ ▀▄]*$' || true; } >>"$UI_LOG"; }

	say "dashboard: difflab ui in tmux (160x48)"
	cmd=$(printf '%q ' env "DIFFLAB_CACHE_DIR=$DIFFLAB_CACHE_DIR" "$DIFFLAB_BIN" ui "$EXP" --images halfblocks)
	"${T[@]}" new-session -d -s scale -x 160 -y 48 "$cmd; echo \"[difflab ui exited with \$?]\"; sleep 3600"
	t0=$(now)
	printf 'waiting for %s to be done\n' "$CELL" >>"$UI_LOG"
	if ! opened=$(wait_pane "$LABEL · $STEPS( |$)" done "$t0"); then
		tail -n 30 "$UI_LOG" >&2
		die "the dashboard did not show $CELL done within $UI_TIMEOUT s (log: $UI_LOG)"
	fi
	snap "opened, done after $opened s"

	# (i) only the label changes: the cell is the same, so it is reused.
	NEW_LABEL=relabeled
	printf 'label %s -> %s\n' "$LABEL" "$NEW_LABEL" >>"$UI_LOG"
	write_exp "$NEW_LABEL" "$STEPS"
	t0=$(now)
	if UI_LABEL=$(wait_pane "$NEW_LABEL · $STEPS( |$)" shown "$t0"); then
		UI_LABEL="$UI_LABEL s"
		UI_LABEL_NOTE="saved by rename; polled every 50 ms"
		grep -q 'reused' <<<"$(pane)" && UI_LABEL_NOTE+="; the cell shown as reused"
	else
		UI_LABEL="timeout" UI_LABEL_NOTE="the new label did not show within $UI_TIMEOUT s (log: $UI_LOG)"
	fi
	snap "after the label change"

	# (ii) the step count changes: a new cell, run by the dashboard (its model loaded first).
	NEW_STEPS=$((STEPS + 1))
	printf 'steps %s -> %s\n' "$STEPS" "$NEW_STEPS" >>"$UI_LOG"
	write_exp "$NEW_LABEL" "$NEW_STEPS"
	t0=$(now)
	if shown=$(wait_pane "$NEW_LABEL · $NEW_STEPS( |$)" shown "$t0"); then
		UI_STEPS="$shown s"
		if done_at=$(wait_pane "$NEW_LABEL · $NEW_STEPS( |$)" done "$t0"); then
			UI_STEPS_NOTE="\"$NEW_LABEL · $NEW_STEPS\" shown after $shown s, the cell done after $done_at s"
		else
			UI_STEPS_NOTE="\"$NEW_LABEL · $NEW_STEPS\" shown after $shown s; not done within $UI_TIMEOUT s"
		fi
		running=$(awk '/^steps [0-9]+ -> / { on = 1; next } on && / running / { print $1; exit }' "$UI_LOG")
		[[ -n $running ]] && UI_STEPS_NOTE+="; the status line said running after $running s"
		# The run says when it reuses the networks an earlier run (or the opening's preload) kept.
		if grep -q 'its networks stay loaded' <<<"$(pane)"; then
			UI_STEPS_NOTE+="; the kept networks ran it (nothing loaded)"
		else
			UI_STEPS_NOTE+="; the dashboard loaded the model for it"
		fi
	else
		UI_STEPS="timeout" UI_STEPS_NOTE="the new cell did not show within $UI_TIMEOUT s (log: $UI_LOG)"
	fi
	snap "after the steps change"
	stop_ui
	say "dashboard: label change $UI_LABEL, steps change $UI_STEPS ($UI_STEPS_NOTE)"
fi

# ---------------------------------------------------------------------------------------------- 4. table

cell_desc="DDIM $STEPS steps, g $GUIDANCE, 1 seed, ${IMAGE}x${IMAGE}, CPU"
table() {
	cat <<EOF
### difflab at scale: $(basename "$MODEL") ($(du -sh "$MODEL" 2>/dev/null | cut -f1)), $(date '+%F %H:%M')

Machine: $MACHINE.
Model: $MODEL (latents ${LATENT_C}x${LATENT_S}x${LATENT_S}); one cell: $cell_desc. Page cache warm for both sides; difflab's cache (file fingerprints) fresh.${BIN_AGE:+
Note: $BIN_AGE.}

| what | difflab | Optimum | notes |
|---|---|---|---|
| first run of one cell (wall, peak RSS) | $RUN1 | $OPT1 | $RUN1_NOTE; $OPT_NOTE |
| rerun with nothing to do (wall, peak RSS) | $RUN2 | — | $RUN2_NOTE |
| \`difflab info\` on the folder (wall, peak RSS) | $INFO | — | $INFO_NOTE |
| dashboard reload after a label change | $UI_LABEL | — | $UI_LABEL_NOTE |
| dashboard reload after a steps change ($STEPS → $((STEPS + 1))) | $UI_STEPS | — | $UI_STEPS_NOTE |

Raw output: $LOGS
EOF
}
table >"$LOGS/table.md"
if [[ -n $TABLE ]]; then
	cp "$LOGS/table.md" "$TABLE" || die "could not write the table to $TABLE"
fi
echo
cat "$LOGS/table.md"
