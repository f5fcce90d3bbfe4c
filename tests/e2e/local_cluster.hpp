// A cluster as a user starts one: `loom up`, with its controller on a free loopback port and
// its agents simulating nodes, stopped by PID with SIGTERM as a user's Ctrl-C would.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "loom/common/exec_args.hpp"
#include "loom/proto/tls.hpp"
#include "run.hpp"
#include "temp.hpp"

extern char** environ;

namespace loom::testing {

class LocalCluster {
 public:
  // `loom up --agents N --topology T [up_args]`, its daemons reading `config` (TOML).
  // `prepare` is given the state directory before loom up starts (a filesystem of the
  // test's own mounted in it).
  LocalCluster(unsigned agents, const std::string& topology, const std::string& config = "",
               const std::vector<std::string>& up_args = {},
               const std::function<void(const std::filesystem::path&)>& prepare = {})
      : dir_(temp_path("cluster")) {
    std::filesystem::create_directories(dir_ / "state");
    if (prepare) prepare(dir_ / "state");
    std::ofstream(dir_ / "loom.toml") << config;
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    env.push_back("LOOM_CONFIG=" + (dir_ / "loom.toml").string());
    std::vector<std::string> argv{
        built("cli/loom"), "up",     "--agents",    std::to_string(agents),
        "--topology",      topology, "--state-dir", (dir_ / "state").string()};
    argv.insert(argv.end(), up_args.begin(), up_args.end());
    up_ = spawn(argv, env, dir_ / "up.out");
    const std::string line = wait_for(dir_ / "up.out", "export LOOM_CONTROLLER=");
    address_ = line.substr(line.find('=') + 1);
    // Printed before the controller's line, unless --no-tls.
    const std::string text = log();
    if (const auto at = text.find("export LOOM_TLS_CA="); at != std::string::npos) {
      const auto begin = at + std::string_view("export LOOM_TLS_CA=").size();
      tls_ca_ = text.substr(begin, text.find('\n', begin) - begin);
    }
  }
  ~LocalCluster() {
    stop();
    std::filesystem::remove_all(dir_);
  }

