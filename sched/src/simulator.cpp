#include "loom/sched/simulator.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <queue>

#include "loom/sched/configured.hpp"
#include "loom/sched/scheduler.hpp"

namespace loom::sched {

namespace {

struct SimJob {
  std::int64_t submit;
  std::int64_t run;  // as it will run: the trace's run time, cut at its walltime
  std::int64_t walltime;
  unsigned procs;
};

struct WindowMetrics {
  double utilization, avg_wait, avg_bsld, max_wait, makespan;
  std::size_t preempted;
};

std::shared_ptr<const hwtopo::Topology> uniform_node(unsigned cores) {
  auto t = std::make_shared<hwtopo::Topology>();
  t->source = fmt::format("simulated:{} cores", cores);
  t->packages = 1;
  hwtopo::NumaDomain domain;
  domain.os_index = 0;
  domain.package = 0;
  domain.kind = "DRAM";
  for (unsigned c = 0; c < cores; ++c) {
    t->cores.push_back({c, 0, 0, {c}});
    domain.cores.push_back(c);
    domain.pus.push_back(c);
  }
  t->numa_domains.push_back(std::move(domain));
  return t;
}

Result<WindowMetrics> replay(std::span<const SimJob> jobs, std::size_t nodes,
                             unsigned cores_per_node, const SimOptions& options) {
  Cluster cluster;
  auto topology = uniform_node(cores_per_node);
  for (std::size_t i = 0; i < nodes; ++i) cluster.add_node({fmt::format("sim{}", i), topology, {}});
  Scheduler scheduler(cluster, LOOM_TRY(scheduler_options(options.scheduler)));

  // End time, job, and which of its runs: a preempted job's end is forgotten by the run
  // number moving on, not by searching the queue.
  using Event = std::tuple<std::int64_t, JobId, unsigned>;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> ends;
  std::vector<std::int64_t> start(jobs.size(), -1);
  std::vector<unsigned> runs(jobs.size(), 0);
  std::size_t preempted = 0;
  std::size_t next = 0;
  auto at = [](std::int64_t seconds) { return Time(std::chrono::seconds(seconds)); };
  while (next < jobs.size() || !ends.empty()) {
    std::int64_t now = next < jobs.size() ? jobs[next].submit : std::get<0>(ends.top());
    if (!ends.empty()) now = std::min(now, std::get<0>(ends.top()));
    while (!ends.empty() && std::get<0>(ends.top()) == now) {
      const auto [end, id, run] = ends.top();
      ends.pop();
      if (run == runs[id.value() - 1]) scheduler.finished(id, JobEnd::kCompleted, at(now));
    }
    while (next < jobs.size() && jobs[next].submit == now) {
      JobSpec spec;
      spec.tasks = jobs[next].procs;
      spec.walltime = std::chrono::seconds(jobs[next].walltime);
      LOOM_TRY(scheduler.submit(JobId(next + 1), std::move(spec), at(now)));
      ++next;
    }
    // A preempted job is killed at once and queued again as it was submitted; the job that
    // preempted it starts in the next pass, at the same time.
    for (bool again = true; again;) {
      PassResult pass = scheduler.schedule(at(now));
      for (const Started& s : pass.started) {
        const std::size_t i = s.id.value() - 1;
        start[i] = now;
        ends.emplace(now + jobs[i].run, s.id, ++runs[i]);
      }
      for (const Preemption& p : pass.preempted) {
        const std::size_t i = p.victim.value() - 1;
        ++runs[i];
        scheduler.requeue(p.victim, at(jobs[i].submit));
      }
      preempted += pass.preempted.size();
      again = !pass.preempted.empty();
    }
  }

  WindowMetrics m{};
  double busy = 0, wait_sum = 0, bsld_sum = 0;
  std::int64_t first_submit = jobs.front().submit, last_end = 0;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    LOOM_CHECK(start[i] >= 0, "a simulated job never started");
    const auto wait = static_cast<double>(start[i] - jobs[i].submit);
    const auto run = static_cast<double>(jobs[i].run);
    busy += run * jobs[i].procs;
    wait_sum += wait;
    bsld_sum += std::max(1.0, (wait + run) / std::max(run, 10.0));
    m.max_wait = std::max(m.max_wait, wait);
    first_submit = std::min(first_submit, jobs[i].submit);
    last_end = std::max(last_end, start[i] + jobs[i].run);
  }
  m.makespan = static_cast<double>(last_end - first_submit);
  m.utilization =
      m.makespan > 0 ? busy / (static_cast<double>(nodes) * cores_per_node * m.makespan) : 0;
  m.avg_wait = wait_sum / static_cast<double>(jobs.size());
  m.avg_bsld = bsld_sum / static_cast<double>(jobs.size());
  m.preempted = preempted;
  return m;
}

}  // namespace

