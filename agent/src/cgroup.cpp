#include "loom/agent/cgroup.hpp"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "loom/common/index_list.hpp"

namespace loom::agent {

namespace {

constexpr const char* kRoot = "/sys/fs/cgroup";
constexpr const char* kControllers[] = {"cpuset", "memory", "freezer", "pids"};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Status write_file(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  out << value;
  out.flush();
  if (!out) {
    return make_error(ErrorCode::kInternal, fmt::format("cannot write \"{}\" to {}: {}", value,
                                                        path, std::strerror(errno)));
  }
  return {};
}

// This process's cgroup in a v1 hierarchy, from /proc/self/cgroup ("4:memory:/a/b").
std::string own_cgroup(std::string_view controller) {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    const std::size_t first = line.find(':'), second = line.find(':', first + 1);
    const std::string list = line.substr(first + 1, second - first - 1);
    std::stringstream names(list);
    for (std::string name; std::getline(names, name, ',');) {
      if (name == controller) return line.substr(second + 1);
    }
  }
  return "/";
}

Status make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return make_error(ErrorCode::kInternal,
                      fmt::format("cannot create cgroup {}: {}", path, std::strerror(errno)));
  }
  return {};
}

}  // namespace

Result<Cgroup> Cgroup::create(const std::string& name, const CgroupLimits& limits) {
  std::vector<std::string> paths;
  for (const char* controller : kControllers) {
    const std::string base = fmt::format("{}/{}{}", kRoot, controller, own_cgroup(controller));
    const bool cpuset = std::string_view(controller) == "cpuset";
    // loom/<each component of name>: intermediate levels of a v1 cpuset start empty and
    // inherit their parent's CPUs and memory nodes.
    std::string parent = base;
    std::string path = base + (base.ends_with('/') ? "" : "/") + "loom";
    for (std::size_t start = 0;;) {
      LOOM_TRY(make_dir(path));
      if (cpuset) {
        for (const char* file : {"cpuset.cpus", "cpuset.mems"}) {
          if (read_file(path + "/" + file).empty())
            LOOM_TRY(write_file(path + "/" + file, read_file(parent + "/" + file)));
        }
      }
      if (start > name.size()) break;
      const std::size_t slash = std::min(name.find('/', start), name.size());
      parent = path;
      path += "/" + name.substr(start, slash - start);
      start = slash + 1;
    }
    paths.push_back(path);
    if (cpuset) {
      if (!limits.cpus.empty())
        LOOM_TRY(write_file(path + "/cpuset.cpus", format_index_list(limits.cpus)));
      if (limits.numa) LOOM_TRY(write_file(path + "/cpuset.mems", std::to_string(*limits.numa)));
    }
    if (std::string_view(controller) == "memory" && limits.memory_bytes > 0) {
      LOOM_TRY(write_file(path + "/memory.limit_in_bytes", std::to_string(limits.memory_bytes)));
      // Where swap is accounted, memory plus swap gets the same limit: a task over its
      // memory is killed, not swapped out.
      if (::access((path + "/memory.memsw.limit_in_bytes").c_str(), W_OK) == 0) {
        LOOM_TRY(
            write_file(path + "/memory.memsw.limit_in_bytes", std::to_string(limits.memory_bytes)));
      }
    }
  }
  return Cgroup(std::move(paths));
}

Result<Cgroup> Cgroup::open(const std::string& name) {
  std::vector<std::string> paths;
  for (const char* controller : kControllers) {
    const std::string base = fmt::format("{}/{}{}", kRoot, controller, own_cgroup(controller));
    const std::string path = base + (base.ends_with('/') ? "" : "/") + "loom/" + name;
    if (::access(path.c_str(), F_OK) != 0)
      return make_error(ErrorCode::kNotFound, fmt::format("no cgroup {}", path));
    paths.push_back(path);
  }
  return Cgroup(std::move(paths));
}

void Cgroup::destroy_level(const std::string& name) {
  const std::string base = fmt::format("{}/freezer{}", kRoot, own_cgroup("freezer"));
  const std::filesystem::path root = std::filesystem::path(base) / "loom" / name;
  std::error_code ec;
  std::vector<std::string> leaves;  // names below loom/ of every cgroup under the level
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory())
      leaves.push_back(std::filesystem::relative(it->path(), root.parent_path()).string());
  }
  std::sort(leaves.rbegin(), leaves.rend());  // children sort after their parents
  for (const std::string& leaf : leaves) {
    if (auto cgroup = open(leaf)) (void)cgroup->kill_all();  // ~Cgroup removes it
  }
  remove_level(name);
}

// Only the last level goes: removing a level above while another task's cgroup is being
// created under it would pull the directory from under that creation.
Cgroup::~Cgroup() {
  for (const std::string& path : paths_) ::rmdir(path.c_str());
}

void Cgroup::remove_level(const std::string& name) {
  for (const char* controller : kControllers) {
    const std::string base = fmt::format("{}/{}{}", kRoot, controller, own_cgroup(controller));
    ::rmdir((base + (base.ends_with('/') ? "" : "/") + "loom/" + name)
                .c_str());  // fails, harmlessly, when not empty
  }
}

Status Cgroup::add(pid_t pid) const {
  for (const std::string& path : paths_)
    LOOM_TRY(write_file(path + "/cgroup.procs", std::to_string(pid)));
  return {};
}

std::vector<pid_t> Cgroup::processes() const {
  std::vector<pid_t> pids;
  std::ifstream in(paths_.at(3) + "/cgroup.procs");  // pids: every process is counted there
  for (pid_t pid; in >> pid;) pids.push_back(pid);
  return pids;
}

void Cgroup::signal_all(int signal) const {
  for (pid_t pid : processes()) ::kill(pid, signal);
}

Status Cgroup::kill_all() const {
  if (processes().empty())
    return {};  // the common case, a task that ended whole: nothing to freeze
  const std::string freezer = paths_.at(2);
  LOOM_TRY(write_file(freezer + "/freezer.state", "FROZEN"));
  for (int i = 0; i < 100 && read_file(freezer + "/freezer.state") != "FROZEN"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // freezing is asynchronous in v1
  }
  for (pid_t pid : processes()) ::kill(pid, SIGKILL);
  LOOM_TRY(write_file(freezer + "/freezer.state", "THAWED"));  // killed processes die once thawed
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    const std::vector<pid_t> left = processes();
    if (left.empty()) return {};
    for (pid_t pid : left) ::kill(pid, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return make_error(ErrorCode::kDeadlineExceeded,
                    fmt::format("processes of {} survived SIGKILL for 5 s", paths_.at(3)));
}

bool Cgroup::out_of_memory() const {
  std::ifstream in(paths_.at(1) + "/memory.oom_control");
  for (std::string key; in >> key;) {
    std::uint64_t value = 0;
    in >> value;
    if (key == "oom_kill" && value > 0) return true;
  }
  return false;
}

}  // namespace loom::agent
