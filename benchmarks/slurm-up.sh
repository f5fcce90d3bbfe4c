#!/usr/bin/env bash
# The baseline cluster of benchmarks/e2e_throughput: Slurm 22.05 from Debian 12 on this
# machine, configured as the throughput issue asks — slurmctld and NODES slurmd emulating
# NODES nodes of CPUS cores (slurmd -N, config_overrides), sched/backfill, select/cons_tres,
# SchedulerParameters=batch_sched_delay=0 and an Epilog, so that every job's end triggers
# a scheduling pass — all on loopback, with its state in DIR.
#
#   slurm-up.sh start DIR [NODES] [CPUS]   writes DIR/slurm.conf, starts the daemons, waits
#                                          until every node is idle, prints SLURM_CONF=...
#   slurm-up.sh stop DIR                   stops the daemons it started, by PID
#
# Needs root, munged running (scripts/install-deps.sh starts it) and slurm-wlm, which it
# installs when missing.
set -euo pipefail
command=${1:?usage: slurm-up.sh start|stop DIR [NODES] [CPUS]}
dir=${2:?usage: slurm-up.sh start|stop DIR [NODES] [CPUS]}
nodes=${3:-4}
cpus=${4:-4}

stop() {
  for pidfile in "$dir"/slurmd-*.pid "$dir"/slurmctld.pid; do
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done  # bounded: 5 s
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

if [[ $command == stop ]]; then
  stop
  exit 0
fi
[[ $command == start ]] || { echo "slurm-up.sh: unknown command $command" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "slurm-up.sh: run as root (slurmd starts jobs as their users)" >&2; exit 1; }
if ! command -v slurmctld >/dev/null; then
  apt-get install -y --no-install-recommends slurm-wlm >/dev/null
fi
mkdir -p "$dir/state" "$dir/spool"
host=$(hostname -s)
last=$((nodes - 1))
printf '#!/bin/sh\nexit 0\n' >"$dir/epilog.sh"
chmod 755 "$dir/epilog.sh"
{
  echo "ClusterName=loombench"
  echo "SlurmctldHost=$host"
  echo "SlurmctldPort=16817"
  echo "AuthType=auth/munge"
  echo "SlurmUser=root"
  echo "SlurmdUser=root"
  echo "StateSaveLocation=$dir/state"
  echo "SlurmdSpoolDir=$dir/spool/%n"
  echo "SlurmctldPidFile=$dir/slurmctld.pid"
  echo "SlurmdPidFile=$dir/slurmd-%n.pid"
  echo "SlurmctldLogFile=$dir/slurmctld.log"
  echo "SlurmdLogFile=$dir/slurmd-%n.log"
  echo "ProctrackType=proctrack/linuxproc"
  echo "TaskPlugin=task/affinity"
  echo "SchedulerType=sched/backfill"
  echo "SelectType=select/cons_tres"
  echo "SelectTypeParameters=CR_Core"
  echo "SchedulerParameters=batch_sched_delay=0"
  echo "Epilog=$dir/epilog.sh"
  echo "SlurmdParameters=config_overrides"
  echo "ReturnToService=2"
  echo "MpiDefault=none"
  echo "JobCompType=jobcomp/none"
  echo "AccountingStorageType=accounting_storage/none"
  echo "MaxJobCount=100000"
  echo "MaxArraySize=100001"
  for i in $(seq 0 "$last"); do
    echo "NodeName=n$i NodeHostname=$host Port=$((16900 + i)) CPUs=$cpus State=UNKNOWN"
  done
  echo "PartitionName=bench Nodes=n[0-$last] Default=YES MaxTime=INFINITE State=UP"
} >"$dir/slurm.conf"
export SLURM_CONF=$dir/slurm.conf
trap 'stop' ERR
slurmctld -i -f "$SLURM_CONF"
for i in $(seq 0 "$last"); do
  mkdir -p "$dir/spool/n$i"
  slurmd -N "n$i" -f "$SLURM_CONF"
done
for _ in $(seq 600); do  # bounded: 30 s for every node to be idle
  states=$(sinfo -h -o '%T' 2>/dev/null | sort -u | tr '\n' ' ')
  [[ $states == "idle " ]] && break
  sleep 0.05
done
[[ $states == "idle " ]] || { echo "slurm-up.sh: nodes are '$states', not idle; see $dir/*.log" >&2; stop; exit 1; }
echo "SLURM_CONF=$SLURM_CONF"
