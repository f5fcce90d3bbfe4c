#include "loom/sched/fair_share.hpp"

#include <algorithm>
#include <set>

#include "loom/common/error.hpp"

namespace loom::sched {

void FairShare::set_weight(const std::string& account, double weight) {
  LOOM_CHECK(weight > 0, "an account's weight must be positive");
  weights_[account] = weight;
}

double FairShare::weight(const std::string& account) const {
  auto it = weights_.find(account);
  return it == weights_.end() ? 1.0 : it->second;
}

void FairShare::allocated(const std::string& account, Resources r) {
  Resources& a = allocations_[account];
  a.cores += r.cores;
  a.memory += r.memory;
  a.nvme += r.nvme;
}

void FairShare::unallocated(const std::string& account, Resources r) {
  Resources& a = allocations_[account];
  LOOM_CHECK(a.cores >= r.cores && a.memory >= r.memory && a.nvme >= r.nvme,
             "an account gave back more than it held");
  a.cores -= r.cores;
  a.memory -= r.memory;
  a.nvme -= r.nvme;
}

Resources FairShare::allocation(const std::string& account) const {
  auto it = allocations_.find(account);
  return it == allocations_.end() ? Resources{} : it->second;
}

double FairShare::dominant_share(const std::string& account) const {
  const Resources a = allocation(account);
  auto share = [](std::uint64_t held, std::uint64_t total) {
    return total == 0 ? 0.0 : static_cast<double>(held) / static_cast<double>(total);
  };
  return std::max(
      {share(a.cores, total_.cores), share(a.memory, total_.memory), share(a.nvme, total_.nvme)});
}

double FairShare::weighted_share(const std::string& account) const {
  return dominant_share(account) / weight(account);
}

std::vector<std::string> FairShare::sort() const {
  std::set<std::string> names;
  for (const auto& [name, _] : allocations_) names.insert(name);
  for (const auto& [name, _] : weights_) names.insert(name);
  std::vector<std::string> out(names.begin(), names.end());
  std::ranges::stable_sort(out, [&](const std::string& a, const std::string& b) {
    return weighted_share(a) < weighted_share(b);
  });
  return out;
}

}  // namespace loom::sched
