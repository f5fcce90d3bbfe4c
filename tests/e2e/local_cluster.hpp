// A controller and agents started as real processes on this machine, for end-to-end tests:
// the controller on a free loopback port, each agent simulating a node. Stopped by PID.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "run.hpp"
#include "temp.hpp"

extern char** environ;

namespace loom::testing {

class LocalCluster {
 public:
  // One agent per synthetic topology, named c<pid>n0, c<pid>n1, ...: node names (and so the
  // agents' cgroups) differ between clusters that tests run side by side.
  explicit LocalCluster(const std::vector<std::string>& nodes) : dir_(temp_path("cluster")) {
    std::filesystem::create_directories(dir_);
    controller_ = spawn({built("controller/loomctld"), "--listen", "127.0.0.1:0", "--state-dir", (dir_ / "state").string()},
                        dir_ / "loomctld.out");
    const std::string line = wait_for(dir_ / "loomctld.out", "listening on ");
    address_ = line.substr(line.find("listening on ") + 13);
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      const auto log = dir_ / fmt::format("loomd-n{}.log", i);
      agents_.push_back(spawn({built("agent/loomd"), "--controller", address_, "--name", fmt::format("c{}n{}", ::getpid(), i),
                               "--synthetic", nodes[i]}, log));
      wait_for(log, "registered with");
    }
  }
  ~LocalCluster() {
    for (pid_t pid : agents_) stop(pid);
    stop(controller_);
    std::filesystem::remove_all(dir_);
  }

  const std::string& address() const { return address_; }

  // `loom ARGS --controller ADDRESS`, run as `user` (root when empty) in `cwd`.
  Completed loom(const std::string& user, std::vector<std::string> args, const std::string& cwd = "/tmp") const {
    std::vector<std::string> argv;
    if (!user.empty()) argv = {"runuser", "-u", user, "--"};
    argv.push_back("env");
    argv.push_back("LOOM_CONTROLLER=" + address_);
    argv.push_back("sh");
    argv.push_back("-c");
    std::string command = "cd '" + cwd + "' && exec";
    command += " '" + built("cli/loom") + "'";
    for (const std::string& a : args) command += " '" + a + "'";
    argv.push_back(command);
    return run(argv);
  }

 private:
  static pid_t spawn(const std::vector<std::string>& argv, const std::filesystem::path& output) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    EXPECT_EQ(posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ), 0) << argv[0];
    posix_spawn_file_actions_destroy(&actions);
    return pid;
  }

  // The first line of `file` containing `text`, once a process writes it (bounded).
  static std::string wait_for(const std::filesystem::path& file, const std::string& text) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(file);
      for (std::string line; std::getline(in, line);) {
        if (line.find(text) != std::string::npos) return line;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << file << " never said \"" << text << "\"";
    return "";
  }

  static void stop(pid_t pid) {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 500; ++i) {  // up to 5 s, then SIGKILL
      if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }

  std::filesystem::path dir_;
  pid_t controller_ = -1;
  std::vector<pid_t> agents_;
  std::string address_;
};

}  // namespace loom::testing
