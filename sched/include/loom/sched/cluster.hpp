// The cluster as the scheduler sees it: nodes built from hwtopo topologies, their state,
// and what is free on each, down to core bitsets per NUMA domain.
//
// Single-threaded, like the scheduler that owns it. place() is a pure function of the
// request and the current state; allocate() and release() are the only mutations of free
// resources, and they keep an index over free cores so that placement looks at the nodes
// that can hold a request, not at every node.
//
// More than the usual fifteen public methods: most read one node's facts (its name,
// topology, devices, free and total capacity), asked of the cluster rather than of a node
// object handed out, so that nothing but allocate() and release() changes what is free.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/common/ids.hpp"
#include "loom/hwtopo/topology.hpp"
#include "loom/sched/capacity.hpp"
#include "loom/sched/job.hpp"
#include "loom/sched/placement.hpp"

namespace loom::sched {

enum class NodeState {
  kUp,     // takes new jobs
  kDrain,  // runs what it has, takes nothing new
  kDown,   // runs nothing
};
std::string_view to_string(NodeState state);

struct NvmeDevice {
  std::string name;              // a path or device name, as the agent reports it
  std::optional<unsigned> numa;  // OS index of the domain it is local to
  std::uint64_t capacity_bytes = 0;
};

struct NodeSpec {
  std::string name;
  std::shared_ptr<const hwtopo::Topology> topology;  // shared: thousands of nodes alike
  std::vector<NvmeDevice> nvme;
};

class Cluster {
 public:
  Cluster();
  ~Cluster();
  Cluster(Cluster&&) noexcept;
  Cluster& operator=(Cluster&&) noexcept;

  NodeId add_node(NodeSpec spec);
  std::size_t size() const;
  Status set_state(NodeId node, NodeState state);
  NodeState state(NodeId node) const;
  const std::string& name(NodeId node) const;
  std::optional<NodeId> find(std::string_view name) const;
  const hwtopo::Topology& topology(NodeId node) const;
  std::span<const NvmeDevice> nvme(NodeId node) const;
  const NodeCapacity& free(NodeId node) const;
  const NodeCapacity& total(NodeId node) const;
  // Logical indexes of the free cores in the node's i-th domain with cores.
  std::vector<unsigned> free_cores(NodeId node, std::size_t domain) const;

  // Cores, memory and NVMe bytes over the whole cluster (every node, whatever its state).
  std::uint64_t total_cores() const;
  std::uint64_t total_memory() const;
  std::uint64_t total_nvme() const;

  // Refuses a request that could never run here, even on an empty cluster, with the reason:
  // "cpus-per-task 80 exceeds the largest NUMA domain (64 cores); ask for --spread-numa ..."
  Status check_feasible(const Request& request) const;

  // Where the request fits now, on nodes that are up; nullopt when it does not fit.
  // Nodes are chosen best-fit (the fewest free cores that hold the node's ranks) so that
  // small jobs fill partly used nodes and leave empty ones for large jobs.
  std::optional<Placement> place(const Request& request) const;

  // Capacity arithmetic for planning (reservations, what-ifs): `capacity` of the node with
  // the placement's resources taken, or given back. allocate() and release() do the same
  // to the node's free capacity, and to its core bitsets.
  void take(NodeCapacity& capacity, const NodePlacement& placement) const;
  void give_back(NodeCapacity& capacity, const NodePlacement& placement) const;

  // Takes and gives back what a placement holds. A placement that does not match the free
  // state (a core given twice) is a bug: LOOM_CHECK.
  void allocate(const Placement& placement);
  void release(const Placement& placement);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace loom::sched
