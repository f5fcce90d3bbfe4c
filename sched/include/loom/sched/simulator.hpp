// Replays a workload trace through the scheduler on a simulated cluster, in simulated time.
// The same Scheduler, Cluster and policies as the controller runs; only the clock and the
// job runtimes come from the trace.
#pragma once

#include <cstddef>
#include <string>

#include "loom/common/config.hpp"
#include "loom/common/error.hpp"
#include "loom/sched/swf.hpp"

namespace loom::sched {

struct SimOptions {
  Config::Scheduler scheduler;  // order, backfill and priority weights, as loomctld's
  unsigned cores_per_node = 1;
  // Every window of `window` consecutive jobs starting every `stride` jobs is replayed from
  // an empty machine and the metrics are their averages; 0 replays the whole trace once.
  std::size_t window = 0;
  std::size_t stride = 0;
  // Arrivals scaled so that the offered load is this (a trace recorded on a quiet machine
  // replayed as a busy one, as the literature compresses traces); 0 replays them as recorded.
  double load = 0;
};

struct SimMetrics {
  std::size_t jobs = 0;     // jobs replayed (summed over windows)
  std::size_t skipped = 0;  // trace jobs without a size or run time, or larger than the machine
  std::size_t windows = 1;
  std::size_t nodes = 0;
  unsigned cores_per_node = 0;
  double utilization = 0;  // busy core-seconds / (cores x makespan)
  double avg_wait_s = 0;
  double avg_bsld = 0;  // bounded slowdown, tau = 10 s: max(1, (wait + run) / max(run, 10))
  double max_wait_s = 0;
  double makespan_s = 0;  // last end - first submit
  // The work offered over the span of arrivals, as replayed: sum(run x cores) /
  // (machine's cores x (last submit - first submit)).
  double offered_load = 0;
  // Runs cut short by preemption (SRTF), summed over windows: each ran again from its start,
  // and the time it had run is lost (utilization counts the runs that completed).
  std::size_t preempted = 0;
};

// Processors map to cores. The machine has MaxProcs cores from the header, else MaxNodes x
// cores_per_node, in nodes of cores_per_node cores. A job's request is its requested
// processors and time, falling back to what it was allocated and its run time.
Result<SimMetrics> simulate(const SwfTrace& trace, const SimOptions& options);

}  // namespace loom::sched
