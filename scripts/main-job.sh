#!/usr/bin/env bash
# Loom's main flow on this machine, with what is built so far. Run after a release build
# (the README's first command does both). Every figure printed comes from a real run.
set -euo pipefail
cd "$(dirname "$0")/.."
loom=build/release/cli/loom
[[ -x $loom ]] || { echo "main-job.sh: $loom is missing: run 'cmake --preset release && cmake --build --preset release' first" >&2; exit 1; }

step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}" 2>&1; }
# What the kernel applied: the CPUs this process may run on, and its memory policy.
show_binding=(sh -c 'grep Cpus_allowed_list /proc/self/status; echo "memory policy: $(grep -m1 -o "bind:[0-9,-]*\|prefer:[0-9]*\|default" /proc/self/numa_maps)"')

step "This machine's topology, as the scheduler will see it (hwloc)" \
  "$loom" topo
step "A simulated compute node: 2 packages x 2 NUMA domains x 16 cores, 64 GiB per domain" \
  "$loom" topo --synthetic "pack:2 numa:2(memory=64GiB) core:16 pu:2"
step "Rank 0 of a job placed on that node's core 37 (NUMA 2), run here through the explicit mapping" \
  "$loom" bind --verbose --synthetic "pack:2 numa:2(memory=64GiB) core:16 pu:2" --cores 37 --numa 2 \
  -- "${show_binding[@]}"
cores=$("$loom" topo --json | sed -n 's/^  "cores": \([0-9]*\),$/\1/p')  # the top-level count
last_core=$((cores - 1))
step "A process pinned to this machine's last core, memory bound strictly to NUMA 0" \
  "$loom" bind --verbose --cores "$last_core" --numa 0 -- "${show_binding[@]}"

trace=../shared/traces/lublin-aaroh.swf  # the project's shared traces, beside the checkout
if [[ -f $trace ]]; then
  step "The scheduler on a 10,000-job trace (256 nodes; EASY backfill, FCFS order)" \
    "$loom" sim --swf "$trace" --policy easy --order fcfs
else
  printf '\n== The scheduler on a trace: skipped, no %s here\n' "$trace"
fi

bw=build/release/benchmarks/loom-fabric-bw
printf '\n== The RDMA data plane: 4 MiB RMA writes between two processes over libfabric shm\n'
log=$(mktemp)
"$bw" --provider shm --port 18515 2>"$log" &
server=$!
for _ in $(seq 100); do  # bounded: wait for the server to say it listens
  grep -q waiting "$log" && break
  sleep 0.05
done
"$bw" --provider shm --port 18515 --size 4M 127.0.0.1 || true
wait "$server" || true
rm -f "$log"

cat <<'EOT'

== Not built yet
The rest of the main flow (a local cluster with `loom up`, `loom submit` of an MPI job
with a burst-buffer slice and a staged HDF5 dataset) needs parts that do not exist yet:
the controller and agents (loomctld, loomd), burst-buffer slices and HDF5 staging
(burstbuffer) and the MPI launcher.
This script runs them as they land; until then it shows only what is real.
EOT
