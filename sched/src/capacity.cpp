#include "loom/sched/capacity.hpp"

#include <algorithm>
#include <type_traits>

namespace loom::sched {

namespace {

bool has_room(const NodeCapacity& free, const Request& r) {
  if (free.held_exclusive || (r.exclusive && !free.idle())) return false;
  return r.bb_per_node == 0 || std::ranges::any_of(free.nvme, [&](std::uint64_t bytes) {
           return bytes >= r.bb_per_node;
         });
}

// Ranks that stay in one domain: each domain holds min(cores / c, memory / m) of them,
// filled in domain order. Counts only when the domains are const, takes otherwise.
template <typename Domains>
unsigned fill_domains(Domains& domains, const Request& r, unsigned wanted) {
  unsigned placed = 0;
  for (auto& d : domains) {
    if (placed == wanted) break;
    const std::uint64_t by_cores = d.cores / r.cores_per_task;
    const std::uint64_t by_memory = r.mem_per_task == 0 ? by_cores : d.memory / r.mem_per_task;
    const auto here = static_cast<unsigned>(std::min<std::uint64_t>(
        {by_cores, by_memory, static_cast<unsigned long>(wanted - placed)}));
    if constexpr (!std::is_const_v<Domains>) {
      d.cores -= here * r.cores_per_task;
      d.memory -= here * r.mem_per_task;
    }
    placed += here;
  }
  return placed;
}

// Ranks spread across domains take cores in domain order; each reserves its memory on the
// domain that gave it the most cores. Not a closed form, so simulated on `domains`.
unsigned fill_spread(std::vector<DomainCapacity>& domains, const Request& r, unsigned wanted) {
  std::size_t first = 0;
  unsigned placed = 0;
  while (placed < wanted) {
    while (first < domains.size() && domains[first].cores == 0) ++first;
    unsigned need = r.cores_per_task, best_taken = 0;
    std::size_t best = domains.size();
    for (std::size_t d = first; d < domains.size() && need > 0; ++d) {
      const unsigned taken = std::min(need, domains[d].cores);
      if (taken > best_taken) {
        best = d;
        best_taken = taken;
      }
      need -= taken;
    }
    if (need > 0 || best == domains.size() || domains[best].memory < r.mem_per_task) break;
    need = r.cores_per_task;
    for (std::size_t d = first; need > 0; ++d) {
      const unsigned taken = std::min(need, domains[d].cores);
      domains[d].cores -= taken;
      need -= taken;
    }
    domains[best].memory -= r.mem_per_task;
    ++placed;
  }
  return placed;
}

}  // namespace

unsigned ranks_fit(const NodeCapacity& free, const Request& r, unsigned wanted) {
  if (!has_room(free, r)) return 0;
  if (!r.spread_numa) return fill_domains(free.domains, r, wanted);  // the hot path: no copy
  std::vector<DomainCapacity> scratch = free.domains;
  return fill_spread(scratch, r, wanted);
}

unsigned take_ranks(NodeCapacity& free, const Request& r, unsigned wanted) {
  if (!has_room(free, r)) return 0;
  const unsigned placed =
      r.spread_numa ? fill_spread(free.domains, r, wanted) : fill_domains(free.domains, r, wanted);
  if (placed == 0) return 0;
  if (r.bb_per_node > 0) {
    // The placer picks the device local to most ranks; for planning any with room will do.
    *std::ranges::find_if(free.nvme, [&](std::uint64_t bytes) { return bytes >= r.bb_per_node; }) -=
        r.bb_per_node;
  }
  ++free.allocations;
  if (r.exclusive) free.held_exclusive = true;
  return placed;
}

}  // namespace loom::sched
