#include <fmt/format.h>
#include <fmt/ranges.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <ranges>
#include <set>
#include <sstream>

#include "cgroup_files.hpp"
#include "loom/agent/cgroup.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/common/index_list.hpp"

namespace loom::agent {

namespace fs = std::filesystem;
namespace files = cgroup_files;

namespace {

// The controllers whose limits a task gets, in the order they are enabled.
constexpr std::array<std::string_view, 3> kLimiting{"cpuset", "memory", "pids"};

// What a task loses where a controller is missing.
std::string_view loss(std::string_view controller) {
  if (controller == "cpuset")
    return "tasks are bound by sched_setaffinity and mbind alone, which a task may undo";
  if (controller == "memory") return "--mem-per-task is not enforced, peak memory not measured";
  if (controller == "pids") return "agent.pids_max is not enforced";
  return "CPU time is not measured";  // cpuacct
}

bool filesystem_is(const fs::path& path, long magic) {
  struct statfs st {};
  return ::statfs(path.c_str(), &st) == 0 && static_cast<long>(st.f_type) == magic;
}

// This process's cgroup in the v1 hierarchy of `controller` ("4:memory:/a/b"), or in the v2
// tree when controller is empty ("0::/a/b").
std::string own_cgroup(std::string_view controller) {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    const std::size_t first = line.find(':'), second = line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string list = line.substr(first + 1, second - first - 1);
    if (controller.empty() && list.empty() && line.starts_with("0:"))
      return line.substr(second + 1);
    std::stringstream names(list);
    for (std::string name; std::getline(names, name, ',');) {
      if (!controller.empty() && name == controller) return line.substr(second + 1);
    }
  }
  return "/";
}

// The cgroup an agent works under, from its own: an agent started inside a Loom cgroup (a
// loomd restarted by one that had moved itself into loom/<level>/loomd) works where that
// one did, not a level deeper.
fs::path agent_base(const fs::path& mount, std::string own) {
  if (const std::size_t at = (own + "/").find("/loom/"); at != std::string::npos) own.resize(at);
  while (own.starts_with('/')) own.erase(0, 1);
  return own.empty() ? mount : mount / own;  // not "mount/", which is no path equal to mount
}

// The v2 cgroup's processes other than this one.
std::vector<std::string> other_processes(const fs::path& cgroup) {
  std::vector<std::string> pids = files::words(cgroup / "cgroup.procs");
  std::erase(pids, std::to_string(::getpid()));
  return pids;
}

}  // namespace

Result<CgroupChoice> parse_cgroup_choice(std::string_view text) {
  if (text == "auto") return CgroupChoice::kAuto;
  if (text == "v1") return CgroupChoice::kV1;
  if (text == "v2") return CgroupChoice::kV2;
  return make_error(ErrorCode::kInvalidArgument,
                    fmt::format("agent.cgroup: \"{}\" is none of auto, v1, v2", text));
}

Result<CgroupTree> CgroupTree::find(CgroupChoice choice, const fs::path& mount) {
  const bool unified = filesystem_is(mount, CGROUP2_SUPER_MAGIC);
  const fs::path v2_mount = unified ? mount
                            : filesystem_is(mount / "unified", CGROUP2_SUPER_MAGIC)
                                ? mount / "unified"
                                : fs::path();
  const bool v1 = !unified && filesystem_is(mount / "freezer", CGROUP_SUPER_MAGIC);
  const std::string layout = unified ? "unified" : v2_mount.empty() ? "legacy" : "hybrid";
  if (!v1 && v2_mount.empty()) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("{} holds neither cgroup v2 nor a cgroup v1 freezer hierarchy",
                                  mount.string()));
  }
  const fs::path v2_base = v2_mount.empty() ? fs::path() : agent_base(v2_mount, own_cgroup(""));
  const auto v2_controllers = files::words(v2_base / "cgroup.controllers");
  const bool v2_has_memory = std::ranges::find(v2_controllers, "memory") != v2_controllers.end();
  CgroupVersion version = CgroupVersion::kV1;
  switch (choice) {
    case CgroupChoice::kV1:
      if (!v1) {
        return make_error(ErrorCode::kFailedPrecondition,
                          fmt::format("agent.cgroup is \"v1\", but this node has no cgroup v1 "
                                      "freezer hierarchy at {}/freezer (it mounts cgroup v2 alone)",
                                      mount.string()));
      }
      version = CgroupVersion::kV1;
      break;
    case CgroupChoice::kV2:
      if (v2_mount.empty()) {
        return make_error(ErrorCode::kFailedPrecondition,
                          fmt::format("agent.cgroup is \"v2\", but this node mounts no cgroup v2 "
                                      "tree at {} or {}/unified (it has cgroup v1 alone)",
                                      mount.string(), mount.string()));
      }
      version = CgroupVersion::kV2;
      break;
    case CgroupChoice::kAuto:
      version = unified || (!v1 && !v2_mount.empty()) || (!v2_mount.empty() && v2_has_memory)
                    ? CgroupVersion::kV2
                    : CgroupVersion::kV1;
      break;
  }

  CgroupTree tree(version, layout);
  if (version == CgroupVersion::kV2) {
    tree.hierarchies_.push_back({"", v2_base / "loom"});
    const std::vector<std::string> others = other_processes(v2_base);
    const bool root = v2_base == v2_mount;
    for (std::string_view controller : kLimiting) {
      if (std::ranges::find(v2_controllers, controller) == v2_controllers.end()) {
        tree.notes_.push_back(fmt::format("{}: not among {}'s controllers: {}", controller,
                                          (v2_base / "cgroup.controllers").string(),
                                          loss(controller)));
      } else if (!root && !others.empty()) {
        // A cgroup other than the root that holds processes may not give its children
        // controllers, and those processes are not the agent's to move.
        tree.notes_.push_back(fmt::format(
            "{}: {} holds other processes ({}), so no controller can be enabled below it (run "
            "loomd in a cgroup of its own: systemd's Delegate=yes): {}",
            controller, v2_base.string(), fmt::join(others, " "), loss(controller)));
      } else {
        tree.enforced_.emplace_back(controller);
      }
    }
    return tree;
  }

  for (std::string_view controller : {"freezer", "cpuset", "memory", "pids", "cpuacct"}) {
    const fs::path hierarchy = mount / controller;
    if (!filesystem_is(hierarchy, CGROUP_SUPER_MAGIC)) {
      tree.notes_.push_back(fmt::format("{}: no cgroup v1 hierarchy at {}: {}", controller,
                                        hierarchy.string(), loss(controller)));
      continue;
    }
    const fs::path base = agent_base(hierarchy, own_cgroup(controller));
    tree.hierarchies_.push_back({std::string(controller), base / "loom"});
    if (controller != "freezer" && controller != "cpuacct") tree.enforced_.emplace_back(controller);
  }
  return tree;
}

