// sched_bench: how fast Loom's scheduler places jobs on large clusters.
//
// For clusters of 1,000, 10,000 and 50,000 nodes (each: 2 packages x 2 NUMA domains x 32
// cores, 2 PUs per core, 128 GiB per domain = 512 GiB, two 3.5 TiB NVMe devices, one on
// domain 0 and one on domain 2) it replays a queue of 100,000 jobs of mixed shapes and
// reports:
//   placements/s, p50 and p99 latency of one decision (Cluster::place + allocate, the
//   work the scheduler does per started job; when the cluster is full the oldest jobs
//   are released, untimed, until the next job fits);
//   the time of one scheduling pass on a full cluster, with 1,000 and with 10,000 jobs
//   pending (--pending), under FCFS with EASY backfill (the baseline), fair share over 8
//   accounts of shares 1 to 8 with EASY, and FCFS with conservative backfill, unlimited
//   (1,000 pending only) and planning the first 100 blocked jobs (backfill_depth);
//   the peak RSS of the process (sizes run in ascending order, so each figure is that
//   size's peak).
// Baseline, measured in the same run on the 1,000 and 10,000 node clusters (first 20,000
// jobs): the same decisions preceded by a look at every node's free capacity, the least a
// placer without Loom's free-core index does per decision.
//
//   sched_bench [--json] [--sizes 1000,10000,50000] [--jobs 100000] [--pending 10000]
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <deque>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "loom/common/index_list.hpp"
#include "loom/hwtopo/load.hpp"
#include "loom/sched/scheduler.hpp"

namespace {

using namespace loom;
using namespace loom::sched;
using Clock = std::chrono::steady_clock;

constexpr const char* kNodeTopology = "pack:2 numa:2(memory=128GiB) core:32 pu:2";

Cluster make_cluster(std::size_t nodes) {
  auto topology =
      std::make_shared<const hwtopo::Topology>(hwtopo::load_synthetic(kNodeTopology).value());
  const std::uint64_t nvme = 3584ull << 30;  // 3.5 TiB
  Cluster cluster;
  for (std::size_t i = 0; i < nodes; ++i) {
    cluster.add_node(
        {"node" + std::to_string(i), topology, {{"nvme0", 0, nvme}, {"nvme1", 2, nvme}}});
  }
  return cluster;
}

// Mixed shapes: serial and small threaded jobs, MPI jobs packed or per node, a few wide
// exclusive runs, some with burst buffers.
std::vector<JobSpec> make_jobs(std::size_t count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  auto pick = [&](unsigned n) { return static_cast<unsigned>(rng() % n); };
  std::vector<JobSpec> jobs;
  jobs.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    JobSpec spec;
    const unsigned kind = pick(100);
    if (kind < 45) {  // serial or threaded
      spec.tasks = 1 + pick(4);
      spec.cpus_per_task = 1u << pick(4);
      spec.mem_per_task = Bytes((1 + pick(16)) * (1ull << 30));
    } else if (kind < 80) {  // MPI, packed
      spec.tasks = 16u << pick(5);
      spec.cpus_per_task = 1 + pick(2);
      spec.mem_per_task = Bytes((1 + pick(4)) * (1ull << 30));
    } else if (kind < 95) {  // MPI, ranks per node
      spec.tasks_per_node = 32u << pick(2);
      spec.tasks = spec.tasks_per_node * (1 + pick(16));
      spec.mem_per_task = Bytes(2ull << 30);
    } else {  // wide, whole nodes
      spec.exclusive = true;
      spec.tasks_per_node = 128;
      spec.tasks = 128 * (1 + pick(8));
    }
    if (pick(10) == 0) spec.bb_per_node = Bytes((1 + pick(8)) * (128ull << 30));
    spec.walltime = std::chrono::minutes(10 + pick(24 * 60));
    spec.account = "acct" + std::to_string(pick(8));
    jobs.push_back(std::move(spec));
  }
  return jobs;
}

double percentile(std::vector<double> samples, double p) {
  if (samples.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(samples.size() - 1));
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(k),
                   samples.end());
  return samples[k];
}

struct PlacementRun {
  std::size_t placed = 0;
  double seconds = 0;
  std::vector<double> latencies_us;
};

