#include "job_spec.hpp"

#include <fmt/format.h>

#include <array>

#include "loom/burstbuffer/staging_spec.hpp"
#include "loom/common/bytes.hpp"
#include "loom/controller/job_manager.hpp"

namespace loom::controller {

// What one job may carry at most, whoever sends it (the CLI is not the only client): each
// repeated field and the larger strings, so that no submission makes a job's record, or a
// listing of jobs, too large to store or send. docs/user-guide.md lists them.
Status check_bounds(const v1::JobSpec& spec) {
  struct Bound {
    std::string_view field;
    std::size_t size, most;
    std::string_view unit;
  };
  const auto bounds = std::to_array<Bound>({
      {"argv", static_cast<std::size_t>(spec.argv_size()), 4096, "words"},
      {"environment", spec.environment().size(), 4096, "variables"},
      {"stage_in", static_cast<std::size_t>(spec.stage_in_files_size()), 256, "entries"},
      {"stage_out", static_cast<std::size_t>(spec.stage_out_files_size()), 256, "entries"},
      {"dependencies", static_cast<std::size_t>(spec.dependencies_size()), 1024, "jobs"},
      {"name", spec.name().size(), 1024, "bytes"},
      {"script", spec.script().size(), std::size_t{1} << 20, "bytes"},
  });
  for (const Bound& b : bounds) {
    if (b.size > b.most) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("{}: {} {}, at most {}", b.field, b.size, b.unit, b.most));
    }
  }
  return {};
}

Result<sched::JobSpec> to_sched_spec(const v1::JobSpec& in) {
  sched::JobSpec out;
  out.name = in.name();
  out.user = in.user();
  out.account = in.account();
  out.qos = in.qos();
  out.tasks = in.tasks();
  out.nodes_min = in.nodes_min();
  out.nodes_max = in.nodes_max();
  out.tasks_per_node = in.tasks_per_node();
  out.cpus_per_task = in.cpus_per_task();
  out.mem_per_task = Bytes(in.mem_per_task());
  out.bb_per_node = Bytes(in.bb_per_node());
  out.walltime = std::chrono::seconds(in.walltime_s());
  out.priority = in.priority();
  out.exclusive = in.exclusive();
  out.spread_numa = in.spread_numa();
  out.stages_in = in.stage_in_files_size() > 0;
  out.stages_out = in.stage_out_files_size() > 0;
  for (const v1::Dependency& d : in.dependencies()) {
    out.dependencies.push_back({d.kind() == v1::Dependency::AFTER_OK
                                    ? sched::DependencyKind::kAfterOk
                                    : sched::DependencyKind::kAfterAny,
                                JobId(d.job())});
  }
  if (in.argv().empty())
    return make_error(ErrorCode::kInvalidArgument, "nothing to run: the job has no command");
  if (in.argv(0).empty())
    return make_error(ErrorCode::kInvalidArgument, "nothing to run: the command is \"\"");
  LOOM_TRY(burstbuffer::check_staging(in));
  LOOM_TRY(sched::validate(out));
  return out;
}

}  // namespace loom::controller