CgroupTree CgroupTree::v2_at(const fs::path& base, std::vector<std::string> enforced) {
  CgroupTree tree(CgroupVersion::kV2, "unified");
  tree.hierarchies_.push_back({"", base / "loom"});
  tree.enforced_ = std::move(enforced);
  return tree;
}

bool CgroupTree::enforces(std::string_view controller) const {
  return std::ranges::find(enforced_, controller) != enforced_.end();
}

std::vector<fs::path> CgroupTree::dirs(const std::string& name) const {
  std::vector<fs::path> out;
  out.reserve(hierarchies_.size());
  for (const Hierarchy& h : hierarchies_) out.push_back(h.loom_dir / name);
  return out;
}

// v2: each cgroup from `from` down to `to` gives its children the enforced controllers.
Status CgroupTree::enable_controllers(const fs::path& from, const fs::path& to) const {
  fs::path dir = from;
  const fs::path below = to.lexically_relative(from);
  for (auto part = below.begin();; ++part) {
    if (dir != from) LOOM_TRY(files::make_dir(dir));
    const std::vector<std::string> on = files::words(dir / "cgroup.subtree_control");
    std::string wanted;
    for (const std::string& controller : enforced_) {
      if (std::ranges::find(on, controller) == on.end()) wanted += "+" + controller + " ";
    }
    if (!wanted.empty()) LOOM_TRY(files::write(dir / "cgroup.subtree_control", wanted));
    if (part == below.end() || *part == ".") break;
    dir /= *part;
  }
  return {};
}

Status CgroupTree::enter(const std::string& level) {
  for (const Hierarchy& h : hierarchies_) {
    const fs::path base = h.loom_dir.parent_path();
    if (::access(base.c_str(), W_OK) != 0) {
      return make_error(ErrorCode::kPermissionDenied,
                        fmt::format("cannot write the cgroup {} this agent runs in: {} (delegate "
                                    "it to loomd: systemd's Delegate=yes)",
                                    base.string(), loom::errno_text(errno)));
    }
  }
  if (version_ != CgroupVersion::kV2) return {};
  const fs::path loom = hierarchies_.front().loom_dir;
  const fs::path leaf = loom / level / "loomd";
  std::error_code error;
  fs::create_directories(leaf, error);
  if (error) {
    return make_error(ErrorCode::kInternal,
                      fmt::format("cannot create cgroup {}: {}", leaf.string(), error.message()));
  }
  LOOM_TRY(files::write(leaf / "cgroup.procs", std::to_string(::getpid())));
  if (Status enabled = enable_controllers(loom.parent_path(), loom / level); !enabled) {
    for (const std::string& controller : enforced_) {
      notes_.push_back(fmt::format("{}: {}", controller, enabled.error().message()));
    }
    enforced_.clear();
  }
  return {};
}

