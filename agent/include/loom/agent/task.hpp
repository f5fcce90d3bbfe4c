// Launching a job's task on this node: in its own cgroup, bound to its placed cores and
// NUMA memory, as the submitting user, with its output in the job's files.
#pragma once

#include <sys/types.h>

#include <csignal>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loom/agent/cgroup.hpp"
#include "loom/common/error.hpp"
#include "loom/hwtopo/binding.hpp"

namespace loom::agent {

struct TaskSpec {
  std::string cgroup_name;  // e.g. "n0/job_42_rank_0": one agent's tasks under its node's name
  std::vector<std::string> argv;
  std::map<std::string, std::string> environment;  // exactly what the task sees
  std::string chdir;
  std::string stdout_path;  // opened as the user, appended to
  std::string stderr_path;  // may equal stdout_path
  uid_t uid = 0;
  std::optional<hwtopo::Binding> binding;  // resolved against the node's Binder
  std::uint64_t memory_limit = 0;          // bytes; 0: none
  bool allow_root = false;                 // agent.allow_root_jobs
};

struct ExitStatus {
  int exit_code = 0;           // 128 + signal when killed by one
  std::optional<int> signal;
  bool out_of_memory = false;  // the memory limit's OOM killer acted
};

// A started task. Owns its cgroup: destroying it kills what is left and removes it.
class Task {
 public:
  // Starts the task; an error (no such user, root refused, command not found, a file that
  // cannot be opened as the user) comes back before anything runs.
  static Result<Task> start(const TaskSpec& spec, const hwtopo::Binder& binder);
  Task(Task&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)), cgroup_(std::move(other.cgroup_)), reaped_(other.reaped_) {}
  Task& operator=(Task&&) = delete;
  ~Task();

  pid_t pid() const { return pid_; }
  // Waits for the task's first process to exit, then kills anything it left behind.
  Result<ExitStatus> wait();
  // Kills every process of the task (by cgroup); wait() then reports the signal.
  Status kill() const { return cgroup_.kill_all(); }
  // Sends SIGTERM to every process of the task: a kill with a grace period starts so.
  void terminate() const { cgroup_.signal_all(SIGTERM); }

 private:
  Task(pid_t pid, Cgroup cgroup) : pid_(pid), cgroup_(std::move(cgroup)) {}
  pid_t pid_;
  Cgroup cgroup_;
  bool reaped_ = false;
};

}  // namespace loom::agent
