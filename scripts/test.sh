#!/usr/bin/env bash
# Builds Loom and runs every test, as CI does (.ci/run calls the README's test command).
#   1. the release preset: every test, all labels (unit, integration, e2e);
#   2. the asan preset (AddressSanitizer + UndefinedBehaviorSanitizer): the unit and
#      integration labels (e2e tests, which run whole clusters, run in release only).
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc)

echo "== release: configure, build, all tests"
cmake --preset release
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs"

echo "== asan: configure, build, unit and integration tests"
cmake --preset asan
cmake --build --preset asan -j "$jobs"
ctest --preset asan -j "$jobs" -L "^(unit|integration)$"
