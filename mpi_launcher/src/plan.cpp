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

// Ranks that share PUs (a simulated node mapped onto fewer real ones) must not busy-poll:
// Open MPI counts its slots, not PUs, and spinning ranks starve the rank they wait for (16
// ranks on 2 PUs stalled for minutes without this).
bool ranks_share_pus(const std::vector<RankBinding>& ranks) {
  std::set<unsigned> pus;
  std::size_t bound = 0;
  for (const RankBinding& r : ranks) {
    pus.insert(r.pus.begin(), r.pus.end());
    bound += r.pus.size();
  }
  return bound > pus.size();
}

// The union of the ranks' PUs, and their NUMA node when they share one.
RankBinding union_of(const std::vector<RankBinding>& ranks) {
  std::set<unsigned> pus;
  std::set<std::optional<unsigned>> numas;
  for (const RankBinding& r : ranks) {
    pus.insert(r.pus.begin(), r.pus.end());
    numas.insert(r.numa);
  }
  return {ranks.front().rank,
          {pus.begin(), pus.end()},
          numas.size() == 1 ? *numas.begin() : std::nullopt};
}

// An MPI job's process on this node, in one cgroup holding all the node's ranks (their
// PUs and memory), each rank bound by loom-rank to its own placement: mpirun on the
// job's first node; on the others Open MPI's daemon, whose command line mpirun sends
// later through loom-rsh, so its argv is left empty here.
TaskPlan mpi_task(const v1::Launch& launch, const std::vector<RankBinding>& ranks,
                  const std::vector<std::string>& command,
                  const std::map<std::string, std::string>& storage, const NodeFacts& node) {
  std::uint64_t memory = 0;
  for (const v1::Rank& rank : launch.ranks()) memory += rank.memory_bytes();
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
  if (ranks_share_pus(ranks)) t.environment["OMPI_MCA_mpi_yield_when_idle"] = "1";
  // A file per rank (%t): opened by loom-rank; mpirun's and orted's own messages go to
  // the node's first rank's.
  const v1::JobSpec& spec = launch.spec();
  if (spec.stdout_path().find("%t") != std::string::npos ||
      spec.stderr_path().find("%t") != std::string::npos) {
    t.environment["LOOM_RANK_OUTPUT"] = output_path(spec.stdout_path(), JobId(launch.job()), node);
    t.environment["LOOM_RANK_ERROR"] = output_path(spec.stderr_path(), JobId(launch.job()), node);
  }
  t.environment.erase("LOOM_RANK");  // each rank's, set by loom-rank
  t.binding = union_of(ranks);
  t.memory_limit = memory;
  return t;
}

// --mpi=pmix on this node: the PMIx server, and the namespace it registers. The server
// shares the ranks' PUs (it works only while they wait on it) and writes its own messages
// to the node's first rank's error file; its directory is this node's own in the job's
// shared-memory directory, which the testbed's hosts share.
Result<TaskPlan> pmix_server(const v1::Launch& launch, const std::vector<RankBinding>& ranks,
                             const std::map<std::string, std::string>& storage,
                             const NodeFacts& node, v1::PmixJob& job) {
  job.set_nspace(fmt::format("loom.{}", launch.job()));
  std::uint32_t first = 0;
  for (const v1::JobNode& n : launch.nodes()) {
    v1::PmixNode* out = job.add_nodes();
    out->set_name(n.name());
    out->set_first_rank(first);
    out->set_ranks(n.ranks());
    first += n.ranks();
  }
  job.set_node_index(launch.node_index());
  if (launch.node_index() >= static_cast<std::uint32_t>(job.nodes_size()))
    return make_error(ErrorCode::kInvalidArgument, "the node is not in the job's node list");
  const v1::PmixNode& here = job.nodes(static_cast<int>(launch.node_index()));
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    // PMIx's process map gives each node a block of ranks, as Loom places them.
    if (ranks[i].rank != here.first_rank() + i || ranks.size() != here.ranks()) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("the node's ranks are not ranks {} to {} of its node list",
                                    here.first_rank(), here.first_rank() + here.ranks() - 1));
    }
    v1::PmixRank* rank = job.add_local();
    rank->set_rank(ranks[i].rank);
    for (unsigned pu : ranks[i].pus) rank->add_cpus(pu);
  }
  const auto session = storage.find("OMPI_MCA_orte_tmpdir_base");  // set for every MPI job
  if (session == storage.end())
    return make_error(ErrorCode::kInvalidArgument, "the MPI job has no session directory");
  job.set_tmpdir(fmt::format("{}/pmix.{}", session->second, node.name));

  TaskPlan t =
      task_for(launch, ranks.front().rank, {node.launcher_dir + "/loom-pmix"}, storage, node);
  t.cgroup_name = fmt::format("{}/pmix", job_cgroup(node.agent_cgroup, JobId(launch.job())));
  t.stdout_path = t.stderr_path;
  t.binding = union_of(ranks);
  return t;
}

}  // namespace

std::optional<v1::MpiLaunch> mpi_launch(const v1::JobSpec& spec) {
  if (!spec.mpi()) return std::nullopt;
  return spec.mpi_launch() == v1::MPI_LAUNCH_PMIX ? v1::MPI_LAUNCH_PMIX : v1::MPI_LAUNCH_MPIRUN;
}

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
  const std::optional<v1::MpiLaunch> mpi = mpi_launch(spec);
  if (mpi == v1::MPI_LAUNCH_MPIRUN) {
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
    if (mpi) {
      // Open MPI 4 takes a process that its own daemons did not start for a singleton unless
      // its schizo/orte component is left out (Open MPI 5 has none, and ignores this).
      t.environment["OMPI_MCA_schizo"] = "^orte";
      if (ranks_share_pus(bindings)) t.environment["OMPI_MCA_mpi_yield_when_idle"] = "1";
    }
    plan.tasks.push_back(std::move(t));
  }
  if (mpi) {
    if (launch.nodes_size() != 1) {
      return make_error(ErrorCode::kUnimplemented,
                        "--mpi=pmix serves jobs of one node so far: use --mpi=mpirun");
    }
    plan.pmix_server = LOOM_TRY(pmix_server(launch, bindings, storage, node, plan.pmix_job));
  }
  return plan;
}

}  // namespace loom::launch
