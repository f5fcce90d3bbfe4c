// Dominant resource fairness across accounts, as Mesos' DRF sorter does it
// (src/master/allocator/mesos/sorter/drf/sorter.hpp): an account's share of a resource is
// what it holds over the cluster's total; its dominant share is the largest of those, over
// cores, memory and NVMe bytes.
//
// What an account holds now is only half of its use: an account that held the cluster
// all morning should not tie with one that held nothing. So, as Slurm's fair share decays
// usage (PriorityDecayHalfLife), each account also has a decayed average of its dominant
// share over the past, in which a moment `half_life` ago weighs half as much as now. Its
// fair-share usage is the mean of the two (equal to what it holds, for an account that
// has held it steadily); divided by the account's weight (its shares), it orders who goes
// next.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace loom::sched {

struct Resources {
  std::uint64_t cores = 0;
  std::uint64_t memory = 0;
  std::uint64_t nvme = 0;

  Resources& operator+=(const Resources& more) {
    cores += more.cores;
    memory += more.memory;
    nvme += more.nvme;
    return *this;
  }
};

class FairShare {
 public:
  // The cluster's totals; a zero total makes that resource count for nothing.
  void set_total(Resources total) { total_ = total; }

  // Accounts not given a weight weigh 1. set_weights replaces them all.
  void set_weight(const std::string& account, double weight);
  void set_weights(const std::map<std::string, double>& weights);
  double weight(std::string_view account) const;

  void allocated(const std::string& account, Resources resources);
  void unallocated(const std::string& account, Resources resources);
  Resources allocation(std::string_view account) const;

  // The averages' half-life; the averages are kept (a SIGHUP's new policy).
  void set_half_life(std::chrono::seconds half_life);
  // Brings the averages to `now`, each account having held what it holds since the last
  // call: called before allocations change. A time before the last is ignored.
  void advance(std::chrono::sys_seconds now);
  // An account's decayed average dominant share, in [0, 1].
  double average(std::string_view account) const;
  // Every account's, and as of when: what a restarted controller takes back with restore(),
  // so that usage outlives it.
  std::map<std::string, double> averages() const;
  std::optional<std::chrono::sys_seconds> advanced() const { return advanced_; }
  void restore(const std::map<std::string, double>& averages, std::chrono::sys_seconds at);

  // max over resources of held / total: the account's dominant share, in [0, 1].
  double dominant_share(std::string_view account) const;
  // (dominant share + average) / 2 / weight: lower goes first. With `extra`, as if it held
  // that too (the order projects a pass's starts).
  double weighted_share(std::string_view account, Resources extra = {}) const;

  // Accounts holding anything or weighted, lowest weighted share first; ties by name.
  std::vector<std::string> sort() const;

 private:
  double share_of(Resources held) const;

  Resources total_;
  // Transparent: the order looks accounts up by the string_view its jobs' specs give.
  std::map<std::string, Resources, std::less<>> allocations_;
  std::map<std::string, double, std::less<>> weights_;
  std::map<std::string, double, std::less<>> averages_;
  std::chrono::seconds half_life_{std::chrono::hours(24 * 7)};
  std::optional<std::chrono::sys_seconds> advanced_;
};

}  // namespace loom::sched