Result<SimMetrics> simulate(const SwfTrace& trace, const SimOptions& options) {
  auto invalid = [](std::string message) {
    return make_error(ErrorCode::kInvalidArgument, std::move(message));
  };
  if (options.cores_per_node == 0) return invalid("--cores-per-node must be at least 1");
  std::int64_t cores = 0;
  if (trace.max_procs && *trace.max_procs > 0) {
    cores = *trace.max_procs;
  } else if (trace.max_nodes && *trace.max_nodes > 0) {
    cores = *trace.max_nodes * options.cores_per_node;
  } else {
    return invalid(
        "the trace's header gives neither MaxProcs nor MaxNodes: the machine size is unknown");
  }
  const std::size_t nodes = static_cast<std::size_t>(cores) / options.cores_per_node;
  if (nodes == 0)
    return invalid(fmt::format("--cores-per-node {} exceeds the machine's {} cores",
                               options.cores_per_node, cores));

  SimMetrics metrics;
  metrics.nodes = nodes;
  metrics.cores_per_node = options.cores_per_node;
  std::vector<SimJob> jobs;
  for (const SwfJob& j : trace.jobs) {
    const std::int64_t procs = j.requested > 0 ? j.requested : j.allocated;
    if (procs <= 0 || j.run < 0 ||
        procs > static_cast<std::int64_t>(nodes * options.cores_per_node)) {
      ++metrics.skipped;
      continue;
    }
    const std::int64_t walltime =
        std::max<std::int64_t>(1, j.requested_time > 0 ? j.requested_time : j.run);
    jobs.push_back({j.submit, std::min(j.run, walltime), walltime, static_cast<unsigned>(procs)});
  }
  std::ranges::stable_sort(jobs,
                           [](const SimJob& a, const SimJob& b) { return a.submit < b.submit; });
  if (jobs.empty()) return invalid("the trace has no job to replay");
  if (options.load < 0) return invalid("--load must be positive (0: as recorded)");
  auto offered = [&] {
    double work = 0;
    for (const SimJob& j : jobs) work += static_cast<double>(j.run) * j.procs;
    const auto span = static_cast<double>(jobs.back().submit - jobs.front().submit);
    return span > 0 ? work / (static_cast<double>(nodes * options.cores_per_node) * span) : 0;
  };
  if (options.load > 0) {
    const double recorded = offered();
    if (recorded == 0) return invalid("--load: the trace's jobs arrive at one instant");
    const double stretch = recorded / options.load;
    const std::int64_t first = jobs.front().submit;
    for (SimJob& j : jobs) {
      j.submit = first + static_cast<std::int64_t>(static_cast<double>(j.submit - first) * stretch);
    }
  }
  metrics.offered_load = offered();

  const std::size_t window = options.window == 0 ? jobs.size() : options.window;
  const std::size_t stride = options.stride == 0 ? window : options.stride;
  if (window > jobs.size())
    return invalid(fmt::format("--window {} exceeds the trace's {} jobs", window, jobs.size()));
  std::vector<WindowMetrics> results;
  for (std::size_t first = 0; first + window <= jobs.size(); first += stride) {
    WindowMetrics result = LOOM_TRY(
        replay(std::span(jobs).subspan(first, window), nodes, options.cores_per_node, options));
    results.push_back(result);
    metrics.jobs += window;
  }
  metrics.windows = results.size();
  for (const WindowMetrics& w : results) {
    metrics.utilization += w.utilization / static_cast<double>(results.size());
    metrics.avg_wait_s += w.avg_wait / static_cast<double>(results.size());
    metrics.avg_bsld += w.avg_bsld / static_cast<double>(results.size());
    metrics.max_wait_s += w.max_wait / static_cast<double>(results.size());
    metrics.makespan_s += w.makespan / static_cast<double>(results.size());
    metrics.preempted += w.preempted;
  }
  return metrics;
}

}  // namespace loom::sched
