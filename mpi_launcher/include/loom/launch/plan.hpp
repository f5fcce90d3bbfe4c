// What an agent starts for a job on its node, decided from the job's launch alone: per
// task its command, environment, binding, cgroup, limits and files. A pure function, so
// that what a job gets is tested without starting a process; the agent adds what is its
// own (the keeper, the status file, its limits) and starts the plan's tasks.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/common/ids.hpp"
#include "loom/launch/mpi.hpp"
#include "loom/proto/agent.pb.h"
#include "loom/proto/pmix.pb.h"

namespace loom::launch {

// What the agent knows of its node, and a plan uses.
struct NodeFacts {
  std::string name;          // the node's name in Loom: an output file's %N
  std::string hostname;      // this machine's: mpirun's own host
  std::string agent_cgroup;  // the agent's level under loom/
  std::string launcher_dir;  // where loom-rank and loom-rsh are
  std::string mpi_network;   // the data plane's IPv4 network; "": Open MPI chooses
  std::string controller;    // the controller's address, for loom-rsh
  std::string tls_ca;        // the cluster's CA (tls.ca), for loom-rsh; "": plain
};

struct TaskPlan {
  unsigned rank = 0;  // the rank it is (an MPI job's process: the node's first rank)
  std::string cgroup_name;
  std::vector<std::string> argv;  // empty: Open MPI's daemon, whose command comes later
  std::map<std::string, std::string> environment;  // exactly what the task sees
  std::string chdir;
  std::string stdout_path, stderr_path;
  uid_t uid = 0;
  mode_t umask = 022;
  RankBinding binding;             // for an MPI job's process: the union of its ranks'
  std::uint64_t memory_limit = 0;  // bytes; 0: none
};

struct LaunchPlan {
  std::vector<TaskPlan> tasks;     // started at once (after the PMIx server, with one)
  std::optional<TaskPlan> daemon;  // an MPI job's node other than its first: started when
                                   // mpirun asks for it through loom-rsh
  // --mpi=pmix: the job's PMIx server on this node (loom-pmix), started first and sent
  // `pmix_job`; each task then starts with the PMIx environment it answers for its rank.
  std::optional<TaskPlan> pmix_server;
  v1::PmixJob pmix_job;
};

// How an MPI job's ranks start; nullopt for a job that is not one. A spec without a mode
// (stored before there were two) means mpirun, as it did then.
std::optional<v1::MpiLaunch> mpi_launch(const v1::JobSpec& spec);

// The job's level under loom/: its tasks' cgroups are leaves under it (rank_<r>).
std::string job_cgroup(const std::string& agent_cgroup, JobId job);

// `bindings` are the ranks' of this node, in the order of launch.ranks(); `storage` what
// the job's storage sets (LOOM_BB_DIR, LOOM_STAGED_FILES, a persistent buffer's
// directory, Open MPI's session directory). Each rank is a task, bound as placed, and with
// --mpi=pmix served by the job's PMIx server; an MPI job with --mpi=mpirun is one task per
// node over all the node's ranks (mpirun on the first node, Open MPI's daemon on the
// others), its ranks bound by loom-rank.
Result<LaunchPlan> plan_launch(const v1::Launch& launch, const std::vector<RankBinding>& bindings,
                               const std::map<std::string, std::string>& storage,
                               const NodeFacts& node);

// The job's nodes with their ranks, in rank order.
std::vector<NodeRanks> job_nodes(const v1::Launch& launch);

}  // namespace loom::launch
