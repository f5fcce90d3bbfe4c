#include "run_command.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>

#include "loom/common/errno_text.hpp"
#include "loom/common/exec_args.hpp"
#include "loom/common/unique_fd.hpp"

extern char** environ;

namespace loom::cli {

Status run_command(const std::vector<std::string>& argv) {
  Pipe pipe = Pipe::open();
  if (!pipe)
    return make_error(ErrorCode::kInternal, "pipe: " + std::string(loom::errno_text(errno)));
  const UniqueFd read_end = std::move(pipe.read_end);
  UniqueFd write_end = std::move(pipe.write_end);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  const std::vector<char*> args = exec_args(argv);
  pid_t pid = -1;
  const int error = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  write_end.reset();  // the child's copy is the only one left: EOF when it exits
  std::string err;
  std::array<char, 512> buffer{};
  for (ssize_t n; error == 0 && (n = ::read(read_end.get(), buffer.data(), buffer.size())) > 0;)
    err.append(buffer.data(), static_cast<std::size_t>(n));
  const std::string line = fmt::format("{}", fmt::join(argv, " "));
  if (error != 0)
    return make_error(ErrorCode::kNotFound,
                      fmt::format("cannot run {}: {}", line, loom::errno_text(error)));
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return make_error(ErrorCode::kInternal,
                      fmt::format("{}: {}", line, err.empty() ? "failed" : err));
  }
  return {};
}

}  // namespace loom::cli
