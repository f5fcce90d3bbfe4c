#include "loom/agent/task.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>

namespace loom::agent {

namespace {

// What a child that failed before exec tells its parent, through a close-on-exec pipe:
// nothing arrives when exec succeeded.
[[noreturn]] void child_fail(int fd, const std::string& message) {
  (void)::write(fd, message.data(), message.size());
  ::_exit(127);
}

}  // namespace

Result<Task> Task::start(const TaskSpec& spec, const hwtopo::Binder& binder) {
  if (spec.argv.empty()) return make_error(ErrorCode::kInvalidArgument, "the task has no command");
  if (spec.uid == 0 && !spec.allow_root) {
    return make_error(ErrorCode::kPermissionDenied, "jobs as root are refused (agent.allow_root_jobs is false)");
  }
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

  // Everything the child needs is built before fork.
  std::vector<std::string> env_strings;
  for (const auto& [key, value] : spec.environment) env_strings.push_back(key + "=" + value);
  std::vector<char*> envp, argv;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = spec.argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string path_env = spec.environment.contains("PATH") ? spec.environment.at("PATH") : "/usr/local/bin:/usr/bin:/bin";

  int go[2], report[2];
  if (::pipe2(go, O_CLOEXEC) != 0 || ::pipe2(report, O_CLOEXEC) != 0) {
    return make_error(ErrorCode::kResourceExhausted, fmt::format("pipe: {}", std::strerror(errno)));
  }
  const pid_t pid = ::fork();
  if (pid < 0) return make_error(ErrorCode::kResourceExhausted, fmt::format("fork: {}", std::strerror(errno)));
  if (pid == 0) {
    ::close(go[1]);
    ::close(report[0]);
    // The agent blocks the signals it waits for; a task starts with none blocked, or it
    // could never be stopped with SIGTERM.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::setsid();
    char byte;
    if (::read(go[0], &byte, 1) != 1) ::_exit(127);  // the parent gave up
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
  ::close(go[0]);
  ::close(report[1]);
  Task task(pid, std::move(cgroup));
  if (Status joined = task.cgroup_.add(pid); !joined) {
    ::close(go[1]);
    ::close(report[0]);
    return std::unexpected(std::move(joined).error());  // ~Task kills and reaps the child
  }
  (void)::write(go[1], "g", 1);
  ::close(go[1]);
  std::string failure;
  char chunk[512];
  for (ssize_t n; (n = ::read(report[0], chunk, sizeof(chunk))) > 0;) failure.append(chunk, static_cast<std::size_t>(n));
  ::close(report[0]);
  if (!failure.empty()) return make_error(ErrorCode::kFailedPrecondition, failure);
  return task;
}

Result<ExitStatus> Task::wait() {
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) return make_error(ErrorCode::kInternal, fmt::format("waitpid {}: {}", pid_, std::strerror(errno)));
  }
  reaped_ = true;
  LOOM_TRY(cgroup_.kill_all());  // what the task left running goes with it
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
  if (pid_ <= 0 || reaped_) return;
  (void)cgroup_.kill_all();
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace loom::agent
