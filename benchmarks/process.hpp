// What the benchmarks that drive whole programs share: starting them, waiting for them,
// reading what they print, and medians.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "loom/common/exec_args.hpp"

extern char** environ;

namespace loom::bench {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

inline std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                   const std::string& out = "/dev/null") {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) environment.emplace_back(*e);
  environment.insert(environment.end(), env.begin(), env.end());
  const std::vector<char*> args = loom::exec_args(argv), envp = loom::exec_args(environment);
  pid_t pid = -1;
  if (posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp.data()) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

inline int wait_exit(pid_t pid) {
  int status = 0;
  if (pid <= 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs a command to its end; returns its stdout.
inline std::string capture(const std::vector<std::string>& argv,
                           const std::vector<std::string>& env, const fs::path& scratch) {
  const int status = wait_exit(spawn(argv, env, scratch.string()));
  std::ifstream in(scratch);
  std::string out{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (status != 0) throw std::runtime_error(fmt::format("{} failed: {}", argv[0], out));
  return out;
}

// The first line of `file` holding `text`, once written (bounded: 60 s).
inline std::string wait_line(const fs::path& file, const std::string& text) {
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
      if (line.find(text) != std::string::npos) return line;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error(fmt::format("{} never said \"{}\"", file.string(), text));
}

// What a user's shell has once it has run the exports `loom up` printed to `file`:
// LOOM_CONTROLLER and, unless --no-tls, LOOM_TLS_CA (printed before it).
inline std::vector<std::string> up_exports(const fs::path& file) {
  std::vector<std::string> env{wait_line(file, "export LOOM_CONTROLLER=").substr(7)};
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("export LOOM_TLS_CA=")) env.push_back(line.substr(7));
  }
  return env;
}

inline double median(std::vector<double> v) {
  std::ranges::sort(v);
  return v.empty()      ? 0
         : v.size() % 2 ? v[v.size() / 2]
                        : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace loom::bench
