// A node's free resources as counts: what placement and reservations reason about. Cores
// within a NUMA domain are interchangeable, so counts decide whether a shape fits exactly;
// only the final placement picks core numbers.
#pragma once

#include <cstdint>
#include <vector>

#include "loom/sched/job.hpp"

namespace loom::sched {

struct DomainCapacity {
  unsigned cores = 0;
  std::uint64_t memory = 0;
  friend bool operator==(const DomainCapacity&, const DomainCapacity&) = default;
};

struct NodeCapacity {
  std::vector<DomainCapacity> domains;  // the node's domains with cores, ascending OS index
  std::vector<std::uint64_t> nvme;      // free bytes per NVMe device
  unsigned allocations = 0;             // jobs holding something here
  bool held_exclusive = false;          // an exclusive job holds the whole node

  bool idle() const { return allocations == 0; }

  friend bool operator==(const NodeCapacity&, const NodeCapacity&) = default;
};

// How many ranks of the request fit on a node with this capacity, at most `wanted`.
// Ranks fill domain by domain; a rank's cores and memory come from one domain unless the
// request spreads across domains. The slice needs one NVMe device with the bytes free.
unsigned ranks_fit(const NodeCapacity& free, const Request& request, unsigned wanted);

// Takes up to `wanted` ranks from `free` as ranks_fit counts them (and the slice from the
// first NVMe device with room), for planning on counts; returns how many it took.
unsigned take_ranks(NodeCapacity& free, const Request& request, unsigned wanted);

}  // namespace loom::sched
