#include "loom/agent/task.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "loom/common/errno_text.hpp"
#include "loom/common/task_channel.hpp"

namespace loom::agent {

namespace {

// A process's start time in clock ticks since boot (/proc/PID/stat, field 22); 0 if gone.
std::uint64_t start_time(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t end_of_name = text.rfind(')');  // the name may hold spaces and parentheses
  if (end_of_name == std::string::npos) return 0;
  std::istringstream fields(text.substr(end_of_name + 2));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {
    if (i == 22) return std::stoull(field);
  }
  return 0;
}

}  // namespace

Result<Task> Task::start(const CgroupTree& cgroups, const TaskSpec& spec) {
  if (spec.argv.empty()) return make_error(ErrorCode::kInvalidArgument, "the task has no command");
  if (spec.uid == 0 && !spec.allow_root) {
    return make_error(ErrorCode::kPermissionDenied,
                      "jobs as root are refused (agent.allow_root_jobs is false)");
  }
  if (spec.status_path.empty())
    return make_error(ErrorCode::kInvalidArgument, "the task has no status file");
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buffer(16384);
  if (::getpwuid_r(spec.uid, &pw, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return make_error(ErrorCode::kNotFound,
                      fmt::format("no user with uid {} on this node", spec.uid));
  }

  CgroupLimits limits;
  if (spec.binding) {
    limits.cpus = spec.binding->applied_pus;
    limits.numa = spec.binding->applied_numa;
  }
  limits.memory_bytes = spec.memory_limit;
  limits.swap_bytes = spec.swap_limit;
  limits.pids_max = spec.pids_max;
  Cgroup cgroup = LOOM_TRY(cgroups.create(spec.cgroup_name, limits));

  std::vector<std::string> env;
  env.reserve(spec.environment.size());
  for (const auto& [key, value] : spec.environment) env.push_back(fmt::format("{}={}", key, value));
  nlohmann::json keeper_spec;
  keeper_spec["join_files"] = cgroup.join_files();
  keeper_spec["cpus"] = spec.binding ? spec.binding->applied_pus : std::vector<unsigned>{};
  keeper_spec["numa"] = spec.binding && spec.binding->applied_numa
                            ? nlohmann::json(*spec.binding->applied_numa)
                            : nlohmann::json(nullptr);
  keeper_spec["user"] = pw.pw_name;
  keeper_spec["uid"] = spec.uid;
  keeper_spec["gid"] = pw.pw_gid;
  keeper_spec["chdir"] = spec.chdir;
  keeper_spec["umask"] = spec.umask & 0777;
  keeper_spec["stdout"] = spec.stdout_path;
  keeper_spec["stderr"] = spec.stderr_path;
  keeper_spec["argv"] = spec.argv;
  keeper_spec["env"] = env;
  keeper_spec["path"] = spec.environment.contains("PATH") ? spec.environment.at("PATH")
                                                          : "/usr/local/bin:/usr/bin:/bin";
  keeper_spec["status"] = spec.status_path.string();
  keeper_spec["channel"] = spec.channel >= 0;
  std::error_code ignored;
  std::filesystem::remove(spec.status_path, ignored);

  // The keeper is spawned, not forked: no copy of this (large, multithreaded) process.
  Pipe input = Pipe::open();
  Pipe report = input ? Pipe::open() : Pipe{};
  if (!input || !report) {
    return make_error(ErrorCode::kResourceExhausted,
                      fmt::format("pipe: {}", loom::errno_text(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, input.read_end.get(), 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, report.write_end.get(), 3);
  if (spec.channel >= 0)  // glibc's dup2 of a descriptor onto itself clears close-on-exec
    posix_spawn_file_actions_adddup2(&actions, spec.channel, kTaskChannelFd);
  // 0-3 (and the channel) only: the agent's other descriptors (libfabric's sockets and epoll
  // among them, which libfabric opens without close-on-exec) never reach the keeper, nor so
  // a user's task.
  posix_spawn_file_actions_addclosefrom_np(&actions, spec.channel >= 0 ? kTaskChannelFd + 1 : 4);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes,
                             &none);  // the agent blocks the signals it waits for; tasks must not
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  const std::string program = spec.keeper.string();
  const std::array<char*, 2> argv{const_cast<char*>(program.c_str()), nullptr};
  const std::array<char*, 1> no_env{nullptr};
  pid_t keeper = -1;
  const int spawned =
      ::posix_spawn(&keeper, program.c_str(), &actions, &attributes, argv.data(), no_env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  input.read_end.reset();
  report.write_end.reset();
  if (spawned != 0) {
    return make_error(ErrorCode::kInternal,
                      fmt::format("cannot start {}: {}", program, loom::errno_text(spawned)));
  }
  // CBOR, not JSON: the argv, environment and paths are the user's bytes, not always UTF-8.
  const std::vector<std::uint8_t> text = nlohmann::json::to_cbor(keeper_spec);
  for (std::size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(input.write_end.get(), text.data() + done, text.size() - done);
    if (n <= 0) break;  // the keeper died: its status says so below
    done += static_cast<std::size_t>(n);
  }
  input.write_end.reset();  // the keeper reads its spec to the end
  TaskRecord record{spec.cgroup_name, keeper, start_time(keeper), spec.status_path};
  Task task(std::move(record), std::move(cgroup), true);
  std::string failure;
  std::array<char, 512> chunk{};
  for (ssize_t n; (n = ::read(report.read_end.get(), chunk.data(), chunk.size())) > 0;)
    failure.append(chunk.data(), static_cast<std::size_t>(n));
  if (!failure.empty()) {
    (void)task.wait();  // reaps the keeper; ~Task has nothing left to do
    std::filesystem::remove(spec.status_path, ignored);
    return make_error(ErrorCode::kFailedPrecondition, failure);
  }
  return task;
}

Result<Task> Task::adopt(const CgroupTree& cgroups, const TaskRecord& record) {
  Cgroup cgroup = LOOM_TRY(cgroups.open(record.cgroup_name));
  const bool ended = std::filesystem::exists(record.status_path);
  if (!ended && (record.keeper_start == 0 || start_time(record.keeper) != record.keeper_start)) {
    (void)cgroup.kill_all();
    return make_error(ErrorCode::kDataLoss,
                      fmt::format("the keeper of {} (pid {}) is gone and wrote no status",
                                  record.cgroup_name, record.keeper));
  }
  return Task(record, std::move(cgroup), false);
}

std::optional<UniqueFd> Task::exit_fd() const {
  if (done_) return std::nullopt;
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, record_.keeper, 0)));
  if (!fd) return std::nullopt;  // gone: an adopted task's keeper, which wrote its status
  // This process's child cannot be another process until reaped; an adopted keeper's PID
  // may have been reused since, which its start time tells.
  if (!own_child_ && start_time(record_.keeper) != record_.keeper_start) return std::nullopt;
  return fd;
}

Result<ExitStatus> Task::wait() {
  if (own_child_) {
    while (::waitpid(record_.keeper, nullptr, 0) < 0) {
      if (errno != EINTR)
        return make_error(ErrorCode::kInternal,
                          fmt::format("waitpid {}: {}", record_.keeper, loom::errno_text(errno)));
    }
  } else if (!std::filesystem::exists(record_.status_path)) {
    // Another agent's child: a pidfd tells when it exits.
    const UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, record_.keeper, 0)));
    if (fd) {
      pollfd p{fd.get(), POLLIN, 0};
      while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
      }
    }
  }
  done_ = true;
  LOOM_TRY(cgroup_.kill_all());  // what the task left running goes with it
  std::optional<ExitStatus> written = status_written();
  if (!written) {
    return make_error(ErrorCode::kDataLoss,
                      fmt::format("the keeper of {} wrote no exit status", record_.cgroup_name));
  }
  std::error_code ignored;
  std::filesystem::remove(record_.status_path, ignored);
  ExitStatus exit = *written;
  exit.out_of_memory = cgroup_.out_of_memory();
  exit.usage = cgroup_.usage();
  return exit;
}

std::optional<ExitStatus> Task::status_written() const {
  std::ifstream in(record_.status_path);
  int status = 0;
  if (!(in >> status)) return std::nullopt;
  ExitStatus exit;
  if (WIFSIGNALED(status)) {
    exit.signal = WTERMSIG(status);
    exit.exit_code = 128 + *exit.signal;
  } else {
    exit.exit_code = WEXITSTATUS(status);
  }
  return exit;
}

// Only std::bad_alloc can escape, and then terminate() is right.
// NOLINTNEXTLINE(bugprone-exception-escape)
Task::~Task() {
  if (done_) return;
  (void)cgroup_.kill_all();
  (void)wait();
}

}  // namespace loom::agent