  const std::string& address() const { return address_; }
  // The CA loom up made, which the CLI checks the controller with; "" with --no-tls.
  const std::string& tls_ca() const { return tls_ca_; }
  // loom up's certificate and key for `host` (`tls/HOST.pem`, `tls/HOST.key`), as its
  // daemon holds them.
  Config::Tls host_files(const std::string& host) const {
    const std::filesystem::path dir = dir_ / "state" / "tls";
    return {tls_ca_, (dir / (host + ".pem")).string(), (dir / (host + ".key")).string()};
  }
  // What a program checks this cluster's hosts with: the CA alone (a user's), or with a
  // host's files as its daemon holds them. Plain with --no-tls.
  tls::Tls tls(const std::string& host = "") const {
    if (tls_ca_.empty()) return {};
    const Config::Tls files = host.empty() ? Config::Tls{tls_ca_, "", ""} : host_files(host);
    auto loaded = tls::Tls::load(files, host.empty() ? tls::Role::kClient : tls::Role::kDaemon);
    EXPECT_TRUE(loaded) << loaded.error().to_string();
    return loaded.value_or(tls::Tls{});
  }
  // LOOM_TLS_* for `files`.
  static std::vector<std::string> tls_env(const Config::Tls& files) {
    return {"LOOM_TLS_CA=" + files.ca, "LOOM_TLS_CERT=" + files.cert, "LOOM_TLS_KEY=" + files.key};
  }
  // LOOM_TLS_* as loom up starts `host`'s daemon with them. Empty with --no-tls.
  std::vector<std::string> tls_env(const std::string& host) const {
    return tls_ca_.empty() ? std::vector<std::string>{} : tls_env(host_files(host));
  }
  // LOOM_TLS_* for a daemon run as `user` with a copy of `host`'s certificate and key (as
  // if they had been stolen): what is left to stop them is Munge. Empty with --no-tls.
  std::vector<std::string> stolen_tls(const std::string& host, const std::string& user) const {
    if (tls_ca_.empty()) return {};
    const Config::Tls from = host_files(host);
    const std::filesystem::path to = dir_ / ("tls-" + user);
    std::filesystem::create_directories(to);
    const passwd* owner = ::getpwnam(user.c_str());
    EXPECT_NE(owner, nullptr) << user;
    const uid_t uid = owner != nullptr ? owner->pw_uid : 0;
    Config::Tls copy{tls_ca_, (to / "host.pem").string(), (to / "host.key").string()};
    for (const auto& [source, target] :
         {std::pair{from.cert, copy.cert}, std::pair{from.key, copy.key}}) {
      std::filesystem::copy_file(source, target, std::filesystem::copy_options::overwrite_existing);
      EXPECT_EQ(::chown(target.c_str(), uid, -1), 0);
    }
    EXPECT_EQ(::chown(to.c_str(), uid, -1), 0);
    return tls_env(copy);
  }
  // What a user's shell has once it has run loom up's exports: LOOM_CONTROLLER, LOOM_TLS_CA.
  std::vector<std::string> exports() const {
    std::vector<std::string> env{"LOOM_CONTROLLER=" + address_};
    if (!tls_ca_.empty()) env.push_back("LOOM_TLS_CA=" + tls_ca_);
    return env;
  }
  // The storage agent's export, as loom up printed it.
  std::filesystem::path storage_export() const {
    const std::string line = wait_for(dir_ / "up.out", "export LOOM_STORAGE_EXPORT=");
    return line.substr(line.find('=') + 1);
  }
  const std::filesystem::path& state_dir() const { return dir_; }
  pid_t pid() const { return up_; }
  // The processes of job `job` in this cluster's cgroups (loom/up<pid>/NODE/job_ID/rank_R,
  // and .../pmix for its PMIx server), whatever their command: none once the job has ended.
  std::vector<pid_t> job_processes(std::uint64_t job) const {
    const std::string level = "/loom/up" + std::to_string(up_) + "/",
                      mark = "/job_" + std::to_string(job) + "/";
    std::vector<pid_t> found;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
      const std::string name = entry.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream in(entry.path() / "cgroup");
      for (std::string line; std::getline(in, line);) {
        if (line.find(level) != std::string::npos && line.find(mark) != std::string::npos) {
          found.push_back(std::stoi(name));
          break;  // once, though v1 lists it in every hierarchy
        }
      }
    }
    return found;
  }
  // An MPI job's shared-memory directory on `node` (loom up's agent.shm_dir on loopback is
  // one per agent).
  std::filesystem::path shm_dir(const std::string& node, std::uint64_t job) const {
    return std::filesystem::path("/dev/shm") / ("loom-up" + std::to_string(up_) + "-" + node) /
           ("job_" + std::to_string(job));
  }
  // What loom up printed (stdout and stderr).
  std::string log() const {
    std::ifstream in(dir_ / "up.out");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  // Waits (bounded) for loom up to print a line containing `text`.
  std::string wait_log(const std::string& text) const { return wait_for(dir_ / "up.out", text); }

  // Ctrl-C, as a user stops loom up; waits (bounded) for it to exit; returns its status.
  int stop() {
    if (up_ <= 0) return status_;
    ::kill(up_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 3000; ++i) {  // up to 30 s, then SIGKILL
      if (::waitpid(up_, &status, WNOHANG) == up_) {
        up_ = -1;
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return status_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "loom up did not stop within 30 s of SIGTERM";
    ::kill(up_, SIGKILL);
    ::waitpid(up_, nullptr, 0);
    up_ = -1;
    return status_;
  }

  // `loom ARGS` against this cluster, run as `user` (root when empty) in `cwd`.
  Completed loom(const std::string& user, const std::vector<std::string>& args,
                 const std::string& cwd = "/tmp") const {
    std::vector<std::string> argv;
    if (!user.empty()) argv = {"runuser", "-u", user, "--"};
    argv.emplace_back("env");
    for (const std::string& e : exports()) argv.push_back(e);
    argv.insert(argv.end(), {"sh", "-c"});
    auto quote = [](const std::string& word) {  // for sh: '...', with ' written as '\''
      std::string out = "'";
      for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
      return out + "'";
    };
    std::string command = "cd " + quote(cwd) + " && exec " + quote(built("cli/loom"));
    for (const std::string& a : args) command += " " + quote(a);
    argv.push_back(command);
    return run(argv);
  }

  // The first line of `file` containing `text`, once a process writes it (bounded: 60 s).
  static std::string wait_for(const std::filesystem::path& file, const std::string& text) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
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

  // Starts argv[0] (a path) with this environment, its stdout and stderr to `output`; the
  // caller stops it by its pid.
  static pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                     const std::filesystem::path& output) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const std::vector<char*> args = loom::exec_args(argv), envp = loom::exec_args(env);
    pid_t pid = -1;
    EXPECT_EQ(posix_spawn(&pid, args[0], &actions, nullptr, args.data(), envp.data()), 0)
        << argv[0];
    posix_spawn_file_actions_destroy(&actions);
    return pid;
  }

 private:
  std::filesystem::path dir_;
  pid_t up_ = -1;
  int status_ = -1;
  std::string address_;
  std::string tls_ca_;
};

}  // namespace loom::testing
