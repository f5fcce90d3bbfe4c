// loom up: a whole cluster on this machine — loomctld and N loomd agents, each agent
// simulating a node (its own topology, bound through hwtopo's explicit mapping) — on
// loopback, or with --netns each on a host of its own (testbed.hpp); supervised as systemd
// would: a daemon that dies is restarted, and Ctrl-C or SIGTERM stops everything, agents
// first, leaving no process, cgroup, mount or namespace behind.
#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include "commands.hpp"
#include "loom/agent/cgroup.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/common/exec_args.hpp"
#include "loom/common/programs.hpp"
#include "testbed.hpp"
#include "up_tls.hpp"

extern char** environ;

namespace loom::cli {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Daemon {
  std::string what;  // "loomctld", "loomd node1"
  std::vector<std::string> argv;
  fs::path log;                  // stdout and stderr, appended across restarts
  std::string ready;             // the log line that says it is ready
  std::vector<std::string> env;  // NAME=VALUE beyond loom up's own environment
  pid_t pid = -1;
  std::deque<Clock::time_point> starts;  // recent starts, for the restart limit
};

class Supervisor {
 public:
  Supervisor(bool restart, agent::CgroupTree cgroups, std::string cgroup_root)
      : restart_(restart), cgroups_(std::move(cgroups)), cgroup_root_(std::move(cgroup_root)) {}

