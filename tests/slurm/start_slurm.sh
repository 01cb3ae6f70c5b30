#!/usr/bin/env bash
# Install (if needed) and start a single-node Slurm (munged, slurmctld, slurmd)
# without systemd, for the end-to-end test. Idempotent. Exit 77 = skip.
set -euo pipefail

NODE=$(hostname -s)
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
RUNDIR=/run/slurm

# timeout: sinfo retries ~10 s when no controller answers.
idle() { timeout 3 sinfo -h -o %t 2>/dev/null | grep -qx 'idle\|mix'; }

# Fast path: already up.
if command -v sinfo >/dev/null && idle; then
  echo "slurm already running: $(sinfo -V)"; exit 0
fi

have_all() { command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null
if ! have_all; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "slurm-e2e skipped: needs root and apt-get to install slurm-wlm and munge" >&2
    exit 77
  fi
  t0=$SECONDS
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurm-wlm munge >/dev/null
  echo "installed slurm-wlm and munge in $((SECONDS - t0)) s"
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "slurm-e2e skipped: slurm is installed but not running, and starting it needs root" >&2
  exit 77
fi

t0=$SECONDS
# munge: the Debian postinst usually makes the key; make one if it did not.
if [[ ! -s /etc/munge/munge.key ]]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  rm -f /run/munge/munge.socket.2*   # stale socket from a killed daemon
  runuser -u munge -- /usr/sbin/munged
fi

# slurm.conf: one node, one partition, no cgroups, no accounting. Another cluster's file is left alone.
if [[ -s $CONF ]] && ! grep -qx 'ClusterName=difflab' "$CONF"; then
  echo "slurm-e2e skipped: $CONF belongs to another cluster and its Slurm is not answering" >&2
  exit 77
fi
CPUS=$(nproc)
MEM=$(( $(free -m | awk '/^Mem:/{print $2}') * 95 / 100 ))
mkdir -p /etc/slurm "$LOGDIR" "$RUNDIR" /var/spool/slurmctld /var/spool/slurmd
cat > "$CONF" <<CONF
ClusterName=difflab
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUNDIR/slurmctld.pid
SlurmdPidFile=$RUNDIR/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
alive "$RUNDIR/slurmctld.pid" || slurmctld
alive "$RUNDIR/slurmd.pid" || slurmd

# Wait for the node to come up; resume it if it came back down/drained.
for _ in $(seq 60); do
  idle && break
  if timeout 5 sinfo -h -o %t 2>/dev/null | grep -q 'down\|drain\|drng'; then
    scontrol update nodename="$NODE" state=resume 2>/dev/null || true
  fi
  sleep 1
done
if ! idle; then
  echo "slurm did not come up; sinfo: $(timeout 5 sinfo -h -o '%t %E' 2>&1)" >&2
  tail -n 30 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" >&2 || true
  exit 1
fi
echo "slurm up in $((SECONDS - t0)) s: $(sinfo -V), node $NODE CPUs=$CPUS RealMemory=$MEM"
