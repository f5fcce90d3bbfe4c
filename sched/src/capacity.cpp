#include "loom/sched/capacity.hpp"

#include <algorithm>
#include <limits>

namespace loom::sched {

unsigned ranks_fit(const NodeCapacity& free, const Request& r, unsigned wanted) {
  if (free.held_exclusive || (r.exclusive && !free.idle())) return 0;
  if (r.bb_per_node > 0 &&
      std::none_of(free.nvme.begin(), free.nvme.end(),
                   [&](std::uint64_t bytes) { return bytes >= r.bb_per_node; })) {
    return 0;
  }
  const std::uint64_t mem = r.mem_per_task;
  if (!r.spread_numa) {
    std::uint64_t fit = 0;
    for (const DomainCapacity& d : free.domains) {
      std::uint64_t by_cores = d.cores / r.cores_per_task;
      std::uint64_t by_memory = mem == 0 ? by_cores : d.memory / mem;
      fit += std::min(by_cores, by_memory);
      if (fit >= wanted) return wanted;
    }
    return static_cast<unsigned>(fit);
  }
  // Spread ranks take cores in domain order across domains; each reserves its memory on the
  // domain that gave it the most cores. Simulate, since that is not a closed form.
  std::vector<DomainCapacity> left = free.domains;
  std::size_t domain = 0;
  unsigned fit = 0;
  while (fit < wanted) {
    unsigned need = r.cores_per_task;
    std::size_t best = left.size();
    unsigned best_taken = 0;
    std::size_t d = domain;
    for (; d < left.size() && need > 0; ++d) {
      const unsigned taken = std::min(need, left[d].cores);
      if (taken > best_taken) {
        best = d;
        best_taken = taken;
      }
      need -= taken;
    }
    if (need > 0 || best == left.size() || left[best].memory < mem) break;
    need = r.cores_per_task;
    for (d = domain; need > 0; ++d) {
      const unsigned taken = std::min(need, left[d].cores);
      left[d].cores -= taken;
      need -= taken;
    }
    left[best].memory -= mem;
    while (domain < left.size() && left[domain].cores == 0) ++domain;
    ++fit;
  }
  return fit;
}

}  // namespace loom::sched