// Places every job in turn; a job that does not fit releases the oldest running ones.
template <typename Place>
PlacementRun place_all(Cluster& cluster, const std::vector<Request>& requests, Place place) {
  PlacementRun run;
  run.latencies_us.reserve(requests.size());
  std::deque<Placement> running;
  for (const Request& r : requests) {
    for (;;) {
      const auto t0 = Clock::now();
      std::optional<Placement> p = place(cluster, r);
      if (p) cluster.allocate(*p);
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      if (p) {
        run.latencies_us.push_back(us);
        run.seconds += us / 1e6;
        ++run.placed;
        running.push_back(std::move(*p));
        break;
      }
      if (running.empty()) break;  // cannot fit even an empty cluster
      cluster.release(running.front());
      running.pop_front();
    }
  }
  for (const Placement& p : running) cluster.release(p);
  return run;
}

// Baseline: a placer without an index looks at every node's free capacity for each
// decision; this does that look (ranks_fit on every node) and then places as usual, so it
// is a lower bound on the cost of such a placer.
std::optional<Placement> scan_place(const Cluster& cluster, const Request& r) {
  const unsigned per_node = r.ranks_per_node != 0 ? r.ranks_per_node : r.tasks;
  std::size_t fitting = 0;
  for (std::size_t i = 0; i < cluster.size(); ++i) {
    if (ranks_fit(cluster.free(NodeId(static_cast<NodeId::rep>(i))), r, per_node) > 0) ++fitting;
  }
  if (fitting == 0) return std::nullopt;
  return cluster.place(r);
}

// The policies a pass is timed under; each job is charged to one of 8 accounts.
struct Policy {
  const char* name;
  SchedulerOptions (*make)();
  bool long_queues = true;  // timed with --pending jobs too, not 1,000 only
};
const std::array<Policy, 4> kPolicies = {{
    {"fcfs+easy", [] { return SchedulerOptions(make_fcfs_order(), make_easy_backfill()); }},
    {"fairshare+easy",
     [] {
       SchedulerOptions options(make_fair_share_order(), make_easy_backfill());
       for (unsigned a = 1; a <= 8; ++a) {
         Config::Account account;
         account.name = "acct" + std::to_string(a);
         account.shares = a;
         options.accounts.push_back(account);
       }
       return options;
     }},
    // Unlimited, a pass costs about the square of the claims on a node: minutes at 10,000
    // pending. Slurm's bf_max_job_test bounds it, as backfill_depth does.
    {"fcfs+conservative",
     [] { return SchedulerOptions(make_fcfs_order(), make_conservative_backfill()); }, false},
    {"fcfs+conservative/100",
     [] { return SchedulerOptions(make_fcfs_order(), make_conservative_backfill(100)); }},
}};

