// Where a job runs: per node, per rank, the cores, the NUMA domain for its memory and the
// bytes reserved; per node, the NVMe device and the slice bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "loom/common/ids.hpp"

namespace loom::sched {

struct RankPlacement {
  unsigned rank = 0;
  std::vector<unsigned> cores;  // logical core indexes on the node, ascending
  unsigned numa = 0;            // OS index of the domain its memory is reserved on
  std::uint64_t memory_bytes = 0;

  friend bool operator==(const RankPlacement&, const RankPlacement&) = default;
};

struct NodePlacement {
  NodeId node;
  std::vector<RankPlacement> ranks;
  std::optional<unsigned> nvme;  // index into the node's NVMe devices; none when no slice
  std::uint64_t bb_bytes = 0;
  bool exclusive = false;  // the whole node is the job's

  friend bool operator==(const NodePlacement&, const NodePlacement&) = default;
};

struct Placement {
  std::vector<NodePlacement> nodes;  // in rank order: node 0 holds the first ranks

  friend bool operator==(const Placement&, const Placement&) = default;
};

}  // namespace loom::sched
