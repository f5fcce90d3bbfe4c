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
    "$loom" sim --swf "$trace" --backfill easy --order fcfs
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

# Starts `loom up ARGS` in the background and waits (bounded) until it says where its
# controller is; cleanup stops it by PID (loom up stops its daemons, removes their cgroups,
# slices, devices and, with --netns, the namespaces and the bridge).
up_pid=
start_cluster() {
  state=$(mktemp -d)
  "$loom" up "$@" --state-dir "$state" >"$state/up.out" 2>&1 &
  up_pid=$!
  for _ in $(seq 600); do
    grep -q '^export LOOM_STORAGE_EXPORT=' "$state/up.out" && break
    kill -0 "$up_pid" 2>/dev/null || break
    sleep 0.05
  done
  grep -q '^export LOOM_STORAGE_EXPORT=' "$state/up.out" || { cat "$state/up.out" >&2; echo "main-job.sh: loom up did not start" >&2; exit 1; }
  eval "$(grep '^export LOOM_TLS_CA=' "$state/up.out")"
  eval "$(grep '^export LOOM_CONTROLLER=' "$state/up.out")"
  eval "$(grep '^export LOOM_STORAGE_EXPORT=' "$state/up.out")"
  cat "$state/up.out"
}
stop_cluster() {
  [[ -n $up_pid ]] || return 0
  kill "$up_pid" 2>/dev/null || true
  wait "$up_pid" 2>/dev/null || true
  up_pid=
  rm -rf "$state"
}
jobdir=$(mktemp -d) && chmod 1777 "$jobdir"
trap 'stop_cluster; rm -rf "$jobdir"' EXIT

printf '\n== A cluster on this machine: loom up, with two agents simulating 2-socket, 4-domain nodes\n'
start_cluster --agents 2 --topology "pack:2 numa:2(memory=64GiB) core:8 pu:1"
as_alice() { runuser -u loom-alice -- "$OLDPWD/$loom" "$@"; }
cd "$jobdir"
"$OLDPWD/$loom" nodes
job=$(as_alice submit -N 2 --tasks-per-node 4 -c 2 --mem-per-task 1G -o "out-%j.txt" \
      -- sh -c 'echo "rank $LOOM_RANK of job $LOOM_JOB_ID as $(id -un) on $(grep Cpus_allowed_list /proc/self/status | cut -f2)"')
echo "loom-alice submitted job $job; loom watch follows it until it ends:"
as_alice watch "$job"
as_alice show "$job"
echo "--- out-$job.txt (ranks write as loom-alice, each bound to its placed cores mapped onto this machine):"
sort "out-$job.txt"
array=$(as_alice submit --array 1-4 -o "array-%j.txt" -- sh -c 'echo "element $LOOM_ARRAY_INDEX of array $LOOM_ARRAY_JOB_ID"')
as_alice watch "${array}_4" >/dev/null || true
echo "loom-alice submitted array $array (elements ${array}_1 to ${array}_4):"
as_alice queue --all
cat array-*.txt | sort

