// Launching a job's task on this node: in its own cgroup, bound to its placed cores and
// NUMA memory, as the submitting user, with its output in the job's files.
//
// Every task has a keeper: a small program (loom-keeper) that the agent spawns, which starts
// the task, waits for it and writes its exit status to a file. The keeper outlives the agent, so an
// agent that restarts finds each task again (adopt) and learns how it ended, as Slurm's
// slurmd finds its slurmstepd.
#pragma once

#include <sys/types.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loom/agent/cgroup.hpp"
#include "loom/common/error.hpp"
#include "loom/common/unique_fd.hpp"
#include "loom/hwtopo/binding.hpp"

namespace loom::agent {

struct TaskSpec {
  std::string cgroup_name;  // e.g. "n0/job_42_rank_0": one agent's tasks under its node's name
  std::vector<std::string> argv;
  std::map<std::string, std::string> environment;  // exactly what the task sees
  std::string chdir;
  std::string stdout_path;  // opened as the user, appended to
  std::string stderr_path;  // may equal stdout_path
  mode_t umask = 022;       // the submitter's: the task's, and its output files' modes
  uid_t uid = 0;
  std::optional<hwtopo::Binding> binding;  // resolved against the node's Binder
  std::uint64_t memory_limit = 0;          // bytes; 0: none
  std::uint64_t swap_limit = 0;            // swap beyond memory_limit (agent.swap)
  std::uint64_t pids_max = 0;              // agent.pids_max; 0: none
  bool allow_root = false;                 // agent.allow_root_jobs
  std::filesystem::path status_path;       // where the keeper writes the exit status
  std::filesystem::path keeper;            // the loom-keeper program (beside loomd)
  // A descriptor of the agent's (not owned) that the task gets as kTaskChannelFd: its
  // channel to the agent. -1: none.
  int channel = -1;
};

struct ExitStatus {
  int exit_code = 0;  // 128 + signal when killed by one
  std::optional<int> signal;
  bool out_of_memory = false;  // the memory limit's OOM killer acted
  CgroupUsage usage;           // what the task's processes used, all of them
};

// What finds a task again after the agent restarts.
struct TaskRecord {
  std::string cgroup_name;
  pid_t keeper = -1;
  std::uint64_t keeper_start = 0;  // the keeper's start time (/proc/PID/stat), against PID reuse
  std::filesystem::path status_path;
};

// A started task. Owns its cgroup: destroying it kills what is left and removes it.
class Task {
 public:
  // Starts the task; an error (no such user, root refused, command not found, a file that
  // cannot be opened as the user) comes back before anything runs.
  static Result<Task> start(const CgroupTree& cgroups, const TaskSpec& spec);
  // A task started by an agent before this one: running still, or ended with its status
  // written. An error when neither (its keeper is gone and wrote nothing).
  static Result<Task> adopt(const CgroupTree& cgroups, const TaskRecord& record);
  Task(Task&& other) noexcept
      : record_(std::move(other.record_)),
        cgroup_(std::move(other.cgroup_)),
        own_child_(other.own_child_),
        done_(std::exchange(other.done_, true)) {}
  Task& operator=(Task&&) = delete;
  ~Task();

  const TaskRecord& record() const { return record_; }
  const Cgroup& cgroup() const { return cgroup_; }
  // Leaves the task running without this object, as an agent that stops does: its record
  // is what adopt() takes.
  TaskRecord detach() && {
    done_ = true;
    return record_;
  }
  // A pidfd that is readable once the task's keeper has exited; none when it has exited
  // already (an adopted task whose keeper is gone). After it, wait() does not block.
  std::optional<UniqueFd> exit_fd() const;
  // Waits for the task to exit, then kills anything it left behind.
  Result<ExitStatus> wait();
  // Its exit code and signal once its keeper has written them (it then exits), without
  // waiting: for one task's end seen before the others'. Usage comes with wait().
  std::optional<ExitStatus> status_written() const;
  // Kills every process of the task (by cgroup); wait() then reports the signal.
  Status kill() const { return cgroup_.kill_all(); }
  // Sends SIGTERM to every process of the task: a kill with a grace period starts so.
  void terminate() const { cgroup_.signal_all(SIGTERM); }

 private:
  Task(TaskRecord record, Cgroup cgroup, bool own_child)
      : record_(std::move(record)), cgroup_(std::move(cgroup)), own_child_(own_child) {}
  TaskRecord record_;
  Cgroup cgroup_;
  bool own_child_;     // the keeper is this process's child (reaped with waitpid)
  bool done_ = false;  // waited for, or moved from
};

}  // namespace loom::agent
