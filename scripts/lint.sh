#!/usr/bin/env bash
# What is too long for CI, run before each submission (README, "Building by hand"):
# - ThreadSanitizer over the controller's and the agent's unit and integration tests (the
#   core and its inbox, the store, the agent's pool, exit watcher, tasks and records).
#   Suppressions (tests/tsan.supp) name only Debian libraries that are not instrumented.
# - clang-tidy-19 over every translation unit of the release build (.clang-tidy says which
#   checks and why), every warning an error. clang-tidy 14 to 16 cannot read libstdc++ 12's
#   <expected>; 19 is Debian 12's newest, installed here when missing.
# As root, as the tests of the agent need (real cgroups, the loom-alice user).
# `scripts/lint.sh tsan` or `scripts/lint.sh tidy` runs one of the two.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
what=${1:-all}

if [[ $what == all || $what == tsan ]]; then
  tests=(controller/controller_test agent/agent_unit_test agent/agent_test launch/launch_test)
  echo "== tsan: configure, build"
  cmake --preset tsan >/dev/null
  cmake --build --preset tsan -j "$jobs" --target $(basename -a "${tests[@]}")
  echo "== tsan: run"
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"
  for t in "${tests[@]}"; do
    echo "-- $t"
    "build/tsan/tests/$t" --gtest_brief=1
  done
fi

if [[ $what == all || $what == tidy ]]; then
  echo "== clang-tidy: the release build's compile commands and generated sources"
  command -v run-clang-tidy-19 >/dev/null || apt-get install -y clang-tidy-19 >/dev/null
  cmake --preset release >/dev/null
  cmake --build --preset release -j "$jobs"
  echo "== clang-tidy: every source of ours (about 20 minutes on 2 cores)"
  # -Wno-unknown-warning-option: GCC's -Wno-restrict, which clang does not know.
  # -Wno-deprecated-declarations: libstdc++ 12's stable_sort calls get_temporary_buffer,
  # which clang 19 reports as deprecated at every use; GCC's -Werror build still refuses a
  # deprecated use of ours (the 0.1 staging fields are read under a pragma that says why).
  run-clang-tidy-19 -p build/release -j "$jobs" -quiet \
    -extra-arg=-Wno-unknown-warning-option -extra-arg=-Wno-deprecated-declarations \
    "^$PWD/(?!build/)"
fi
echo "== lint: clean"
