#include "skeleton_reader.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <poll.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <csignal>
#include <cstring>
#include <vector>

#include "loom/burstbuffer/identity.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/common/exec_args.hpp"
#include "loom/common/unique_fd.hpp"

extern char** environ;

namespace loom::burstbuffer {

namespace {

Error system_error(std::string_view what, int e) {
  return {ErrorCode::kInternal, fmt::format("{}: {}", what, loom::errno_text(e))};
}

// A copy of `fd` numbered 10 or more: the spawn's dup2s to 1-4 then never overwrite a
// descriptor that a later dup2 still reads.
Result<UniqueFd> high_copy(int fd) {
  UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 10));
  if (!copy) return std::unexpected(system_error("fcntl(F_DUPFD_CLOEXEC)", errno));
  return copy;
}

std::string read_whole(int fd, std::size_t most) {
  std::string text;
  std::array<char, 65536> chunk{};
  for (off_t at = 0; text.size() < most;) {
    const ssize_t n = ::pread(fd, chunk.data(), chunk.size(), at);
    if (n <= 0) break;
    text.append(chunk.data(), static_cast<std::size_t>(n));
    at += n;
  }
  if (text.size() > most) text.resize(most);
  return text;
}

// The environment HDF5 reads (filter plugins, file locking), and nothing else of the agent's.
std::vector<std::string> hdf5_environment() {
  std::vector<std::string> kept;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "HDF5_", 5) == 0) kept.emplace_back(*e);
  }
  return kept;
}

// Waits for `pid` for at most `timeout`, then kills it; its wait status.
int wait_for(pid_t pid, std::chrono::seconds timeout, bool& timed_out) {
  timed_out = false;
  if (UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))); pidfd) {
    pollfd p{pidfd.get(), POLLIN, 0};
    int ready = 0;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    do {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      ready = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
    } while (ready < 0 && errno == EINTR);
    if (ready == 0) {
      timed_out = true;
      ::kill(pid, SIGKILL);
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Runs loom-h5skeleton with `args` (after the program) and, as its descriptors, `input` as
// 0 (-1: /dev/null), a memfd for its answer as 1 and one for its errors as 2, and `files` as
// 3 and 4 (-1: none), and nothing else; its answer, or the error it reported. `doing` says
// what it does, for the errors that it could not say itself.
Result<v1::DescribeReply> run(const std::filesystem::path& program, std::vector<std::string> args,
                              int input, std::array<int, 2> files, std::string_view doing) {
  UniqueFd answer(::memfd_create("loom-h5skeleton", MFD_CLOEXEC));
  UniqueFd errors(::memfd_create("loom-h5skeleton-errors", MFD_CLOEXEC));
  if (!answer || !errors) return std::unexpected(system_error("memfd_create", errno));
  // Descriptor i + 1 of the program: its answer, errors, then the files.
  std::array<UniqueFd, 4> fds;
  fds[0] = LOOM_TRY(high_copy(answer.get()));
  fds[1] = LOOM_TRY(high_copy(errors.get()));
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (files[i] >= 0) fds[i + 2] = LOOM_TRY(high_copy(files[i]));
  }
  UniqueFd stdin_copy;
  if (input >= 0) stdin_copy = LOOM_TRY(high_copy(input));

  args.insert(args.begin(), program.string());
  const std::vector<std::string> env = hdf5_environment();
  const std::vector<char*> argv = exec_args(args), envp = exec_args(env);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdin_copy)
    posix_spawn_file_actions_adddup2(&actions, stdin_copy.get(), 0);
  else
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  for (int i = 0; i < 4; ++i) {
    if (fds[static_cast<std::size_t>(i)]) {
      posix_spawn_file_actions_adddup2(&actions, fds[static_cast<std::size_t>(i)].get(), i + 1);
    } else {  // closed, whatever this process has there: made valid first, as close must find it
      posix_spawn_file_actions_adddup2(&actions, fds[0].get(), i + 1);
      posix_spawn_file_actions_addclose(&actions, i + 1);
    }
  }
  posix_spawn_file_actions_addclosefrom_np(&actions, 5);  // nothing else of the agent's
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  const int spawned =
      ::posix_spawn(&pid, program.c_str(), &actions, &attributes, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (spawned != 0) {
    return make_error(ErrorCode::kInternal, fmt::format("cannot start {}: {}", program.string(),
                                                        loom::errno_text(spawned)));
  }
  bool timed_out = false;
  const int status = wait_for(pid, SkeletonLimits::kTimeout, timed_out);
  if (timed_out) {
    return make_error(ErrorCode::kDeadlineExceeded, fmt::format("{} took longer than {} s", doing,
                                                                SkeletonLimits::kTimeout.count()));
  }
  if (WIFSIGNALED(status)) {
    const int signal = WTERMSIG(status);
    return make_error(
        ErrorCode::kInvalidArgument,
        fmt::format(
            "{} failed ({}{})", doing, sigabbrev_np(signal) != nullptr ? "SIG" : "signal ",
            sigabbrev_np(signal) != nullptr ? sigabbrev_np(signal) : std::to_string(signal)));
  }
  const int code = WEXITSTATUS(status);
  if (code != 0) {
    std::string message = read_whole(errors.get(), 4096);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    const std::optional<ErrorCode> kind = error_code_of(code);
    if (!kind || message.empty()) {
      return make_error(ErrorCode::kInternal,
                        fmt::format("{} exited with status {}{}{}", program.string(), code,
                                    message.empty() ? "" : ": ", message));
    }
    return make_error(*kind, std::move(message));
  }
  v1::DescribeReply reply;
  if (!reply.ParseFromString(read_whole(answer.get(), SkeletonLimits::kFileSize))) {
    return make_error(ErrorCode::kInternal,
                      fmt::format("{} wrote an answer that does not parse", program.string()));
  }
  return reply;
}

}  // namespace

Result<v1::DescribeReply> describe_as_user(const std::filesystem::path& program, uid_t uid,
                                           gid_t gid, int source, int skeleton,
                                           std::span<const std::string> datasets) {
  // loom-h5skeleton UID GID GROUPS DATASET...: groups are looked up here, where the name
  // service may be asked, not in the program after it left root.
  std::vector<std::string> args{std::to_string(uid), std::to_string(gid),
                                fmt::format("{}", fmt::join(user_groups(uid, gid), ","))};
  args.insert(args.end(), datasets.begin(), datasets.end());
  return run(program, std::move(args), -1, {source, skeleton}, "reading its HDF5 structure");
}

Result<SkeletonPlan> place_as_owner(const std::filesystem::path& program, int skeleton,
                                    const SkeletonPlan& plan) {
  struct stat owner {};
  if (::fstat(skeleton, &owner) != 0) return std::unexpected(system_error("fstat", errno));
  UniqueFd input(::memfd_create("loom-h5skeleton-plan", MFD_CLOEXEC));
  if (!input) return std::unexpected(system_error("memfd_create", errno));
  if (!to_message(plan).SerializeToFileDescriptor(input.get()) ||
      ::lseek(input.get(), 0, SEEK_SET) != 0)
    return std::unexpected(system_error("writing the plan", errno));
  // loom-h5skeleton --place UID GID: as the file's owner, with no groups.
  return from_message(
      LOOM_TRY(run(program, {"--place", std::to_string(owner.st_uid), std::to_string(owner.st_gid)},
                   input.get(), {-1, skeleton}, "placing its datasets in the skeleton")));
}

}  // namespace loom::burstbuffer