double pass_seconds(std::size_t nodes, const Policy& policy, const std::vector<JobSpec>& jobs,
                    std::size_t pending, std::size_t& pending_measured) {
  Cluster cluster = make_cluster(nodes);
  Scheduler scheduler(cluster, policy.make());
  const Time now{std::chrono::seconds(0)};
  std::size_t next = 0;
  std::uint64_t id = 1;
  auto submit = [&] {
    JobSpec spec = jobs[next % jobs.size()];
    spec.account = "acct" + std::to_string(1 + next++ % 8);
    (void)scheduler.submit(JobId(id++), std::move(spec), now);
  };
  // Fill the cluster: submit in chunks until a pass leaves jobs waiting.
  while (scheduler.pending_count() == 0) {
    for (std::size_t k = 0; k < 1000; ++k) submit();
    scheduler.schedule(now);
  }
  while (scheduler.pending_count() < pending) submit();
  pending_measured = scheduler.pending_count();
  const auto t0 = Clock::now();
  scheduler.schedule(now);
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  bool json_out = false;
  std::vector<unsigned> sizes = {1000, 10000, 50000};
  std::size_t job_count = 100000, pending = 10000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      json_out = true;
    } else if (arg == "--sizes" && i + 1 < argc) {
      auto parsed = parse_index_list(argv[++i]);
      if (!parsed) {
        std::fprintf(stderr, "sched_bench: --sizes: %s\n", parsed.error().message().c_str());
        return 2;
      }
      sizes = *parsed;
    } else if (arg == "--jobs" && i + 1 < argc) {
      job_count = std::stoul(argv[++i]);
    } else if (arg == "--pending" && i + 1 < argc) {
      pending = std::stoul(argv[++i]);
    } else {
      std::fprintf(
          stderr,
          "usage: sched_bench [--json] [--sizes 1000,10000,50000] [--jobs N] [--pending N]\n");
      return 2;
    }
  }
  const std::vector<JobSpec> jobs = make_jobs(job_count, 42);
  std::vector<Request> requests;
  requests.reserve(jobs.size());
  for (const JobSpec& spec : jobs) requests.push_back(make_request(spec));

  nlohmann::json results = nlohmann::json::array();
  if (!json_out) {
    std::printf(
        "sched_bench: %zu jobs of mixed shapes; nodes %s, 512 GiB, 2 x 3.5 TiB NVMe; release "
        "build, one thread\n",
        job_count, kNodeTopology);
    std::printf("%8s %14s %9s %9s %14s %9s %12s %16s\n", "nodes", "placements/s", "p50 us",
                "p99 us", "backfill s", "pending", "peak RSS MB", "scan baseline/s");
  }
  for (unsigned size : sizes) {
    Cluster cluster = make_cluster(size);
    // Warm-up: one pass over the first jobs, so that caches and the allocator are warm.
    place_all(
        cluster,
        std::vector<Request>(requests.begin(), requests.begin() + std::min<std::ptrdiff_t>(
                                                                      2000, std::ssize(requests))),
        [](const Cluster& c, const Request& r) { return c.place(r); });
    PlacementRun indexed =
        place_all(cluster, requests, [](const Cluster& c, const Request& r) { return c.place(r); });
    double scan_rate = 0;
    if (size <= 10000) {
      Cluster baseline = make_cluster(size);
      const std::ptrdiff_t n = std::min<std::ptrdiff_t>(std::ssize(requests), 20000);
      PlacementRun scan = place_all(
          baseline, std::vector<Request>(requests.begin(), requests.begin() + n), scan_place);
      scan_rate = static_cast<double>(scan.placed) / scan.seconds;
    }
    std::size_t pending_measured = 0;
    const double backfill = pass_seconds(size, kPolicies[0], jobs, pending, pending_measured);
    nlohmann::json passes = nlohmann::json::array();
    for (const Policy& policy : kPolicies) {
      std::vector<std::size_t> queues{std::min<std::size_t>(1000, pending)};
      if (policy.long_queues && pending > 1000) queues.push_back(pending);
      for (std::size_t queued : queues) {
        std::size_t measured = 0;
        const double seconds = pass_seconds(size, policy, jobs, queued, measured);
        passes.push_back({{"policy", policy.name}, {"pending", measured}, {"pass_s", seconds}});
      }
    }
    const double rate = static_cast<double>(indexed.placed) / indexed.seconds;
    const double p50 = percentile(indexed.latencies_us, 0.50);
    const double p99 = percentile(indexed.latencies_us, 0.99);
    const double rss = peak_rss_mb();
    results.push_back({{"nodes", size},
                       {"placements_per_s", rate},
                       {"p50_us", p50},
                       {"p99_us", p99},
                       {"backfill_pass_s", backfill},
                       {"pending_in_pass", pending_measured},
                       {"peak_rss_mb", rss},
                       {"placed", indexed.placed},
                       {"passes", passes},
                       {"baseline_scan_placements_per_s",
                        scan_rate == 0 ? nlohmann::json(nullptr) : nlohmann::json(scan_rate)}});
    if (!json_out) {
      std::printf("%8u %14.0f %9.1f %9.1f %14.4f %9zu %12.0f %16s\n", size, rate, p50, p99,
                  backfill, pending_measured, rss,
                  scan_rate == 0 ? "-" : std::to_string(static_cast<long>(scan_rate)).c_str());
      for (const nlohmann::json& pass : passes) {
        std::printf("%8s   pass, %-18s %6zu pending: %.4f s\n", "",
                    pass["policy"].get<std::string>().c_str(), pass["pending"].get<std::size_t>(),
                    pass["pass_s"].get<double>());
      }
      std::fflush(stdout);
    }
  }
  if (json_out) {
    nlohmann::json out = {{"benchmark", "sched_bench"},
                          {"node_topology", kNodeTopology},
                          {"jobs", job_count},
                          {"pending", pending},
                          {"results", results}};
    std::cout << out.dump(2) << '\n';
  }
  return 0;
}
