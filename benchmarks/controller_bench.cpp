// controller_bench: how many jobs the controller's core submits, schedules and retires per
// second, alone: no gRPC, no agent, no process, time from a fake clock.
//
// A cluster of --nodes nodes (each "pack:2 numa:2 core:16 pu:1": 64 cores) joins through
// the core's agent_joined, as agents' hellos would; then --jobs jobs (1 to 4 tasks of 1 or 2
// cores) go through it in rounds of --round: each submitted as one CLI call is, a
// scheduling pass (tick), and for every job the pass launched the start and the end its
// agent would report.
//
// The store commits as the daemon does: the events the inbox finds waiting are one batch,
// stored in one transaction (synchronous=FULL: one fsync) before anything of it is answered
// or sent (Core::begin/commit). Here a batch is --batch events (under load, what came
// while the last batch was being stored); the baseline, in the same run, is a batch of
// one event: a commit per submission, per pass and per job's end, as loomctld did before
// group commit.
//
// Stores: SQLite on disk (--dir, default /var/tmp), which is what a controller runs on,
// and the same SQLite on tmpfs (/dev/shm), where an fsync costs nothing: the core's own
// cost.
//
//   controller_bench [--json] [--nodes 10000] [--jobs 100000] [--round 1000] [--batch 256]
//                    [--dir DIR]
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "launch_channel.hpp"
#include "loom/controller/core.hpp"
#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"

