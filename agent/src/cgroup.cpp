#include "loom/agent/cgroup.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <fstream>
#include <thread>

#include "cgroup_files.hpp"
#include "loom/common/unique_fd.hpp"

namespace loom::agent {

namespace fs = std::filesystem;
namespace files = cgroup_files;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kKillTimeout = std::chrono::seconds(5);

// Waits until the v2 file `events` says `key value`: the kernel notifies each change of a
// cgroup's events file, so this sleeps on inotify, not in a polling loop. False at deadline.
bool wait_for(const fs::path& events, std::string_view key, std::uint64_t value,
              Clock::time_point deadline) {
  const UniqueFd watch(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!watch || ::inotify_add_watch(watch.get(), events.c_str(), IN_MODIFY) < 0)
    return files::keyed(events, key) == value;
  bool reached = false;
  while (!(reached = files::keyed(events, key) == value) && Clock::now() < deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{watch.get(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::max<long>(left, 1)));
    std::array<char, 4096> drain{};
    while (::read(watch.get(), drain.data(), drain.size()) > 0) {
    }
  }
  return reached;
}

}  // namespace

// Only the last level goes: removing a level above while another task's cgroup is being
// created under it would pull the directory from under that creation.
Cgroup::~Cgroup() {
  for (const Dir& d : dirs_) ::rmdir(d.path.c_str());
}

fs::path Cgroup::dir(std::string_view controller) const {
  for (const Dir& d : dirs_) {
    if (version_ == CgroupVersion::kV2 || d.controller == controller) return d.path;
  }
  return {};
}

fs::path Cgroup::procs_dir() const { return dirs_.front().path; }  // v1's freezer, v2's one

std::vector<std::string> Cgroup::join_files() const {
  std::vector<std::string> out;
  out.reserve(dirs_.size());
  // v1's `tasks` moves the writing thread alone, which a single-threaded process is; v2 has
  // no `tasks`, and cgroup.procs moves the process.
  for (const Dir& d : dirs_)
    out.push_back(d.path / (version_ == CgroupVersion::kV2 ? "cgroup.procs" : "tasks"));
  return out;
}

Status Cgroup::add(pid_t pid) const {
  for (const Dir& d : dirs_) LOOM_TRY(files::write(d.path / "cgroup.procs", std::to_string(pid)));
  return {};
}

std::vector<pid_t> Cgroup::processes() const {
  std::vector<pid_t> pids;
  std::ifstream in(procs_dir() / "cgroup.procs");
  for (pid_t pid; in >> pid;) pids.push_back(pid);
  return pids;
}

void Cgroup::signal_all(int signal) const {
  for (pid_t pid : processes()) ::kill(pid, signal);
}

Status Cgroup::kill_all() const {
  if (processes().empty()) return {};  // the common case, a task that ended whole
  const fs::path dir = procs_dir();
  const auto deadline = Clock::now() + kKillTimeout;
  if (version_ == CgroupVersion::kV2) {
    if (fs::exists(dir / "cgroup.kill")) {
      LOOM_TRY(files::write(dir / "cgroup.kill", "1"));
    } else {  // before Linux 5.14
      LOOM_TRY(files::write(dir / "cgroup.freeze", "1"));
      (void)wait_for(dir / "cgroup.events", "frozen", 1, deadline);
      for (pid_t pid : processes()) ::kill(pid, SIGKILL);
      LOOM_TRY(files::write(dir / "cgroup.freeze", "0"));  // killed processes die once thawed
    }
    if (wait_for(dir / "cgroup.events", "populated", 0, deadline)) return {};
  } else {
    LOOM_TRY(files::write(dir / "freezer.state", "FROZEN"));
    for (int i = 0; i < 100 && files::read(dir / "freezer.state") != "FROZEN"; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // v1 freezes asynchronously
    }
    for (pid_t pid : processes()) ::kill(pid, SIGKILL);
    LOOM_TRY(files::write(dir / "freezer.state", "THAWED"));
    // v1 has no event for a cgroup that empties: its list is read until it is.
    while (Clock::now() < deadline) {
      const std::vector<pid_t> left = processes();
      if (left.empty()) return {};
      for (pid_t pid : left) ::kill(pid, SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  return make_error(ErrorCode::kDeadlineExceeded,
                    fmt::format("processes of {} survived SIGKILL for 5 s", dir.string()));
}

bool Cgroup::out_of_memory() const {
  const fs::path memory = dir("memory");
  if (memory.empty()) return false;
  const auto kills = version_ == CgroupVersion::kV2
                         ? files::keyed(memory / "memory.events", "oom_kill")
                         : files::keyed(memory / "memory.oom_control", "oom_kill");
  return kills.value_or(0) > 0;
}

CgroupUsage Cgroup::usage() const {
  CgroupUsage usage;
  auto number = [](const fs::path& file) -> std::optional<std::uint64_t> {
    const std::string text = files::read(file);
    if (text.empty() || !std::ranges::all_of(text, [](char c) { return c >= '0' && c <= '9'; }))
      return std::nullopt;
    return std::stoull(text);
  };
  if (version_ == CgroupVersion::kV2) {
    const fs::path d = dirs_.front().path;
    usage.cpu_seconds =
        static_cast<double>(files::keyed(d / "cpu.stat", "usage_usec").value_or(0)) / 1e6;
    usage.memory_peak_bytes = number(d / "memory.peak");  // Linux 5.19 and later
  } else {
    if (const fs::path cpuacct = dir("cpuacct"); !cpuacct.empty())
      usage.cpu_seconds = static_cast<double>(number(cpuacct / "cpuacct.usage").value_or(0)) / 1e9;
    if (const fs::path memory = dir("memory"); !memory.empty())
      usage.memory_peak_bytes = number(memory / "memory.max_usage_in_bytes");
  }
  return usage;
}

}  // namespace loom::agent
