#!/usr/bin/env bash
# Installs what Loom needs to build, test and run on Debian 12, and creates the
# users and group that the main job and the tests submit as. Idempotent: run it
# again and it changes nothing. Needs root.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps.sh: run as root (or with sudo)" >&2
  exit 1
fi

# The exact Debian 12 packages; each name is what a configure error would ask for.
packages=(
  build-essential cmake ninja-build pkg-config git
  clang-format-16  # scripts/test.sh checks every source's format with it
  user-mode-linux kmod  # tests/cgroup2/vm.sh: a kernel with cgroup v2 alone, and insmod for its loop driver
  libhwloc-dev hwloc
  libfabric-dev libfabric-bin
  rdma-core
  libopenmpi-dev openmpi-bin
  libpmix-dev  # loom-pmix: a job's PMIx server, for --mpi=pmix
  libhdf5-dev hdf5-tools netcdf-bin
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libsqlite3-dev sqlite3
  libcpp-httplib-dev  # loomctld's /metrics
  prometheus  # tests/e2e: a real Prometheus scrapes loomctld
  libssl-dev openssl  # tls.*: certificates checked at start; loom up makes its own with openssl
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libtomlplusplus-dev
  libmunge-dev munge
  libgtest-dev libgmock-dev
  python3  # checks the Spack recipe (tests/packaging)
  libnuma-dev
  systemd  # systemd-analyze checks Loom's units (nothing here runs systemd)
  iproute2 util-linux procps mount e2fsprogs
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Loom's admins are root and this group (auth.admin_group in loom.toml).
getent group loomadm >/dev/null || groupadd --system loomadm
# Two ordinary users so that jobs are submitted, and run, as somebody other than root.
for u in loom-alice loom-bob; do
  id -u "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$u"
done

# Munge authenticates Loom's users. Debian's key belongs to the munge user and munged
# refuses a key it does not own, so start it as that user; never with --force.
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do
    (munge -n | unmunge) >/dev/null 2>&1 && break
    sleep 0.1
  done
  (munge -n | unmunge) >/dev/null 2>&1 || { echo "install-deps.sh: munged did not start" >&2; exit 1; }
fi
echo "install-deps.sh: all dependencies present"
