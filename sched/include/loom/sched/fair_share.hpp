// Dominant resource fairness across accounts, as Mesos' DRF sorter does it
// (src/master/allocator/mesos/sorter/drf/sorter.hpp): an account's share of a resource is
// what it holds over the cluster's total; its dominant share is the largest of those, over
// cores, memory and NVMe bytes; divided by the account's weight it orders who goes next.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace loom::sched {

struct Resources {
  std::uint64_t cores = 0;
  std::uint64_t memory = 0;
  std::uint64_t nvme = 0;
};

class FairShare {
 public:
  // The cluster's totals; a zero total makes that resource count for nothing.
  void set_total(Resources total) { total_ = total; }

  // Accounts not given a weight weigh 1.
  void set_weight(const std::string& account, double weight);
  double weight(const std::string& account) const;

  void allocated(const std::string& account, Resources resources);
  void unallocated(const std::string& account, Resources resources);
  Resources allocation(const std::string& account) const;

  // max over resources of held / total: the account's dominant share, in [0, 1].
  double dominant_share(const std::string& account) const;
  // dominant_share / weight: lower goes first.
  double weighted_share(const std::string& account) const;

  // Accounts holding anything or weighted, lowest weighted share first; ties by name.
  std::vector<std::string> sort() const;

 private:
  Resources total_;
  std::map<std::string, Resources> allocations_;
  std::map<std::string, double> weights_;
};

}  // namespace loom::sched