printf '\n== Burst buffers and staging: a 64 MiB input on the storage agent, staged into each node'"'"'s slice\n'
head -c 64M /dev/urandom >"$LOOM_STORAGE_EXPORT/input.bin"
install -d -o loom-alice "$LOOM_STORAGE_EXPORT/results"
job=$(as_alice submit -N 2 --tasks-per-node 1 --bb 256M --stage-in storage:/input.bin \
      --stage-out result.bin:storage:/results/ -o "bb-%j.txt" \
      -- sh -c 'echo "rank $LOOM_RANK: slice $LOOM_BB_DIR ($(df -h --output=size "$LOOM_BB_DIR" | tail -1 | tr -d " ")), staged $LOOM_STAGED_FILES";
                [ "$LOOM_RANK" = 0 ] && sha256sum "$LOOM_BB_DIR/input.bin" | tee "$LOOM_BB_DIR/result.bin" >/dev/null; true')
as_alice watch "$job"
as_alice show "$job"
sort "bb-$job.txt"
echo "--- results/result.bin on the storage agent (the checksum rank 0 computed of its staged copy), beside the original's:"
cut -d' ' -f1 "$LOOM_STORAGE_EXPORT/results/result.bin"
sha256sum "$LOOM_STORAGE_EXPORT/input.bin" | cut -d' ' -f1

printf '\n== HDF5 datasets as stored: two of three variables of a netCDF-4 file staged into the slice\n'
cat >fields.cdl <<'CDL'
netcdf fields {
dimensions: y = 512 ; x = 1024 ;
group: fields {
  variables: float temperature(y, x) ; float pressure(y, x) ; float humidity(y, x) ;
  temperature:_ChunkSizes = 64, 1024 ; temperature:_DeflateLevel = 1 ; temperature:units = "K" ;
  data: temperature = 273.5 ; pressure = 1013.25 ; humidity = 0.5 ;
}
}
CDL
ncgen -k nc4 -o "$LOOM_STORAGE_EXPORT/in.h5" fields.cdl
job=$(as_alice submit --bb 64M --stage-in storage:/in.h5:/fields/temperature,/fields/pressure \
      --stage-out in.h5:storage:/results/ -o "h5-%j.txt" -- sh -c 'h5ls -r "$LOOM_BB_DIR/in.h5"')
as_alice watch "$job"
as_alice show "$job"
cat "h5-$job.txt"
for d in /fields/temperature /fields/pressure; do
  echo "h5diff in.h5 results/in.h5 $d (after staging in, and out again):"
  h5diff -v "$LOOM_STORAGE_EXPORT/in.h5" "$LOOM_STORAGE_EXPORT/results/in.h5" "$d" "$d" | grep -A1 '^dataset' || true
done

cd "$OLDPWD"
stop_cluster

printf '\n== The main job: four hosts and a storage host, an MPI job over all four with burst buffers and staged HDF5\n'
echo "Each host is a network namespace with its own hostname; the data plane is libfabric tcp;ofi_rxm between them."
start_cluster --netns 4 --topology "pack:1 numa:2(memory=16GiB) core:4 pu:1"
cd "$jobdir"
"$OLDPWD/$loom" nodes
app=$OLDPWD/build/release/tests/mpi/mpi_stage_app
"$app" --make "$LOOM_STORAGE_EXPORT/in.h5" 1024 4096
chmod 644 "$LOOM_STORAGE_EXPORT/in.h5"
install -d -o loom-alice "$LOOM_STORAGE_EXPORT/results"
echo "storage:/in.h5, $(du -h "$LOOM_STORAGE_EXPORT/in.h5" | cut -f1): /fields/temperature (chunked, gzip), /fields/pressure, /fields/humidity"
main=(--mpi -N 4 --tasks-per-node 4 -c 2 --bb 1G --stage-in storage:/in.h5:/fields/temperature,/fields/pressure
      --stage-out out.h5:storage:/results/ -o "main-%j.txt" -- "$app")
echo "\$ loom submit ${main[*]}   (as loom-alice)"
job=$(as_alice submit "${main[@]}")
as_alice watch "$job"
echo "--- the placement per rank, the staging (each node's slice, with its rate), the result:"
as_alice show "$job"
echo "--- what the ranks said (rank, host, the CPUs and memory policy the kernel applied, its rows):"
sort -t= -k2 -n "main-$job.txt"
echo "--- checked on the storage host:"
for d in /fields/temperature /fields/pressure; do
  printf 'h5diff in.h5 results/out.h5 %s: ' "$d"
  h5diff -v "$LOOM_STORAGE_EXPORT/in.h5" "$LOOM_STORAGE_EXPORT/results/out.h5" "$d" "$d" | grep 'differences found' || echo "differs"
done
printf 'slices left on the hosts'"'"' devices: %s\n' "$(find "$state" -maxdepth 3 -name 'job_*' | wc -l)"
echo "--- the record of the jobs (loom acct: cores x elapsed, CPU time, peak memory, NVMe held, bytes staged):"
as_alice acct --since now-1h
cd "$OLDPWD"
