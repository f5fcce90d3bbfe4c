// Nodes that can take work, bucketed by their number of free cores, so that placement
// starts at the nodes with just enough room (best fit) and never looks at full ones.
// Within a bucket nodes come in id order, which keeps placements reproducible.
#pragma once

#include <cstdint>
#include <set>
#include <vector>

namespace loom::sched {

class FreeCoreIndex {
 public:
  // Registers the next node id; it enters a bucket at its first update().
  void add(unsigned total_cores) {
    entries_.push_back({});
    if (total_cores + 1 > buckets_.size()) buckets_.resize(total_cores + 1);
  }

  // eligible: up and not held by an exclusive job.
  void update(std::uint32_t node, unsigned free_cores, bool eligible) {
    Entry& e = entries_[node];
    if (e.present) {
      buckets_[e.free_cores].erase(node);
      free_cores_ -= e.free_cores;
    }
    e.present = eligible;
    e.free_cores = free_cores;
    if (eligible) {
      buckets_[free_cores].insert(node);
      free_cores_ += free_cores;
    }
  }

  // Free cores over eligible nodes.
  std::uint64_t free_cores() const { return free_cores_; }

  // Calls visit(node) for eligible nodes with at least min_free free cores, fewest first,
  // until it returns false.
  template <typename Visit>
  void for_each_from(std::uint64_t min_free, Visit visit) const {
    for (std::size_t b = min_free; b < buckets_.size(); ++b) {
      for (std::uint32_t node : buckets_[b]) {
        if (!visit(node)) return;
      }
    }
  }

  // The same, most free cores first.
  template <typename Visit>
  void for_each_descending(std::uint64_t min_free, Visit visit) const {
    for (std::size_t b = buckets_.size(); b-- > min_free;) {
      for (std::uint32_t node : buckets_[b]) {
        if (!visit(node)) return;
      }
    }
  }

 private:
  struct Entry {
    unsigned free_cores = 0;
    bool present = false;
  };
  std::vector<std::set<std::uint32_t>> buckets_;
  std::vector<Entry> entries_;
  std::uint64_t free_cores_ = 0;
};

}  // namespace loom::sched
