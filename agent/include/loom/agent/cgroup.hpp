// A job's cgroup (v1 here: cpuset, memory, freezer and pids hierarchies), so that every
// process of a task, however it forks, is bound, limited, and killed together.
//
// Created under this agent's own cgroup in each hierarchy, as loom/<name>: an agent inside
// a container or a systemd slice stays within what it was given.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::agent {

struct CgroupLimits {
  std::vector<unsigned> cpus;      // PU OS indexes; empty: the parent's
  std::optional<unsigned> numa;    // memory node; none: the parent's
  std::uint64_t memory_bytes = 0;  // 0: no limit
};

class Cgroup {
 public:
  // Creates loom/<name> in every hierarchy Loom uses, with the limits applied; name may
  // have levels ("n0/job_7_rank_0"), created as needed. The levels above the last belong
  // to whoever names them (an agent: its own level); remove_level() removes them.
  static Result<Cgroup> create(const std::string& name, const CgroupLimits& limits);
  // The existing cgroup loom/<name> (a task an agent before this one started).
  static Result<Cgroup> open(const std::string& name);
  // Removes loom/<name> in every hierarchy, where it is empty (holds no cgroup).
  static void remove_level(const std::string& name);
  // Kills every process in every cgroup under loom/<name> and removes them all, deepest
  // first: what is left of a cluster that is being taken down.
  static void destroy_level(const std::string& name);
  Cgroup(Cgroup&& other) noexcept : paths_(std::move(other.paths_)) { other.paths_.clear(); }
  Cgroup& operator=(Cgroup&&) = delete;
  ~Cgroup();  // removes its directories (the last level of its name)

  // Its directory in each hierarchy (cgroup.procs in each takes a process).
  const std::vector<std::string>& paths() const { return paths_; }
  // Moves a process (and so its future children) into the cgroup.
  Status add(pid_t pid) const;
  // The processes in it now.
  std::vector<pid_t> processes() const;
  // Sends `signal` to every process in it now (SIGTERM before a kill: a job's chance to
  // checkpoint and exit).
  void signal_all(int signal) const;
  // Freezes the cgroup, SIGKILLs everything in it, thaws, and waits (bounded) until it is
  // empty, so that no process escapes by forking during the kill.
  Status kill_all() const;
  // Whether the kernel's OOM killer acted in this cgroup.
  bool out_of_memory() const;

 private:
  explicit Cgroup(std::vector<std::string> paths) : paths_(std::move(paths)) {}
  std::vector<std::string> paths_;  // one directory per hierarchy
};

}  // namespace loom::agent
