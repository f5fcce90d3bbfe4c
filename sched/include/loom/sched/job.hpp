// What a user asks for: a job's spec, and the normalised request the placer works on.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "loom/common/bytes.hpp"
#include "loom/common/error.hpp"
#include "loom/common/ids.hpp"

namespace loom::sched {

enum class DependencyKind {
  kAfterOk,   // start after the job COMPLETED with exit status 0
  kAfterAny,  // start after the job ended, however it ended
};

struct Dependency {
  DependencyKind kind = DependencyKind::kAfterOk;
  JobId job;
  friend bool operator==(const Dependency&, const Dependency&) = default;
};

// A job as submitted. Zero means "not given" where the comment says so; validate()
// refuses a spec that does not make sense, naming the field as the CLI spells it.
struct JobSpec {
  std::string name;
  std::string user;
  std::string account;
  std::string qos;  // empty: "normal"
  unsigned tasks = 1;
  unsigned nodes_min = 0;       // 0: as few as the tasks fit on
  unsigned nodes_max = 0;       // 0: nodes_min when given, else no limit
  unsigned tasks_per_node = 0;  // 0: as many as fit
  unsigned cpus_per_task = 1;   // cores: a rank gets every PU of its cores
  Bytes mem_per_task;           // 0: no memory reserved
  Bytes bb_per_node;            // burst-buffer slice on each node; 0: none
  std::chrono::seconds walltime{0};
  int priority = 0;  // the user's own priority, higher first (multifactor order)
  std::vector<Dependency> dependencies;
  bool exclusive = false;    // whole nodes, shared with no other job
  bool spread_numa = false;  // a rank may take cores from several NUMA domains
  bool stages_in = false;    // the job stages files in: it needs a slice (--bb)
  bool stages_out = false;   // and out
  std::string node;          // the one node it must run on (its persistent buffer's); empty: any
};

// Field checks that need no cluster: positive counts, consistent node bounds, a walltime.
Status validate(const JobSpec& spec);

// The most jobs one array holds (`--array 1-N`, as Slurm's MaxArraySize bounds it). The CLI
// refuses more, and so does the controller, whoever sends the request.
constexpr std::uint32_t kMaxArraySize = 100'000;

// The longest walltime (as Slurm's MaxTime would bound it): a job's end must be a time the
// clocks can hold, and a year is past any allocation a centre grants.
constexpr std::chrono::seconds kMaxWalltime = std::chrono::days(365);

// The shape the placer works on, derived from a valid JobSpec.
struct Request {
  unsigned tasks = 1;
  unsigned cores_per_task = 1;
  std::uint64_t mem_per_task = 0;
  std::uint64_t bb_per_node = 0;
  unsigned nodes_min = 1;
  unsigned nodes_max = 1;
  // Ranks on each node when the spec fixes them; 0 when ranks are packed onto as few nodes
  // as they fit. With --tasks-per-node every node but the last gets that many; with
  // --nodes alone the tasks spread evenly, the first nodes taking one more (Slurm's block
  // distribution), and ranks_per_node is the larger count.
  unsigned ranks_per_node = 0;
  bool even_spread = false;
  bool exclusive = false;
  bool spread_numa = false;
  std::string node;  // the only node it may run on; empty: any
  // Nodes tried first, as they come (a requeued job's, where its slices may be kept); any
  // others when they do not hold it now.
  std::vector<NodeId> prefer;

  std::uint64_t total_cores() const { return std::uint64_t{tasks} * cores_per_task; }
};

Request make_request(const JobSpec& spec);

// Ranks on the i-th of the request's nodes, for a request with fixed ranks per node.
unsigned ranks_on_node(const Request& request, unsigned node_index);

}  // namespace loom::sched
