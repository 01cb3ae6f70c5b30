#!/usr/bin/env bash
# Stop the slurmd, slurmctld and munged that start_slurm.sh launched (by pid
# file); fine if they are not running.
set -euo pipefail

stop() {  # pidfile: TERM, wait up to 10 s, then KILL
  local f=$1 pid
  [[ -s $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
stop /run/slurm/slurmd.pid
stop /run/slurm/slurmctld.pid
stop /run/munge/munged.pid
echo "slurm stopped"
