// loom-keeper: starts one task and keeps watch over it for the agent. loomd spawns it
// (posix_spawn: no copy of the agent's address space) with the task's spec on stdin (CBOR:
// its argv, environment and paths are the user's bytes, which JSON, UTF-8 only, could not
// carry) and a pipe on fd 3; the keeper forks the task, which joins its cgroups, takes its
// binding, becomes the user and execs — or writes why it could not on fd 3. The keeper
// waits for the task and writes its wait status to the spec's status file (whole, then
// renamed). It outlives the agent, so that an agent that restarts learns how its tasks
// ended. A small program of its own, so that forking it and the task costs little.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "loom/common/errno_text.hpp"
#include "loom/common/exec_args.hpp"
#include "loom/common/task_channel.hpp"
#include "loom/hwtopo/apply_binding.hpp"

namespace {

namespace hwtopo = loom::hwtopo;

constexpr int kReport = 3;                      // the agent reads what went wrong before exec here
constexpr int kChannel = loom::kTaskChannelFd;  // a task's channel to the agent, if it has one

[[noreturn]] void fail(const std::string& message) {
  (void)::write(kReport, message.data(), message.size());
  ::_exit(127);
}

std::string what(const std::string& action) { return action + ": " + loom::errno_text(errno); }

// Closes every descriptor from `first` up, or with `at_exec` marks it close-on-exec.
// close_range does it in one call where the kernel has it (5.9; CLOSE_RANGE_CLOEXEC from
// 5.11); an older kernel (RHEL 8's 4.18) gets each descriptor /proc/self/fd lists.
bool close_from(int first, bool at_exec) {
  if (::close_range(static_cast<unsigned>(first), ~0U, at_exec ? CLOSE_RANGE_CLOEXEC : 0) == 0)
    return true;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return false;
  std::vector<int> fds;
  for (const dirent* entry; (entry = ::readdir(dir)) != nullptr;) {
    const int fd = std::atoi(entry->d_name);
    if (entry->d_name[0] != '.' && fd >= first && fd != ::dirfd(dir)) fds.push_back(fd);
  }
  ::closedir(dir);
  for (int fd : fds) at_exec ? ::fcntl(fd, F_SETFD, FD_CLOEXEC) : ::close(fd);
  return true;
}

// In the task: everything between fork and exec, in order. Any failure is reported and ends
// the task before it runs anything of the user's.
[[noreturn]] void run_task(const nlohmann::json& spec) {
  // Join the cgroups first, writing 0 (itself) to each file named: v1's `tasks`, as a single
  // thread, which skips the global lock (and its RCU grace period, ~10 ms) that moving a
  // process by pid takes; v2's cgroup.procs.
  for (const std::string file : spec["join_files"]) {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, "0", 1) != 1) fail(what("cannot join the cgroup " + file));
    (void)::close(fd);
  }
  const std::vector<unsigned> pus = spec["cpus"];
  const std::optional<unsigned> numa =
      spec["numa"].is_null() ? std::nullopt : std::optional<unsigned>(spec["numa"].get<unsigned>());
  if (const std::string failed = hwtopo::apply_binding(pus, numa); !failed.empty()) fail(failed);
  const std::string user = spec["user"];
  const uid_t uid = spec["uid"];
  const gid_t gid = spec["gid"];
  if (::setgid(gid) != 0 || ::initgroups(user.c_str(), gid) != 0 || ::setuid(uid) != 0)
    fail(what("cannot become " + user));
  // As the user from here on: files and directories are the user's to open, with the modes
  // the user's own umask gives them (the task inherits it too).
  ::umask(spec["umask"].get<mode_t>());
  const std::string chdir = spec["chdir"];
  if (::chdir(chdir.c_str()) != 0) fail(what("cannot enter " + chdir));
  const std::string out_path = spec["stdout"], err_path = spec["stderr"];
  const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int out =
      ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (out < 0) fail(what("cannot open " + out_path));
  const int err =
      err_path == out_path
          ? out
          : ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (err < 0) fail(what("cannot open " + err_path));
  ::dup2(in, 0);
  ::dup2(out, 1);
  ::dup2(err, 2);
  // The task gets 0-2 (and its channel) and nothing else, whatever this process was handed:
  // every other descriptor closes at exec, the report pipe too (the agent then sees EOF, no
  // message).
  if (!close_from(3, true)) fail(what("marking descriptors close-on-exec"));
  if (spec.value("channel", false) && ::fcntl(kChannel, F_SETFD, 0) != 0)
    fail(what("handing on the agent's channel"));
  std::vector<std::string> argv_strings = spec["argv"], env_strings = spec["env"];
  const std::vector<char*> argv = loom::exec_args(argv_strings),
                           envp = loom::exec_args(env_strings);
  const std::string path = spec["path"];
  ::setenv("PATH", path.c_str(), 1);  // execvpe searches the task's PATH
  ::execvpe(argv[0], argv.data(), envp.data());
  fail(what("cannot run " + argv_strings.at(0)));
}

}  // namespace

constexpr const char* kUsage =
    "usage: loom-keeper < TASK.cbor 3> REPORT [4<> CHANNEL]\n"
    "loomd's keeper of one task, not run by hand: reads the task's spec on stdin, forks the task\n"
    "(cgroups, binding, the user's identity, exec; why it could not, written to fd 3), waits for "
    "it\n"
    "and writes its wait status to the spec's status file. It outlives loomd.\n";

// Errors are Results; an exception that escapes is a bug, and terminate()'s core dump is
// how it should be seen.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  if (argc > 1) {
    const bool help = std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h";
    (void)std::fputs(kUsage, help ? stdout : stderr);
    return help ? 0 : 2;
  }
  const std::string text{std::istreambuf_iterator<char>(std::cin.rdbuf()),
                         std::istreambuf_iterator<char>()};
  const nlohmann::json spec = nlohmann::json::from_cbor(text, true, false);
  if (spec.is_discarded()) fail("loom-keeper: the task's spec does not parse");
  // Nothing of the agent's but the report pipe and a channel: the agent spawns the keeper
  // with only those and 0, and whatever else came (a descriptor the agent failed to mark
  // close-on-exec) is not held for the task's whole life.
  const bool channel = spec.value("channel", false);
  (void)close_from(channel ? kChannel + 1 : kReport + 1, false);
  // A session of its own: signals for the agent's terminal or process group do not reach
  // the keeper or its task.
  ::setsid();
  const pid_t task = ::fork();
  if (task < 0) fail(what("fork"));
  if (task == 0) run_task(spec);
  ::close(kReport);
  if (channel) ::close(kChannel);  // the task's copy alone: its end is the agent's EOF
  int status = 0;
  while (::waitpid(task, &status, 0) < 0) {
    if (errno != EINTR) return 127;
  }
  const std::string status_path = spec["status"];
  const std::string temp = status_path + ".tmp";
  const std::string text_status = std::to_string(status);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return 127;
  (void)::write(fd, text_status.data(), text_status.size());
  ::fsync(fd);
  (void)::close(fd);
  return ::rename(temp.c_str(), status_path.c_str()) == 0 ? 0 : 127;
}
