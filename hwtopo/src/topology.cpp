#include "loom/hwtopo/topology.hpp"

namespace loom::hwtopo {

std::size_t Topology::pu_count() const {
  std::size_t count = 0;
  for (const Core& core : cores) count += core.pus.size();
  return count;
}

std::uint64_t Topology::memory_bytes() const {
  std::uint64_t total = 0;
  for (const NumaDomain& domain : numa_domains) total += domain.memory_bytes;
  return total;
}

const NumaDomain* Topology::find_numa(unsigned os_index) const {
  for (const NumaDomain& domain : numa_domains) {
    if (domain.os_index == os_index) return &domain;
  }
  return nullptr;
}

}  // namespace loom::hwtopo
