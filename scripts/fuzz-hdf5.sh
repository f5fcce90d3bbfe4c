#!/usr/bin/env bash
# The HDF5 fuzz at length, too long for CI (which runs 100 mutations): MUTATIONS (default
# 500) mutated copies of an HDF5 file and a netCDF-4 one, 24 bytes each, staged as loom-alice
# through a real storage agent and stager (tests/security/hdf5_fuzz_test.cpp). Every one must
# stage h5diff-equal to what HDF5 reads in its source, or fail naming the file, with the agent
# serving on; the last line counts what staged, what failed, and how many of those crashed or
# exhausted loom-h5skeleton. As root with munged running, after a release build.
# Usage: scripts/fuzz-hdf5.sh [MUTATIONS [SEED]]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build --preset release --target security_test loom-h5skeleton >/dev/null
LOOM_FUZZ_MUTATIONS=${1:-500} LOOM_FUZZ_SEED=${2:-19} \
  build/release/tests/security/security_test --gtest_brief=1 \
  --gtest_filter='Hdf5FuzzTest.*'
