// controller_memory: what the controller's memory holds after --jobs trivial jobs, and how
// long a controller takes to restart on their store (issue 25: under 200 MiB after 100,000
// jobs; ready in under 5 s).
//
// The controller's core and its SQLite store on disk (--dir), as loomctld runs them, with
// agents answering on channels (no gRPC, no process): --nodes nodes of 64 cores join, then
// the jobs go through in rounds of --round, each round a submission batch, a scheduling
// pass, and every launched job's start and end; the wall clock moves --step seconds a
// round. Each job carries this process's environment, as `loom submit`'s default
// `--export ALL` carries the user's.
//
// Two controllers in the same run, each in a process of its own (its peak RSS its own):
//   kept     every ended job stays in memory (min_job_age of a year): Loom before issue 25;
//   retained controller.min_job_age (--min-job-age, 300 s): ended jobs leave memory.
// Each then restarts in a fresh process on the store it left, as loomctld would, loading
// what its min_job_age keeps.
//
//   controller_memory [--json] [--jobs 100000] [--nodes 100] [--round 1000] [--step 10]
//                     [--min-job-age 300] [--dir /var/tmp]
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>

#include "launch_channel.hpp"
#include "loom/controller/core.hpp"
#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"

extern char** environ;

namespace {

using namespace loom;
using namespace loom::controller;
using Steady = std::chrono::steady_clock;

const sched::Time kStart{std::chrono::seconds(2'000'000'000)};

struct Options {
  std::size_t jobs = 100000, nodes = 100, round = 1000;
  std::chrono::seconds step{10}, min_job_age{300};
  std::filesystem::path dir = "/var/tmp";
};

// This process's resident set now and at its peak, in MiB (/proc/self/status).
std::pair<double, double> rss_mib() {
  std::ifstream in("/proc/self/status");
  double now = 0, peak = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("VmRSS:")) now = std::stod(line.substr(6)) / 1024;
    if (line.starts_with("VmHWM:")) peak = std::stod(line.substr(6)) / 1024;
  }
  return {now, peak};
}

double seconds_since(Steady::time_point t0) {
  return std::chrono::duration<double>(Steady::now() - t0).count();
}

// Runs the jobs through a controller on a new store at `dir`.
Result<nlohmann::json> run_jobs(const Options& o, const std::filesystem::path& dir,
                                std::chrono::seconds min_job_age) {
  sched::Cluster cluster;
  Config config;
  config.controller.min_job_age = min_job_age;
  ManualClock clock(kStart);
  Core core(
      cluster, config, clock,
      LOOM_TRY(JobManager::open(LOOM_TRY(open_sqlite_store(dir)), cluster, {}, clock.wall())));
  const std::string topology =
      hwtopo::to_json(hwtopo::load_synthetic("pack:2 numa:2 core:16 pu:1").value()).dump();
  std::vector<std::shared_ptr<bench::LaunchChannel>> channels;
  std::vector<NodeId> ids;
  LOOM_TRY(core.begin());
  for (std::size_t i = 0; i < o.nodes; ++i) {
    v1::RegisterRequest hello;
    hello.set_name("node" + std::to_string(i));
    hello.set_topology_json(topology);
    channels.push_back(std::make_shared<bench::LaunchChannel>());
    ids.push_back(LOOM_TRY(core.agent_joined(hello, channels.back())));
  }
  LOOM_TRY(core.commit());

  v1::SubmitRequest request;
  v1::JobSpec* spec = request.mutable_spec();
  spec->set_name("true");
  spec->set_tasks(1);
  spec->set_cpus_per_task(1);
  spec->set_walltime_s(600);
  spec->add_argv("/bin/true");
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const auto eq = entry.find('=');
    if (eq != std::string_view::npos)
      (*spec->mutable_environment())[std::string(entry.substr(0, eq))] = entry.substr(eq + 1);
  }
  const Caller user{1001, "loom-alice", false, 1001};
  const auto t0 = Steady::now();
  std::size_t done = 0;
  while (done < o.jobs) {
    LOOM_TRY(core.begin());
    for (std::size_t i = 0; i < std::min(o.round, o.jobs - done); ++i)
      LOOM_TRY(core.submit(user, request));
    LOOM_TRY(core.commit());
    LOOM_TRY(core.begin());
    LOOM_TRY(core.tick());
    LOOM_TRY(core.commit());
    LOOM_TRY(core.begin());
    for (std::size_t n = 0; n < channels.size(); ++n) {
      core.agent_message(ids[n], v1::FromAgent());  // heard from: no node goes silent
      for (std::uint64_t job : std::exchange(channels[n]->launched, {})) {
        v1::FromAgent message;
        message.mutable_started()->set_job(job);
        core.agent_message(ids[n], message);
        message.mutable_ended()->set_job(job);
        core.agent_message(ids[n], message);
        ++done;
      }
    }
    LOOM_TRY(core.commit());
    clock.advance(o.step);
  }
  const double run_s = seconds_since(t0);
  const auto [rss, peak] = rss_mib();
  return nlohmann::json{{"jobs", done},
                        {"run_s", run_s},
                        {"rss_mib", rss},
                        {"peak_rss_mib", peak},
                        {"environment_bytes", spec->ByteSizeLong()},
                        {"wall_end", clock.wall().time_since_epoch().count()}};
}

