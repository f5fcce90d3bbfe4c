#include "loom/launch/plan.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <set>

namespace loom::launch {

namespace {

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (std::size_t at = text.find(from); at != std::string::npos;
       at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// An output file's name with the job's id (%j) and the node's name (%N); a rank's own
// (%t) is left for the caller, or for loom-rank.
std::string output_path(const std::string& pattern, JobId job, const NodeFacts& node) {
  return replace_all(replace_all(pattern, "%j", std::to_string(job.value())), "%N", node.name);
}

// A task as any rank of the job gets it; the caller adds its command's specifics.
TaskPlan task_for(const v1::Launch& launch, unsigned rank, std::vector<std::string> argv,
                  const std::map<std::string, std::string>& storage, const NodeFacts& node) {
  const JobId id(launch.job());
  const v1::JobSpec& spec = launch.spec();
  TaskPlan t;
  t.rank = rank;
  t.cgroup_name = fmt::format("{}/rank_{}", job_cgroup(node.agent_cgroup, id), rank);
  t.argv = std::move(argv);
  t.environment.insert(spec.environment().begin(), spec.environment().end());
  for (const auto& [name, value] : storage) t.environment[name] = value;
  t.environment["LOOM_JOB_ID"] = std::to_string(id.value());
  t.environment["LOOM_RANK"] = std::to_string(rank);
  t.environment["LOOM_NTASKS"] = std::to_string(spec.tasks());
  t.environment["LOOM_NODELIST"] = nodelist(job_nodes(launch));
  if (launch.array_job() != 0) {
    t.environment["LOOM_ARRAY_JOB_ID"] = std::to_string(launch.array_job());
    t.environment["LOOM_ARRAY_INDEX"] = std::to_string(launch.array_index());
  }
  t.chdir = spec.chdir();
  const std::string r = std::to_string(rank);
  t.stdout_path = replace_all(output_path(spec.stdout_path(), id, node), "%t", r);
  t.stderr_path = replace_all(output_path(spec.stderr_path(), id, node), "%t", r);
  t.uid = launch.uid();
  t.umask = spec.has_umask() ? spec.umask() & 0777 : 022;
  return t;
}

// An MPI job's process on this node, in one cgroup holding all the node's ranks (their
// PUs and memory), each rank bound by loom-rank to its own placement: mpirun on the
// job's first node; on the others Open MPI's daemon, whose command line mpirun sends
// later through loom-rsh, so its argv is left empty here.
TaskPlan mpi_task(const v1::Launch& launch, const std::vector<RankBinding>& ranks,
                  const std::vector<std::string>& command,
                  const std::map<std::string, std::string>& storage, const NodeFacts& node) {
  std::set<unsigned> pus;
  std::set<std::optional<unsigned>> numas;
  std::uint64_t memory = 0;
  for (int i = 0; i < launch.ranks_size(); ++i) {
    pus.insert(ranks[i].pus.begin(), ranks[i].pus.end());
    numas.insert(ranks[i].numa);
    memory += launch.ranks(i).memory_bytes();
  }
  const std::vector<NodeRanks> nodes = job_nodes(launch);
  std::vector<std::string> argv;
  if (launch.node_index() == 0) {
    // Open MPI decides that a host is local by its name: the first is this machine's.
    std::vector<NodeRanks> hosts = nodes;
    hosts.front().node = node.hostname;
    const bool spans = nodes.size() > 1;
    MpiPlan plan{hosts, node.launcher_dir + "/loom-rank",
                 spans ? node.launcher_dir + "/loom-rsh" : "", spans ? node.mpi_network : "",
                 command};
    argv = mpirun_argv(plan);
  }
  TaskPlan t = task_for(launch, ranks.front().rank, std::move(argv), storage, node);
  t.environment["LOOM_RANK_BINDING"] = encode_bindings(ranks);
  t.environment["LOOM_CONTROLLER"] = node.controller;  // for loom-rsh
  if (!node.tls_ca.empty()) t.environment["LOOM_TLS_CA"] = node.tls_ca;
  // Ranks that share PUs (a simulated node mapped onto fewer real ones) must not
  // busy-poll: Open MPI counts its slots, not PUs, and spinning ranks starve the rank
  // they wait for (16 ranks on 2 PUs stalled for minutes without this).
  std::size_t bound = 0;
  for (const RankBinding& r : ranks) bound += r.pus.size();
  if (bound > pus.size()) t.environment["OMPI_MCA_mpi_yield_when_idle"] = "1";
  // A file per rank (%t): opened by loom-rank; mpirun's and orted's own messages go to
  // the node's first rank's.
  const v1::JobSpec& spec = launch.spec();
  if (spec.stdout_path().find("%t") != std::string::npos ||
      spec.stderr_path().find("%t") != std::string::npos) {
    t.environment["LOOM_RANK_OUTPUT"] = output_path(spec.stdout_path(), JobId(launch.job()), node);
    t.environment["LOOM_RANK_ERROR"] = output_path(spec.stderr_path(), JobId(launch.job()), node);
  }
  t.environment.erase("LOOM_RANK");  // each rank's, set by loom-rank
  t.binding = {ranks.front().rank,
               {pus.begin(), pus.end()},
               numas.size() == 1 ? *numas.begin() : std::nullopt};
  t.memory_limit = memory;
  return t;
}

}  // namespace

std::string job_cgroup(const std::string& agent_cgroup, JobId job) {
  return fmt::format("{}/job_{}", agent_cgroup, job.value());
}

std::vector<NodeRanks> job_nodes(const v1::Launch& launch) {
  std::vector<NodeRanks> nodes;
  for (const v1::JobNode& n : launch.nodes()) nodes.push_back({n.name(), n.ranks()});
  return nodes;
}

Result<LaunchPlan> plan_launch(const v1::Launch& launch, const std::vector<RankBinding>& bindings,
                               const std::map<std::string, std::string>& storage,
                               const NodeFacts& node) {
  if (launch.ranks_size() == 0)
    return make_error(ErrorCode::kInvalidArgument, "the job has no rank on this node");
  if (bindings.size() != static_cast<std::size_t>(launch.ranks_size())) {
    return make_error(
        ErrorCode::kInvalidArgument,
        fmt::format("{} bindings for {} ranks", bindings.size(), launch.ranks_size()));
  }
  const v1::JobSpec& spec = launch.spec();
  const std::vector<std::string> command =
      spec.script().empty() ? std::vector<std::string>(spec.argv().begin(), spec.argv().end())
                            : std::vector<std::string>{"/bin/sh", "-c", spec.script()};
  LaunchPlan plan;
  if (spec.mpi()) {
    if (launch.nodes_size() == 0)
      return make_error(ErrorCode::kInvalidArgument, "an MPI job with no node list");
    TaskPlan task = mpi_task(launch, bindings, command, storage, node);
    if (launch.node_index() > 0) {
      plan.daemon = std::move(task);
    } else {
      plan.tasks.push_back(std::move(task));
    }
    return plan;
  }
  for (int i = 0; i < launch.ranks_size(); ++i) {
    TaskPlan t = task_for(launch, launch.ranks(i).rank(), command, storage, node);
    t.memory_limit = launch.ranks(i).memory_bytes();
    t.binding = bindings[i];
    t.environment["LOOM_RANK_CORES"] = fmt::format("{}", fmt::join(bindings[i].pus, ","));
    plan.tasks.push_back(std::move(t));
  }
  return plan;
}

}  // namespace loom::launch