Result<Cgroup> CgroupTree::create(const std::string& name, const CgroupLimits& limits) const {
  std::vector<Cgroup::Dir> made;
  made.reserve(hierarchies_.size());
  for (const Hierarchy& h : hierarchies_) made.push_back({h.controller, h.loom_dir / name});
  if (version_ == CgroupVersion::kV2) {
    const fs::path loom = hierarchies_.front().loom_dir;
    LOOM_TRY(enable_controllers(loom.parent_path(), made.front().path.parent_path()));
    LOOM_TRY(files::make_dir(made.front().path));
  } else {
    for (const Hierarchy& h : hierarchies_) {
      // loom/<each level of name>: the levels of a v1 cpuset start empty, and are given
      // their parent's CPUs and memory nodes.
      fs::path parent = h.loom_dir.parent_path(), path = h.loom_dir;
      const fs::path below = fs::path(name);
      for (auto part = below.begin();; ++part) {
        LOOM_TRY(files::make_dir(path));
        if (h.controller == "cpuset") {
          for (const char* file : {"cpuset.cpus", "cpuset.mems"}) {
            if (files::read(path / file).empty())
              LOOM_TRY(files::write(path / file, files::read(parent / file)));
          }
        }
        if (part == below.end()) break;
        parent = path;
        path /= *part;
      }
    }
  }
  Cgroup cgroup(version_, std::move(made));  // removed again if a limit cannot be set
  if (enforces("cpuset")) {
    const fs::path dir = cgroup.dir("cpuset");
    if (!limits.cpus.empty())
      LOOM_TRY(files::write(dir / "cpuset.cpus", format_index_list(limits.cpus)));
    if (limits.numa) LOOM_TRY(files::write(dir / "cpuset.mems", std::to_string(*limits.numa)));
  }
  if (enforces("memory") && limits.memory_bytes > 0) {
    const fs::path dir = cgroup.dir("memory");
    if (version_ == CgroupVersion::kV2) {
      LOOM_TRY(files::write(dir / "memory.max", std::to_string(limits.memory_bytes)));
      // Absent where the kernel does not account swap (swapaccount=0).
      if (fs::exists(dir / "memory.swap.max"))
        LOOM_TRY(files::write(dir / "memory.swap.max", std::to_string(limits.swap_bytes)));
    } else {
      LOOM_TRY(files::write(dir / "memory.limit_in_bytes", std::to_string(limits.memory_bytes)));
      if (::access((dir / "memory.memsw.limit_in_bytes").c_str(), W_OK) == 0) {
        LOOM_TRY(files::write(dir / "memory.memsw.limit_in_bytes",
                              std::to_string(limits.memory_bytes + limits.swap_bytes)));
      }
    }
  }
  if (enforces("pids") && limits.pids_max > 0)
    LOOM_TRY(files::write(cgroup.dir("pids") / "pids.max", std::to_string(limits.pids_max)));
  return cgroup;
}

Result<Cgroup> CgroupTree::open(const std::string& name) const {
  std::vector<Cgroup::Dir> found;
  for (const Hierarchy& h : hierarchies_) {
    const fs::path path = h.loom_dir / name;
    if (::access(path.c_str(), F_OK) != 0)
      return make_error(ErrorCode::kNotFound, fmt::format("no cgroup {}", path.string()));
    found.push_back({h.controller, path});
  }
  return Cgroup(version_, std::move(found));
}

void CgroupTree::remove_level(const std::string& name) const {
  for (const fs::path& dir : dirs(name)) ::rmdir(dir.c_str());  // fails, harmlessly, if not empty
}

// Every cgroup at and under loom/<name>, in any hierarchy, deepest first: each killed (v1's
// freezer first where it has it) and removed.
void CgroupTree::kill_and_remove(const std::string& name) const {
  std::set<std::string> found;  // names below loom/
  for (const Hierarchy& h : hierarchies_) {
    std::error_code ec;
    if (!fs::is_directory(h.loom_dir / name, ec)) continue;
    found.insert(name);
    for (auto it = fs::recursive_directory_iterator(h.loom_dir / name, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory()) found.insert(fs::relative(it->path(), h.loom_dir).string());
    }
  }
  for (const auto& below : std::ranges::reverse_view(found)) {  // children sort after parents
    std::vector<Cgroup::Dir> dirs;
    for (const Hierarchy& h : hierarchies_) {
      if (fs::is_directory(h.loom_dir / below)) dirs.push_back({h.controller, h.loom_dir / below});
    }
    const Cgroup cgroup(version_, std::move(dirs));
    (void)cgroup.kill_all();  // ~Cgroup removes it
  }
}

void CgroupTree::destroy_level(const std::string& name) const { kill_and_remove(name); }

std::vector<std::string> CgroupTree::sweep(const std::string& level,
                                           const std::vector<std::string>& keep) const {
  std::set<std::string> names;
  for (const Hierarchy& h : hierarchies_) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(h.loom_dir / level, ec)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_directory() && name != "loomd") names.insert(fmt::format("{}/{}", level, name));
    }
  }
  std::vector<std::string> swept;
  for (const std::string& name : names) {
    const bool held = std::ranges::any_of(
        keep, [&](const std::string& k) { return k == name || k.starts_with(name + "/"); });
    if (held) continue;
    kill_and_remove(name);
    swept.push_back(name);
  }
  return swept;
}

}  // namespace loom::agent
