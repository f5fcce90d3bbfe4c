// The scheduler tests' clusters: synthetic nodes of one domain, and their clock.
#pragma once

#include <fmt/format.h>

#include "loom/hwtopo/load.hpp"
#include "loom/sched/cluster.hpp"
#include "loom/sched/order.hpp"

namespace loom::sched::testing {

inline Time at(std::int64_t seconds) { return Time(std::chrono::seconds(seconds)); }

// `nodes` nodes n0, n1, ... of one domain with `cores` cores each, and each an NVMe device
// of `nvme` bytes when it is not 0.
inline Cluster uniform_cluster(unsigned nodes, unsigned cores, std::uint64_t nvme = 0) {
  auto topology = std::make_shared<const hwtopo::Topology>(
      hwtopo::load_synthetic(fmt::format("pack:1 core:{} pu:1", cores)).value());
  std::vector<NvmeDevice> devices;
  if (nvme > 0) devices.push_back({"/nvme", std::nullopt, nvme});
  Cluster cluster;
  for (unsigned i = 0; i < nodes; ++i) cluster.add_node({fmt::format("n{}", i), topology, devices});
  return cluster;
}

}  // namespace loom::sched::testing