// A controller starting on that store, as loomctld does: until its core is ready.
Result<nlohmann::json> restart(const std::filesystem::path& dir, std::int64_t wall_end,
                               std::chrono::seconds min_job_age) {
  const auto t0 = Steady::now();
  sched::Cluster cluster;
  Config config;
  config.controller.min_job_age = min_job_age;
  const ManualClock clock{sched::Time(std::chrono::seconds(wall_end))};
  auto manager = LOOM_TRY(JobManager::open(LOOM_TRY(open_sqlite_store(dir)), cluster, {},
                                           clock.wall(), {}, wall_end - min_job_age.count()));
  Core core(cluster, config, clock, std::move(manager));
  const double ready_s = seconds_since(t0);
  const std::size_t loaded = core.jobs().list(Caller{0, "root", true, 0}, true).size();
  const auto [rss, peak] = rss_mib();
  return nlohmann::json{
      {"ready_s", ready_s}, {"jobs_in_memory", loaded}, {"rss_mib", rss}, {"peak_rss_mib", peak}};
}

// Runs `work` in a child process and returns what it printed (one JSON object).
Result<nlohmann::json> in_child(const std::function<Result<nlohmann::json>()>& work) {
  int fds[2];
  if (::pipe(fds) != 0) return make_error(ErrorCode::kInternal, "pipe");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    const Result<nlohmann::json> result = work();
    const std::string out =
        result ? result->dump() : nlohmann::json{{"error", result.error().to_string()}}.dump();
    (void)!::write(fds[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string text;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;)
    text.append(buffer, static_cast<std::size_t>(n));
  ::close(fds[0]);
  ::waitpid(pid, nullptr, 0);
  nlohmann::json parsed = nlohmann::json::parse(text, nullptr, false);
  if (!parsed.is_object()) return make_error(ErrorCode::kInternal, "the child said nothing");
  if (parsed.contains("error"))
    return make_error(ErrorCode::kInternal, parsed["error"].get<std::string>());
  return parsed;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"controller_memory: the controller's memory after many jobs, and its restart"};
  Options o;
  bool json_out = false;
  long step = o.step.count(), age = o.min_job_age.count();
  app.add_flag("--json", json_out, "One JSON object instead of the table");
  app.add_option("--jobs", o.jobs, "Trivial jobs run")->capture_default_str();
  app.add_option("--nodes", o.nodes, "Nodes of 64 cores")->capture_default_str();
  app.add_option("--round", o.round, "Jobs submitted between two passes")->capture_default_str();
  app.add_option("--step", step, "Seconds the wall clock moves a round")->capture_default_str();
  app.add_option("--min-job-age", age, "controller.min_job_age, in seconds")->capture_default_str();
  app.add_option("--dir", o.dir, "Where the stores go (a disk, as a controller's)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  o.step = std::chrono::seconds(step);
  o.min_job_age = std::chrono::seconds(age);
  if (o.round == 0) o.round = 1;
  spdlog::set_level(spdlog::level::warn);

  struct Mode {
    std::string name;
    std::chrono::seconds min_job_age;
  };
  const std::vector<Mode> modes = {{"kept", std::chrono::hours(24 * 365)},
                                   {"retained", o.min_job_age}};
  nlohmann::json results = nlohmann::json::array();
  if (!json_out) {
    std::printf(
        "controller_memory: %zu jobs of 1 core on %zu nodes, rounds of %zu, clock +%lds a round; "
        "SQLite in %s; release build\n",
        o.jobs, o.nodes, o.round, static_cast<long>(o.step.count()), o.dir.c_str());
    std::printf("%-9s %12s %8s %10s %10s %12s %10s %14s\n", "mode", "min_job_age", "run s",
                "RSS MiB", "peak MiB", "restart s", "loaded", "restart MiB");
  }
  for (const Mode& m : modes) {
    const std::filesystem::path dir =
        o.dir / fmt::format("loom-controller-memory.{}.{}", ::getpid(), m.name);
    std::filesystem::remove_all(dir);
    auto ran = in_child([&] { return run_jobs(o, dir, m.min_job_age); });
    auto restarted = ran ? in_child([&] {
      return restart(dir, (*ran)["wall_end"].get<std::int64_t>(), m.min_job_age);
    })
                         : Result<nlohmann::json>(std::unexpected(ran.error()));
    std::filesystem::remove_all(dir);
    if (!restarted) {
      std::fprintf(stderr, "controller_memory: %s\n", restarted.error().to_string().c_str());
      return 1;
    }
    results.push_back({{"mode", m.name},
                       {"min_job_age_s", m.min_job_age.count()},
                       {"run", *ran},
                       {"restart", *restarted}});
    if (!json_out) {
      std::printf("%-9s %12ld %8.1f %10.1f %10.1f %12.2f %10zu %14.1f\n", m.name.c_str(),
                  static_cast<long>(m.min_job_age.count()), (*ran)["run_s"].get<double>(),
                  (*ran)["rss_mib"].get<double>(), (*ran)["peak_rss_mib"].get<double>(),
                  (*restarted)["ready_s"].get<double>(),
                  (*restarted)["jobs_in_memory"].get<std::size_t>(),
                  (*restarted)["rss_mib"].get<double>());
      std::fflush(stdout);
    }
  }
  if (json_out) {
    std::cout << nlohmann::json{{"benchmark", "controller_memory"},
                                {"jobs", o.jobs},
                                {"nodes", o.nodes},
                                {"round", o.round},
                                {"step_s", o.step.count()},
                                {"results", results}}
                     .dump(2)
              << '\n';
  }
  return 0;
}