namespace {

using namespace loom;
using namespace loom::controller;
using Steady = std::chrono::steady_clock;

constexpr const char* kNodeTopology = "pack:2 numa:2 core:16 pu:1";

struct Run {
  std::string store;
  std::size_t batch = 1;
  double join_s = 0, submit_s = 0, pass_s = 0, retire_s = 0;
  std::vector<double> passes_ms;
  std::size_t jobs = 0;
  std::uint64_t store_bytes = 0;
};

double seconds_since(Steady::time_point t0) {
  return std::chrono::duration<double>(Steady::now() - t0).count();
}

// Runs `events` in batches of `batch`, each stored as one transaction.
template <typename Event>
Status batched(Core& core, std::size_t count, std::size_t batch, Event event) {
  for (std::size_t done = 0; done < count;) {
    LOOM_TRY(core.begin());
    for (std::size_t end = std::min(count, done + batch); done < end; ++done) LOOM_TRY(event(done));
    LOOM_TRY(core.commit());
  }
  return {};
}

Result<Run> run(const std::string& label, const std::filesystem::path& dir, std::size_t nodes,
                std::size_t jobs, std::size_t round, std::size_t batch) {
  std::filesystem::remove_all(dir);
  Run out;
  out.store = label;
  out.batch = batch;
  sched::Cluster cluster;
  Config config;
  const ManualClock clock{sched::Time(std::chrono::seconds(1'000'000))};
  auto store = LOOM_TRY(open_sqlite_store(dir));
  auto manager = LOOM_TRY(JobManager::open(std::move(store), cluster, {}, clock.wall()));
  Core core(cluster, config, clock, std::move(manager));

  const std::string topology =
      hwtopo::to_json(hwtopo::load_synthetic(kNodeTopology).value()).dump();
  std::vector<std::shared_ptr<bench::LaunchChannel>> channels;
  std::vector<NodeId> ids;
  auto t0 = Steady::now();
  LOOM_TRY(batched(core, nodes, batch, [&](std::size_t i) -> Status {
    v1::RegisterRequest hello;
    hello.set_name("node" + std::to_string(i));
    hello.set_topology_json(topology);
    channels.push_back(std::make_shared<bench::LaunchChannel>());
    ids.push_back(LOOM_TRY(core.agent_joined(hello, channels.back())));
    return {};
  }));
  out.join_s = seconds_since(t0);

  std::mt19937 rng(42);
  const Caller user{1001, "loom-alice", false, 1001};
  for (std::size_t done = 0; done < jobs; done += round) {
    t0 = Steady::now();
    LOOM_TRY(batched(core, std::min(round, jobs - done), batch, [&](std::size_t) -> Status {
      v1::SubmitRequest request;
      v1::JobSpec* spec = request.mutable_spec();
      spec->set_name("bench");
      spec->set_tasks(1 + rng() % 4);
      spec->set_cpus_per_task(1 + rng() % 2);
      spec->set_walltime_s(3600);
      spec->add_argv("/bin/true");
      LOOM_TRY(core.submit(user, request));
      return {};
    }));
    out.submit_s += seconds_since(t0);
    t0 = Steady::now();
    LOOM_TRY(batched(core, 1, 1, [&](std::size_t) { return core.tick(); }));
    const double pass = seconds_since(t0);
    out.pass_s += pass;
    out.passes_ms.push_back(pass * 1e3);
    t0 = Steady::now();
    // What the agents report: each launched job's start, then its end.
    std::vector<std::pair<NodeId, std::uint64_t>> launched;
    for (std::size_t i = 0; i < channels.size(); ++i) {
      for (std::uint64_t job : std::exchange(channels[i]->launched, {}))
        launched.emplace_back(ids[i], job);
    }
    LOOM_TRY(batched(core, launched.size() * 2, batch, [&](std::size_t k) -> Status {
      const auto& [node, job] = launched[k / 2];
      v1::FromAgent message;
      if (k % 2 == 0) {
        message.mutable_started()->set_job(job);
      } else {
        message.mutable_ended()->set_job(job);
      }
      core.agent_message(node, message);
      return {};
    }));
    out.jobs += launched.size();
    out.retire_s += seconds_since(t0);
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    out.store_bytes += entry.is_regular_file() ? entry.file_size() : 0;
  std::filesystem::remove_all(dir);
  return out;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"controller_bench: the controller's core alone, on a fake clock"};
  bool json_out = false;
  std::size_t nodes = 10000, jobs = 100000, round = 1000, batch = 256;
  std::string dir = "/var/tmp";
  app.add_flag("--json", json_out, "One JSON object instead of the table");
  app.add_option("--nodes", nodes, "Nodes that join")->capture_default_str();
  app.add_option("--jobs", jobs, "Jobs submitted, scheduled and retired")->capture_default_str();
  app.add_option("--round", round, "Submissions between two passes")->capture_default_str();
  app.add_option("--batch", batch, "Events stored in one transaction")->capture_default_str();
  app.add_option("--dir", dir, "Where the on-disk store goes")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (round == 0) round = 1;
  if (batch == 0) batch = 1;
  spdlog::set_level(spdlog::level::warn);  // a line per node joining is not the measure

  const std::string stamp = std::to_string(::getpid());
  nlohmann::json results = nlohmann::json::array();
  if (!json_out) {
    std::printf(
        "controller_bench: %zu nodes (%s), %zu jobs in rounds of %zu; release build, one thread, "
        "fake clock\n",
        nodes, kNodeTopology, jobs, round);
    std::printf("%-7s %6s %9s %11s %11s %11s %9s %12s %10s %9s\n", "store", "batch", "joins/s",
                "submits/s", "scheduled/s", "retired/s", "jobs/s", "pass p50 ms", "pass max",
                "store MB");
  }
  struct Config {
    std::string label, base;
    std::size_t batch;
  };
  const std::vector<Config> configs = {{"sqlite", dir, 1},
                                       {"sqlite", dir, batch},
                                       {"tmpfs", "/dev/shm", 1},
                                       {"tmpfs", "/dev/shm", batch}};
  for (const Config& c : configs) {
    auto result = run(c.label, std::filesystem::path(c.base) / ("loom-controller-bench." + stamp),
                      nodes, jobs, round, c.batch);
    if (!result) {
      std::fprintf(stderr, "controller_bench: %s\n", result.error().to_string().c_str());
      return 1;
    }
    const Run& r = *result;
    const auto n = static_cast<double>(r.jobs);
    const double total = r.submit_s + r.pass_s + r.retire_s;
    const double pass_max = *std::ranges::max_element(r.passes_ms);
    results.push_back({{"store", r.store},
                       {"batch", r.batch},
                       {"joins_per_s", static_cast<double>(nodes) / r.join_s},
                       {"submits_per_s", n / r.submit_s},
                       {"scheduled_per_s", n / r.pass_s},
                       {"retired_per_s", n / r.retire_s},
                       {"jobs_per_s", n / total},
                       {"pass_p50_ms", median(r.passes_ms)},
                       {"pass_max_ms", pass_max},
                       {"jobs", r.jobs},
                       {"store_bytes", r.store_bytes}});
    if (!json_out) {
      std::printf("%-7s %6zu %9.0f %11.0f %11.0f %11.0f %9.0f %12.2f %10.2f %9.1f\n",
                  r.store.c_str(), r.batch, static_cast<double>(nodes) / r.join_s, n / r.submit_s,
                  n / r.pass_s, n / r.retire_s, n / total, median(r.passes_ms), pass_max,
                  static_cast<double>(r.store_bytes) / 1e6);
      std::fflush(stdout);
    }
  }
  if (json_out) {
    std::cout << nlohmann::json{{"benchmark", "controller_bench"},
                                {"node_topology", kNodeTopology},
                                {"nodes", nodes},
                                {"jobs", jobs},
                                {"round", round},
                                {"batch", batch},
                                {"results", results}}
                     .dump(2)
              << '\n';
  }
  return 0;
}
