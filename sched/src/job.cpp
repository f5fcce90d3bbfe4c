#include "loom/sched/job.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "loom/common/duration.hpp"

namespace loom::sched {

namespace {

std::unexpected<Error> invalid(std::string message) {
  return make_error(ErrorCode::kInvalidArgument, std::move(message));
}

// a / b rounded up, in 64 bits: a + b - 1 passes 32 bits for counts near their largest.
unsigned ceil_div(unsigned a, unsigned b) {
  return static_cast<unsigned>((std::uint64_t{a} + b - 1) / b);
}

}  // namespace

Status validate(const JobSpec& spec) {
  if (spec.tasks == 0) return invalid("--ntasks must be at least 1");
  if (spec.cpus_per_task == 0) return invalid("--cpus-per-task must be at least 1");
  if (spec.walltime.count() <= 0) return invalid("--time must be a positive walltime");
  if (spec.walltime > kMaxWalltime) {
    return invalid(fmt::format("--time {}: at most {}", format_duration(spec.walltime),
                               format_duration(kMaxWalltime)));
  }
  if (spec.nodes_max != 0 && spec.nodes_min > spec.nodes_max) {
    return invalid(fmt::format("--nodes {}-{}: the minimum exceeds the maximum", spec.nodes_min,
                               spec.nodes_max));
  }
  if (spec.nodes_min > spec.tasks) {
    return invalid(fmt::format("--nodes {} exceeds --ntasks {}: every node needs a task",
                               spec.nodes_min, spec.tasks));
  }
  if (spec.tasks_per_node != 0) {
    const unsigned needed = ceil_div(spec.tasks, spec.tasks_per_node);
    if (needed < spec.nodes_min || (spec.nodes_max != 0 && needed > spec.nodes_max)) {
      return invalid(
          fmt::format("--ntasks {} at --tasks-per-node {} needs {} nodes, outside --nodes {}-{}",
                      spec.tasks, spec.tasks_per_node, needed, spec.nodes_min,
                      spec.nodes_max != 0 ? spec.nodes_max : spec.tasks));
    }
  }
  for (const Dependency& d : spec.dependencies) {
    if (d.job.value() == 0) return invalid("--dependency names job 0, which cannot exist");
  }
  if (!spec.node.empty() &&
      (spec.nodes_min > 1 || (spec.tasks_per_node != 0 && spec.tasks > spec.tasks_per_node))) {
    return invalid(
        "--bb-persistent: the job runs on its buffer's node, so it must fit on one node");
  }
  if (spec.bb_per_node.count() == 0 && spec.stages_in) {
    return invalid("--stage-in needs --bb: staged files land in the job's burst-buffer slice");
  }
  if (spec.bb_per_node.count() == 0 && spec.stages_out) {
    return invalid("--stage-out needs --bb: staged files leave from the job's burst-buffer slice");
  }
  return {};
}

Request make_request(const JobSpec& spec) {
  Request r;
  r.tasks = spec.tasks;
  r.cores_per_task = spec.cpus_per_task;
  r.mem_per_task = spec.mem_per_task.count();
  r.bb_per_node = spec.bb_per_node.count();
  r.exclusive = spec.exclusive;
  r.spread_numa = spec.spread_numa;
  r.node = spec.node;
  if (spec.tasks_per_node != 0) {
    r.ranks_per_node = spec.tasks_per_node;
    r.nodes_min = r.nodes_max = ceil_div(spec.tasks, spec.tasks_per_node);
  } else if (spec.nodes_min != 0) {
    // Slurm's -N without --ntasks-per-node: the tasks spread evenly over exactly that many.
    r.nodes_min = r.nodes_max = spec.nodes_min;
    r.ranks_per_node = ceil_div(spec.tasks, spec.nodes_min);
    r.even_spread = true;
  } else {
    r.nodes_min = 1;
    r.nodes_max = !spec.node.empty() ? 1 : spec.nodes_max != 0 ? spec.nodes_max : spec.tasks;
  }
  return r;
}

unsigned ranks_on_node(const Request& r, unsigned i) {
  if (r.even_spread) return r.tasks / r.nodes_min + (i < r.tasks % r.nodes_min ? 1 : 0);
  return std::min(r.ranks_per_node, r.tasks - i * r.ranks_per_node);
}

}  // namespace loom::sched