  // Starts the daemon and waits (bounded) for its ready line; returns that line.
  Result<std::string> start(Daemon& d) {
    const auto offset = fs::exists(d.log) ? fs::file_size(d.log) : 0;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    // Root's daemons' logs: root's to read, and never written through a link.
    posix_spawn_file_actions_addopen(&actions, 1, d.log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attributes, &none);  // the daemons handle their own signals
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
    // loom up's environment but for what the daemon is given instead (its TLS files).
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string_view entry(*e);
      const bool replaced = std::ranges::any_of(d.env, [&](const std::string& given) {
        return entry.substr(0, entry.find('=')) == given.substr(0, given.find('='));
      });
      if (!replaced) env.emplace_back(entry);
    }
    env.insert(env.end(), d.env.begin(), d.env.end());
    const std::vector<char*> args = exec_args(d.argv), envp = exec_args(env);
    const int error =
        ::posix_spawn(&d.pid, args[0], &actions, &attributes, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (error != 0)
      return make_error(ErrorCode::kInternal,
                        fmt::format("cannot start {}: {}", d.what, loom::errno_text(error)));
    d.starts.push_back(Clock::now());
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline) {
      std::ifstream in(d.log);
      in.seekg(static_cast<std::streamoff>(offset));
      for (std::string line; std::getline(in, line);) {
        if (line.find(d.ready) != std::string::npos) return line;
      }
      int status = 0;
      if (::waitpid(d.pid, &status, WNOHANG) == d.pid) {
        d.pid = -1;
        return make_error(ErrorCode::kUnavailable,
                          fmt::format("{} exited while starting; see {}", d.what, d.log.string()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return make_error(
        ErrorCode::kDeadlineExceeded,
        fmt::format("{} did not say \"{}\" within 30 s; see {}", d.what, d.ready, d.log.string()));
  }

  // A daemon exited: restart it unless told not to, or unless it keeps dying (5 starts in
  // 60 s, systemd's StartLimitBurst), which stops the cluster.
  Status exited(Daemon& d, int status) {
    d.pid = -1;
    const std::string how = WIFSIGNALED(status)
                                ? fmt::format("was killed by signal {}", WTERMSIG(status))
                                : fmt::format("exited with status {}", WEXITSTATUS(status));
    if (!restart_) {
      std::cerr << fmt::format("loom up: {} {}; not restarted (--no-restart)\n", d.what, how);
      return {};
    }
    std::cerr << fmt::format("loom up: {} {}; restarting it\n", d.what, how);
    for (;;) {
      while (!d.starts.empty() && Clock::now() - d.starts.front() > std::chrono::seconds(60))
        d.starts.pop_front();
      if (d.starts.size() >= 5) {
        return make_error(
            ErrorCode::kUnavailable,
            fmt::format(
                "{} died or failed to start 5 times within 60 s; stopping the cluster (see {})",
                d.what, d.log.string()));
      }
      auto started = start(d);
      if (started) return {};
      std::cerr << fmt::format("loom up: {}; trying again\n", started.error().message());
    }
  }

  static void stop(Daemon& d) {
    if (d.pid <= 0) return;
    ::kill(d.pid, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(15);
    while (Clock::now() < deadline) {
      if (::waitpid(d.pid, nullptr, WNOHANG) == d.pid) {
        d.pid = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(d.pid, SIGKILL);
    ::waitpid(d.pid, nullptr, 0);
    d.pid = -1;
  }

  // What the stopped agents left running: their jobs' processes, killed by cgroup, and
  // the keepers that watched them, which this process (a child subreaper) inherited.
  void remove_jobs() const {
    cgroups_.destroy_level(cgroup_root_);
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < deadline) {
      const pid_t pid = ::waitpid(-1, nullptr, WNOHANG);
      if (pid < 0) return;  // no child left
      if (pid == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

 private:
  bool restart_;
  agent::CgroupTree cgroups_;  // as the agents find it: the same configuration, the same tree
  std::string cgroup_root_;
};

}  // namespace

Command add_up(CLI::App& app) {
  struct Options {
    unsigned agents = 2;
    std::string topology = "pack:2 numa:2(memory=16GiB) core:8 pu:1";
    std::string state_dir;
    std::string nvme = "8GiB";
    bool no_restart = false;
    bool no_tls = false;
    unsigned netns = 0;
  };
  auto o = std::make_shared<Options>();
  auto* up = app.add_subcommand(
      "up",
      "Run a cluster on this machine: loomctld, N agents each simulating a node with an "
      "NVMe device, and a storage agent `storage` exporting a directory, on loopback or "
      "(--netns) each on a host of its own; "
      "gRPC over TLS with a CA and host certificates of its own; prints `export "
      "LOOM_TLS_CA=...`, `export LOOM_CONTROLLER=...` and `export LOOM_STORAGE_EXPORT=...` once "
      "ready; Ctrl-C stops it (root only)");
  up->add_option("--agents", o->agents, "Compute agents")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  up->add_option("--topology", o->topology,
                 "Each agent's node: an hwloc XML file, or a synthetic topology")
      ->capture_default_str();
  up->add_option(
      "--state-dir", o->state_dir,
      "The controller's state and the daemons' logs (default: a new directory "
      "in $TMPDIR or /tmp, loom-up.XXXXXX, removed at exit); a state directory given is kept "
      "and reused");
  up->add_option("--nvme", o->nvme,
                 "Each agent's NVMe device for burst buffers: a loop-mounted ext4 image of this "
                 "size (sparse: the disk is used as it fills)")
      ->capture_default_str();
  up->add_option("--netns", o->netns,
                 "N compute hosts and a storage host, each in a network namespace of its own with "
                 "its hostname and an address in 198.18.0.0/24 (replaces --agents; loopback when "
                 "namespaces cannot be made)")
      ->check(CLI::Range(1u, 12u));
  up->add_flag("--no-tls", o->no_tls,
               "Make no certificates: the daemons run as the configuration's tls.* says, plain "
               "when it sets none (and log that they are plain)");
  up->add_flag("--no-restart", o->no_restart,
               "Leave a daemon that dies stopped, instead of restarting it as systemd would");
  return {
      up, [o](const Context& context) -> Status {
        if (::geteuid() != 0) {
          return make_error(ErrorCode::kPermissionDenied,
                            "loom up must run as root: its agents start jobs as their users");
        }
        const fs::path loomctld = LOOM_TRY(find_program("loomctld", "controller"));
        const fs::path loomd = LOOM_TRY(find_program("loomd", "agent"));
        const Bytes nvme = LOOM_TRY(with_context(parse_bytes(o->nvme), "--nvme"));
        if (nvme.count() < (std::uint64_t{64} << 20)) {
          return make_error(ErrorCode::kInvalidArgument,
                            fmt::format("--nvme {}: a device needs at least 64 MiB", o->nvme));
        }
        const bool temporary = o->state_dir.empty();
        fs::path dir;
        if (temporary) {
          // Made anew (mkdtemp), never a name another user could have taken first: root
          // would write its logs through their symlinks and mount images where they chose.
          std::string name = (fs::temp_directory_path() / "loom-up.XXXXXX").string();
          if (::mkdtemp(name.data()) == nullptr) {
            return make_error(
                ErrorCode::kInternal,
                fmt::format("cannot make a state directory in {}: {}",
                            fs::temp_directory_path().string(), loom::errno_text(errno)));
          }
          dir = name;
        } else {
          dir = o->state_dir;
          fs::create_directories(dir);
        }
        // Users reach their slices on the devices in it (the controller's state is 0700 inside).
        ::chmod(dir.c_str(), 0711);
        const std::vector<std::string> topology =
            fs::is_regular_file(o->topology) ? std::vector<std::string>{"--xml", o->topology}
                                             : std::vector<std::string>{"--synthetic", o->topology};

        // The supervisor waits for these; nothing else in loom up handles signals.
        sigset_t signals;
        sigemptyset(&signals);
        for (int s : {SIGINT, SIGTERM, SIGCHLD}) sigaddset(&signals, s);
        pthread_sigmask(SIG_BLOCK, &signals, nullptr);

        // Keepers of jobs outlive agents that stop; as their subreaper, loom up reaps them.
        ::prctl(PR_SET_CHILD_SUBREAPER, 1);
        // This run's agents keep their jobs' cgroups under loom/up<pid>/, apart from any other
        // cluster on the machine.
        const std::string cgroup_root = fmt::format("up{}", ::getpid());
        const agent::CgroupChoice choice =
            LOOM_TRY(agent::parse_cgroup_choice(context.config.agent.cgroup));
        Supervisor supervisor(!o->no_restart, LOOM_TRY(agent::CgroupTree::find(choice)),
                              cgroup_root);
        if (o->netns > 0) o->agents = o->netns;
        std::vector<std::string> names;
        names.reserve(o->agents);
        for (unsigned i = 0; i < o->agents; ++i) names.push_back(fmt::format("node{}", i));
        std::optional<Testbed> testbed;  // outlives stop_all: the namespaces go after their daemons
        if (o->netns > 0) {
          std::vector<std::string> hosts = names;
          hosts.emplace_back("storage");
          auto made = Testbed::make(hosts);
          if (made) {
            testbed.emplace(std::move(*made));
          } else {
            std::cerr << fmt::format("loom up: {}; the cluster runs on loopback instead\n",
                                     made.error().message());
          }
        }
        // Where a daemon runs: on its host of the testbed, or here.
        auto on = [&](const std::string& host, const std::vector<std::string>& argv) {
          return testbed ? testbed->on(host, argv) : argv;
        };
        // MPI jobs' shared-memory directories: on a testbed host, in its own /dev/shm (a tmpfs
        // of the host's), the same path on every host as on real nodes; on loopback, where the
        // agents share the machine's /dev/shm, one per agent.
        auto shm_dir = [&](const std::string& name) {
          return testbed ? fs::path("/dev/shm/loom")
                         : fs::path(fmt::format("/dev/shm/loom-up{}-{}", ::getpid(), name));
        };
        const std::string here = testbed ? testbed->head_address() : "127.0.0.1";
        const std::string interface = testbed ? Testbed::kInterface : "lo";
        // Each daemon's certificate names the addresses it is reached at (and loopback).
        std::optional<UpTls> tls;
        if (!o->no_tls) {
          std::map<std::string, std::vector<std::string>> addresses{
              {"controller", {here, "127.0.0.1"}}};
          for (const std::string& host : names)
            addresses[host] = {testbed ? testbed->address(host) : here, "127.0.0.1"};
          addresses["storage"] = {testbed ? testbed->address("storage") : here, "127.0.0.1"};
          auto made = make_up_tls(dir / "tls", addresses);
          if (!made) {
            if (temporary) fs::remove_all(dir);
            return std::unexpected(made.error());
          }
          tls = std::move(*made);
        }
        // Without certificates of its own, none a shell exported for another cluster: the
        // daemons run as the configuration's tls.* says.
        auto tls_env = [&](const std::string& host) {
          return tls ? tls->environment(host)
                     : std::vector<std::string>{"LOOM_TLS_CA=", "LOOM_TLS_CERT=", "LOOM_TLS_KEY="};
        };
        Daemon controller{"loomctld",
                          {loomctld.string(), "--listen", here + ":0", "--state-dir",
                           (dir / "controller").string()},
                          dir / "loomctld.log",
                          "listening on ",
                          tls_env("controller"),
                          -1,
                          {}};
        std::vector<Daemon> agents;
        std::vector<burstbuffer::Slice> devices;
        auto stop_all = [&] {
          for (Daemon& a : agents) Supervisor::stop(a);
          Supervisor::stop(controller);
          supervisor.remove_jobs();
          // The slices the stopped agents' jobs held, then the devices they were on.
          for (burstbuffer::Slice& device : devices) {
            for (std::uint64_t job : burstbuffer::slices_on(device.dir()))
              (void)burstbuffer::remove_slice(device.dir(), job);
            if (auto removed = device.destroy(); !removed)
              std::cerr << "loom up: " << removed.error().to_string() << "\n";
          }
          if (temporary) fs::remove_all(dir);
          if (!testbed) {
            std::error_code ec;
            for (const std::string& name : names) fs::remove_all(shm_dir(name), ec);
            fs::remove_all(shm_dir("storage"), ec);
          }
        };
        auto run = [&]() -> Status {
          const std::string line = LOOM_TRY(supervisor.start(controller));
          const std::string address = line.substr(line.find("listening on ") + 13);
          controller.argv[2] = address;  // restarts keep the port: agents and users know it
          for (const std::string& name : names) {
            const fs::path device = dir / fmt::format("nvme-{}", name);
            // A device is found again in a state directory that is reused; else made. Its slices'
            // images go in it, so a device is as full as its slices make it.
            auto found = burstbuffer::Slice::attach(dir / fmt::format("nvme-{}.img", name), device);
            devices.push_back(
                found ? std::move(*found)
                      : LOOM_TRY(with_context(
                            burstbuffer::Slice::create({dir / fmt::format("nvme-{}.img", name),
                                                        device, nvme.count(), 0, 0, 0711, false}),
                            "making " + name + "'s NVMe device")));
            // The agent's device (the capacity offered leaves the filesystem's own metadata out),
            // and the fabric on the host's interface.
            std::vector<std::string> argv{
                loomd.string(),
                "--controller",
                address,
                "--name",
                name,
                "--cgroup",
                fmt::format("{}/{}", cgroup_root, name),
                "--state-dir",
                (dir / fmt::format("agent-{}", name)).string(),
                "--shm-dir",
                shm_dir(name).string(),
                "--nvme",
                fmt::format("{}={}", device.string(), nvme.count() / 100 * 97),
                "--fabric-interface",
                interface};
            argv.insert(argv.end(), topology.begin(), topology.end());
            Daemon agent{"loomd " + name,
                         on(name, argv),
                         dir / fmt::format("loomd-{}.log", name),
                         "registered with",
                         tls_env(name),
                         -1,
                         {}};
            agents.push_back(std::move(agent));
            LOOM_TRY(supervisor.start(agents.back()));
          }
          const fs::path exported = dir / "export";
          fs::create_directories(exported);
          ::chmod(exported.c_str(), 0755);
          agents.push_back(
              {"loomd storage",
               on("storage",
                  {loomd.string(), "--controller", address, "--name", "storage", "--cgroup",
                   cgroup_root + "/storage", "--state-dir", (dir / "agent-storage").string(),
                   "--shm-dir", shm_dir("storage").string(), "--fabric-interface", interface,
                   "--export", exported.string(), "--data-listen",
                   (testbed ? testbed->address("storage") : here) + ":0"}),
               dir / "loomd-storage.log",
               "registered with",
               tls_env("storage"),
               -1,
               {}});
          LOOM_TRY(supervisor.start(agents.back()));
          std::cerr << fmt::format(
              "loom up: loomctld, {} agents ({}, {} NVMe each) and a storage agent running; state "
              "and logs in {}\n",
              o->agents, o->topology, format_bytes(nvme), dir.string());
          if (testbed) {
            std::string hosts;
            for (const std::string& name : names)
              hosts += fmt::format(" {}={}", name, testbed->address(name));
            std::cerr << fmt::format(
                "loom up: hosts on {}: loomctld={}{} storage={} (network namespaces {}NAME)\n",
                testbed->network(), testbed->head_address(), hosts, testbed->address("storage"),
                testbed->namespace_prefix());
          }
          if (tls) std::cout << "export LOOM_TLS_CA=" << tls->ca.string() << "\n";
          std::cout << "export LOOM_CONTROLLER=" << address << "\n";
          std::cout << "export LOOM_STORAGE_EXPORT=" << exported.string() << '\n' << std::flush;
          for (;;) {
            int signal = 0;
            sigwait(&signals, &signal);
            if (signal != SIGCHLD) {
              std::cerr << "loom up: stopping\n";
              return {};
            }
            for (int status = 0;;) {
              const pid_t pid = ::waitpid(-1, &status, WNOHANG);
              if (pid <= 0) break;
              if (pid == controller.pid) LOOM_TRY(supervisor.exited(controller, status));
              for (Daemon& a : agents) {
                if (pid == a.pid) LOOM_TRY(supervisor.exited(a, status));
              }
            }
          }
        };
        Status status = run();
        stop_all();
        return status;
      }};
}

}  // namespace loom::cli
