#!/usr/bin/env bash
# What is too long for CI, run before each submission (docs/testing.md says when):
# ThreadSanitizer over the controller's and the agent's unit and integration tests (the
# core and its inbox, the store, the agent's pool, exit watcher, tasks and records).
# Suppressions (tests/tsan.supp) name only Debian libraries that are not instrumented.
# As root, as the tests of the agent need (real cgroups, the loom-alice user).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
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
echo "== lint: clean"
