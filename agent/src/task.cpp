#include "loom/agent/task.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>

namespace loom::agent {

namespace {

// What a child that failed before exec tells its parent, through a close-on-exec pipe:
// nothing arrives when exec succeeded.
[[noreturn]] void child_fail(int fd, const std::string& message) {
  (void)::write(fd, message.data(), message.size());
  ::_exit(127);
}

// n in decimal, without allocating (the keeper may call only async-signal-safe code).
std::size_t decimal(long n, char (&out)[16]) {
  char digits[16];
  std::size_t count = 0;
  const bool negative = n < 0;
  unsigned long v = negative ? static_cast<unsigned long>(-n) : static_cast<unsigned long>(n);
  do {
    digits[count++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && count < sizeof(digits));
  std::size_t length = 0;
  if (negative) out[length++] = '-';
  while (count > 0 && length < sizeof(out)) out[length++] = digits[--count];
  return length;
}

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

Result<Task> Task::start(const TaskSpec& spec, const hwtopo::Binder& binder) {
  if (spec.argv.empty()) return make_error(ErrorCode::kInvalidArgument, "the task has no command");
  if (spec.uid == 0 && !spec.allow_root) {
    return make_error(ErrorCode::kPermissionDenied, "jobs as root are refused (agent.allow_root_jobs is false)");
  }
  if (spec.status_path.empty()) return make_error(ErrorCode::kInvalidArgument, "the task has no status file");
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buffer(16384);
  if (::getpwuid_r(spec.uid, &pw, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return make_error(ErrorCode::kNotFound, fmt::format("no user with uid {} on this node", spec.uid));
  }
  const std::string user = pw.pw_name;
  const gid_t gid = pw.pw_gid;

  CgroupLimits limits;
  if (spec.binding) {
    limits.cpus = spec.binding->applied_pus;
    limits.numa = spec.binding->applied_numa;
  }
  limits.memory_bytes = spec.memory_limit;
  Cgroup cgroup = LOOM_TRY(Cgroup::create(spec.cgroup_name, limits));

  // Everything the keeper and the task need is built before fork: after it, in a copy of
  // a multithreaded process, only async-signal-safe calls are allowed.
  std::vector<std::string> env_strings;
  for (const auto& [key, value] : spec.environment) env_strings.push_back(key + "=" + value);
  std::vector<char*> envp, argv;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = spec.argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string path_env = spec.environment.contains("PATH") ? spec.environment.at("PATH") : "/usr/local/bin:/usr/bin:/bin";
  std::vector<std::string> tasks;
  for (const std::string& path : cgroup.paths()) tasks.push_back(path + "/tasks");
  const std::string status_path = spec.status_path.string();
  const std::string status_temp = status_path + ".tmp";
  std::error_code ignored;
  std::filesystem::remove(spec.status_path, ignored);

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    return make_error(ErrorCode::kResourceExhausted, fmt::format("pipe: {}", std::strerror(errno)));
  }
  const pid_t keeper = ::fork();
  if (keeper < 0) return make_error(ErrorCode::kResourceExhausted, fmt::format("fork: {}", std::strerror(errno)));
  if (keeper == 0) {
    // The keeper: its own session, so that signals for the agent's terminal or process
    // group do not reach it; it stays in the agent's cgroup, out of reach of the task's kill.
    ::setsid();
    ::prctl(PR_SET_NAME, "loom-keeper");  // what ps and pgrep call it; its command line stays loomd's
    const pid_t task = ::fork();
    if (task < 0) ::_exit(127);
    if (task == 0) {
      ::close(report[0]);
      // The task joins its cgroups before anything of its own runs. It moves itself, a
      // single thread, by writing 0 to `tasks`: the kernel then skips the global lock (and
      // its RCU grace period, ~10 ms here) that moving a process by pid through
      // cgroup.procs takes. Its children inherit the cgroups.
      for (const std::string& file : tasks) {
        const int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ::write(fd, "0", 1) != 1) child_fail(report[1], fmt::format("cannot join the cgroup {}", file));
        ::close(fd);
      }
      // The agent blocks the signals it waits for; a task starts with none blocked, or it
      // could never be stopped with SIGTERM.
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      if (spec.binding) {
        if (auto bound = binder.apply(*spec.binding); !bound) child_fail(report[1], bound.error().to_string());
      }
      if (::setgid(gid) != 0 || ::initgroups(user.c_str(), gid) != 0 || ::setuid(spec.uid) != 0) {
        child_fail(report[1], fmt::format("cannot become {}: {}", user, std::strerror(errno)));
      }
      // As the user from here on: files and directories are the user's to open.
      if (::chdir(spec.chdir.c_str()) != 0) {
        child_fail(report[1], fmt::format("cannot enter {}: {}", spec.chdir, std::strerror(errno)));
      }
      const int in = ::open("/dev/null", O_RDONLY);
      const int out = ::open(spec.stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0644);
      if (out < 0) child_fail(report[1], fmt::format("cannot open {}: {}", spec.stdout_path, std::strerror(errno)));
      const int err = spec.stderr_path == spec.stdout_path
                          ? out
                          : ::open(spec.stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0644);
      if (err < 0) child_fail(report[1], fmt::format("cannot open {}: {}", spec.stderr_path, std::strerror(errno)));
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(err, 2);
      ::setenv("PATH", path_env.c_str(), 1);  // execvpe searches the task's PATH
      ::execvpe(argv[0], argv.data(), envp.data());
      child_fail(report[1], fmt::format("cannot run {}: {}", spec.argv[0], std::strerror(errno)));
    }
    ::close(report[0]);
    ::close(report[1]);  // the task holds its own copy until exec
    int status = 0;
    while (::waitpid(task, &status, 0) < 0) {
      if (errno != EINTR) ::_exit(127);
    }
    // Written whole, then renamed: an agent reading it sees all or nothing.
    char status_text[16];
    const std::size_t status_length = decimal(status, status_text);
    const int fd = ::open(status_temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) ::_exit(127);
    (void)::write(fd, status_text, status_length);
    ::fsync(fd);
    ::close(fd);
    ::rename(status_temp.c_str(), status_path.c_str());
    ::_exit(0);
  }
  ::close(report[1]);
  TaskRecord record{spec.cgroup_name, keeper, start_time(keeper), spec.status_path};
  Task task(std::move(record), std::move(cgroup), true);
  std::string failure;
  char chunk[512];
  for (ssize_t n; (n = ::read(report[0], chunk, sizeof(chunk))) > 0;) failure.append(chunk, static_cast<std::size_t>(n));
  ::close(report[0]);
  if (!failure.empty()) {
    (void)task.wait();  // reaps the keeper; ~Task has nothing left to do
    std::filesystem::remove(spec.status_path, ignored);
    return make_error(ErrorCode::kFailedPrecondition, failure);
  }
  return task;
}

Result<Task> Task::adopt(const TaskRecord& record) {
  Cgroup cgroup = LOOM_TRY(Cgroup::open(record.cgroup_name));
  const bool ended = std::filesystem::exists(record.status_path);
  if (!ended && (record.keeper_start == 0 || start_time(record.keeper) != record.keeper_start)) {
    (void)cgroup.kill_all();
    return make_error(ErrorCode::kDataLoss,
                      fmt::format("the keeper of {} (pid {}) is gone and wrote no status", record.cgroup_name, record.keeper));
  }
  return Task(record, std::move(cgroup), false);
}

Result<ExitStatus> Task::wait() {
  if (own_child_) {
    while (::waitpid(record_.keeper, nullptr, 0) < 0) {
      if (errno != EINTR) return make_error(ErrorCode::kInternal, fmt::format("waitpid {}: {}", record_.keeper, std::strerror(errno)));
    }
  } else if (!std::filesystem::exists(record_.status_path)) {
    // Another agent's child: a pidfd tells when it exits.
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, record_.keeper, 0));
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
      }
      ::close(fd);
    }
  }
  done_ = true;
  LOOM_TRY(cgroup_.kill_all());  // what the task left running goes with it
  std::ifstream in(record_.status_path);
  int status = 0;
  if (!(in >> status)) {
    return make_error(ErrorCode::kDataLoss, fmt::format("the keeper of {} wrote no exit status", record_.cgroup_name));
  }
  std::error_code ignored;
  std::filesystem::remove(record_.status_path, ignored);
  ExitStatus exit;
  if (WIFSIGNALED(status)) {
    exit.signal = WTERMSIG(status);
    exit.exit_code = 128 + *exit.signal;
  } else {
    exit.exit_code = WEXITSTATUS(status);
  }
  exit.out_of_memory = cgroup_.out_of_memory();
  return exit;
}

Task::~Task() {
  if (done_) return;
  (void)cgroup_.kill_all();
  (void)wait();
}

}  // namespace loom::agent
