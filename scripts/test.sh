#!/usr/bin/env bash
# Builds Loom and runs every test, as CI does (.ci/run calls the README's test command).
#   0. every C++ source formatted as .clang-format says (clang-format 16: `clang-format-16 -i`);
#   1. the release preset: every test, all labels (unit, integration, e2e, and cgroup2: the
#      job flow inside a kernel with cgroup v2 alone, tests/cgroup2/vm.sh);
#   2. the asan preset (AddressSanitizer + UndefinedBehaviorSanitizer): the unit and
#      integration labels (e2e tests, which run whole clusters, run in release only).
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc)

echo "== format: clang-format-16 --dry-run --Werror (the tree's .clang-format)"
find . -path ./build -prune -o -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' \) -print0 |
  xargs -0 clang-format-16 --dry-run --Werror

echo "== release: configure, build, all tests"
cmake --preset release
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs"

echo "== asan: configure, build, unit and integration tests"
cmake --preset asan
cmake --build --preset asan -j "$jobs"
ctest --preset asan -j "$jobs" -L "^(unit|integration)$"
