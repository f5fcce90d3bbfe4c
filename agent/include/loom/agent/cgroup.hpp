// A task's cgroup, so that every process of a task, however it forks, is bound, limited,
// accounted and killed together; and the node's cgroup tree it is made in.
//
// Two kernels' worth of cgroups: v1 (a hierarchy per controller: cpuset, memory, pids,
// cpuacct, freezer) and v2 (one tree; on stock Debian 12, RHEL 9 and Ubuntu 22.04 nodes
// the only one). A node may mount both ("hybrid": v1 controllers and a v2 tree without
// them). CgroupTree::find looks once, at the agent's start, and everything after goes
// through what it found. docs/admin-guide.md says what each mode enforces.
//
// Cgroups are made under the agent's own cgroup, as loom/<name>: an agent inside a container
// or a systemd service (Delegate=yes) stays within what it was given.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"

namespace loom::agent {

enum class CgroupVersion { kV1, kV2 };
// agent.cgroup: which tree to use. kAuto: v2 where the node's v2 tree has the memory
// controller, else v1.
enum class CgroupChoice { kAuto, kV1, kV2 };
// "auto", "v1" or "v2"; anything else is an error that lists them.
Result<CgroupChoice> parse_cgroup_choice(std::string_view text);

struct CgroupLimits {
  std::vector<unsigned> cpus;      // PU OS indexes; empty: the parent's
  std::optional<unsigned> numa;    // memory node; none: the parent's
  std::uint64_t memory_bytes = 0;  // 0: no limit
  std::uint64_t swap_bytes = 0;    // swap allowed beyond memory_bytes (when it is set)
  std::uint64_t pids_max = 0;      // processes and threads; 0: no limit
};

// What the kernel counted for a cgroup's processes, read before it is removed.
struct CgroupUsage {
  double cpu_seconds = 0;                          // user and system
  std::optional<std::uint64_t> memory_peak_bytes;  // none where the kernel does not keep it
};

class Cgroup;

class CgroupTree {
 public:
  // What the node mounts at `mount` and where this process's loom/ goes in it: this
  // process's own cgroup, or, when that is already a Loom cgroup (an agent restarted from
  // inside one), the one above loom/. Refuses a choice the node cannot honour (v2 where
  // there is no v2 tree, v1 where there is no v1 freezer), naming the key.
  static Result<CgroupTree> find(CgroupChoice choice,
                                 const std::filesystem::path& mount = "/sys/fs/cgroup");

  // The v2 tree whose cgroup for this process is `base`, its children given `enforced`:
  // what find() would make of it, for a tree find() cannot see (the files it writes,
  // tested on a plain directory shaped like a v2 mount).
  static CgroupTree v2_at(const std::filesystem::path& base, std::vector<std::string> enforced);

  // Refuses a tree this process may not write, naming the cgroup. v2: moves this process
  // into loom/<level>/loomd (a cgroup with children may hold no process) and enables the
  // controllers it can in each cgroup from its own down to loom/<level>; what it cannot
  // enable is noted, not fatal.
  Status enter(const std::string& level);

  CgroupVersion version() const { return version_; }
  // "legacy" (v1 alone), "hybrid" (v1 and a v2 tree) or "unified" (v2 alone).
  const std::string& layout() const { return layout_; }
  // The controllers whose limits tasks get ("cpuset", "memory", "pids").
  const std::vector<std::string>& enforced() const { return enforced_; }
  bool enforces(std::string_view controller) const;
  // What is not enforced on this node, and why; empty when everything is.
  const std::vector<std::string>& notes() const { return notes_; }

  // Makes loom/<name> with the limits applied; name may have levels ("n0/job_7_rank_0"),
  // made as needed. The levels above the last belong to whoever names them (an agent: its
  // own level); remove_level() removes them.
  Result<Cgroup> create(const std::string& name, const CgroupLimits& limits) const;
  // The existing cgroup loom/<name> (a task an agent before this one started).
  Result<Cgroup> open(const std::string& name) const;
  // Removes loom/<name> where it is empty (holds no cgroup).
  void remove_level(const std::string& name) const;
  // Kills every process in every cgroup under loom/<name> and removes them all, deepest
  // first: what is left of a cluster that is being taken down.
  void destroy_level(const std::string& name) const;
  // The cgroups directly under loom/<level> that hold none of `keep` (names below loom/,
  // as create() takes them) and are not an agent's own leaf: each is killed and removed
  // with what is under it, even where it exists in some v1 hierarchies only. What an agent that
  // crashed left behind (a launch cut short before its record); returns their names.
  std::vector<std::string> sweep(const std::string& level,
                                 const std::vector<std::string>& keep) const;

 private:
  struct Hierarchy {
    std::string controller;          // v1: its controller; v2: empty (one tree)
    std::filesystem::path loom_dir;  // <this process's cgroup in it>/loom
  };
  CgroupTree(CgroupVersion version, std::string layout)
      : version_(version), layout_(std::move(layout)) {}
  void kill_and_remove(const std::string& name) const;
  std::vector<std::filesystem::path> dirs(const std::string& name) const;
  Status enable_controllers(const std::filesystem::path& from,
                            const std::filesystem::path& to) const;

  CgroupVersion version_;
  std::string layout_;
  std::vector<Hierarchy> hierarchies_;
  std::vector<std::string> enforced_;
  std::vector<std::string> notes_;
};

class Cgroup {
 public:
  Cgroup(Cgroup&& other) noexcept : version_(other.version_), dirs_(std::move(other.dirs_)) {
    other.dirs_.clear();
  }
  Cgroup& operator=(Cgroup&&) = delete;
  ~Cgroup();  // removes its directories (the last level of its name)

  // The files a process writes "0" to, one per hierarchy, to join the cgroup itself.
  std::vector<std::string> join_files() const;
  // Moves a process (and so its future children) into the cgroup.
  Status add(pid_t pid) const;
  // The processes in it now.
  std::vector<pid_t> processes() const;
  // Sends `signal` to every process in it now (SIGTERM before a kill: a job's chance to
  // checkpoint and exit).
  void signal_all(int signal) const;
  // Kills everything in it so that no process escapes by forking meanwhile (v2's
  // cgroup.kill; else freeze, SIGKILL each, thaw), and waits, bounded, until it is empty.
  Status kill_all() const;
  // Whether the kernel's OOM killer acted in this cgroup.
  bool out_of_memory() const;
  // CPU time and peak memory so far.
  CgroupUsage usage() const;
  // Its directory in the hierarchy of `controller` (v2: the one directory); empty if none.
  std::filesystem::path dir(std::string_view controller = {}) const;

 private:
  friend class CgroupTree;
  struct Dir {
    std::string controller;  // v1: its controller; v2: empty
    std::filesystem::path path;
  };
  Cgroup(CgroupVersion version, std::vector<Dir> dirs)
      : version_(version), dirs_(std::move(dirs)) {}
  std::filesystem::path procs_dir() const;  // where cgroup.procs lists every process
  CgroupVersion version_;
  std::vector<Dir> dirs_;
};

}  // namespace loom::agent
