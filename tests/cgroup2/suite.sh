#!/usr/bin/env bash
# suite.sh BUILD_DIR: the tests a node with cgroup v2 alone must pass, run inside vm.sh (the
# cgroup2 label: one boot for all of them). The task tests on v2, and the job flow chosen
# for it: a job as its user, --mem-per-task enforced, cancel and walltime leaving no
# process, an agent killed and restarted adopting its job, a slice and a stage-in, and the
# node's cgroup, the job's limit and its usage as loom shows them.
set -u
build=$1
if [[ $(stat -f -c %T /sys/fs/cgroup) != cgroup2fs ]]; then
  echo "suite.sh: /sys/fs/cgroup is not cgroup v2 alone here; run it through vm.sh" >&2
  exit 1
fi
status=0
run() {
  echo "== $*"
  "$@" || status=1
}
run "$build/tests/agent/agent_test" --gtest_filter='Cgroups/TaskTest.*/v2:CgroupChoice.*:CgroupTree.*'
flow=(
  'Cgroups.*'
  JobFlow.AJobRunsAsItsUserBoundAsPlacedAndItsOutputLands
  JobFlow.MemoryPerTaskIsEnforced
  JobFlow.CancelEndsARunningJobAndLeavesNoProcess
  JobFlow.AJobPastItsWalltimeGetsTermThenKillAndEndsTimeout
  BurstBufferTest.ASliceIsTheJobsOwnAndHoldsWhatItWasGivenAndNoMore
  BurstBufferTest.FilesAreStagedInAndOutByteIdentical
)
run "$build/tests/e2e/e2e_test" --gtest_filter="$(IFS=:; echo "${flow[*]}")"
exit $status
