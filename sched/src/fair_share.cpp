#include "loom/sched/fair_share.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include "loom/common/error.hpp"

namespace loom::sched {

void FairShare::set_weight(const std::string& account, double weight) {
  LOOM_CHECK(weight > 0, "an account's weight must be positive");
  weights_[account] = weight;
}

void FairShare::set_weights(const std::map<std::string, double>& weights) {
  weights_.clear();
  for (const auto& [account, weight] : weights) set_weight(account, weight);
}

double FairShare::weight(std::string_view account) const {
  auto it = weights_.find(account);
  return it == weights_.end() ? 1.0 : it->second;
}

void FairShare::allocated(const std::string& account, Resources r) { allocations_[account] += r; }

void FairShare::unallocated(const std::string& account, Resources r) {
  Resources& a = allocations_[account];
  LOOM_CHECK(a.cores >= r.cores && a.memory >= r.memory && a.nvme >= r.nvme,
             "an account gave back more than it held");
  a.cores -= r.cores;
  a.memory -= r.memory;
  a.nvme -= r.nvme;
}

Resources FairShare::allocation(std::string_view account) const {
  auto it = allocations_.find(account);
  return it == allocations_.end() ? Resources{} : it->second;
}

void FairShare::set_half_life(std::chrono::seconds half_life) {
  LOOM_CHECK(half_life.count() > 0, "a fair-share half-life must be positive");
  half_life_ = half_life;
}

void FairShare::advance(std::chrono::sys_seconds now) {
  if (advanced_ && now <= *advanced_) return;
  const double elapsed = advanced_ ? static_cast<double>((now - *advanced_).count()) : 0.0;
  advanced_ = now;
  if (elapsed == 0) return;
  // What the past held keeps this much of its weight; the interval just gone the rest,
  // each account having held its allocation throughout.
  const double kept = std::exp2(-elapsed / static_cast<double>(half_life_.count()));
  for (auto& [account, average] : averages_) average *= kept;
  for (const auto& [account, held] : allocations_)
    averages_[account] += (1 - kept) * share_of(held);
}

std::map<std::string, double> FairShare::averages() const {
  return {averages_.begin(), averages_.end()};
}

void FairShare::restore(const std::map<std::string, double>& averages,
                        std::chrono::sys_seconds at) {
  averages_ = {averages.begin(), averages.end()};
  advanced_ = at;
}

double FairShare::average(std::string_view account) const {
  auto it = averages_.find(account);
  return it == averages_.end() ? 0.0 : it->second;
}

double FairShare::share_of(Resources held) const {
  auto share = [](std::uint64_t part, std::uint64_t total) {
    return total == 0 ? 0.0 : static_cast<double>(part) / static_cast<double>(total);
  };
  return std::max({share(held.cores, total_.cores), share(held.memory, total_.memory),
                   share(held.nvme, total_.nvme)});
}

double FairShare::dominant_share(std::string_view account) const {
  return share_of(allocation(account));
}

double FairShare::weighted_share(std::string_view account, Resources extra) const {
  Resources held = allocation(account);
  held += extra;
  return (share_of(held) + average(account)) / 2 / weight(account);
}

std::vector<std::string> FairShare::sort() const {
  std::set<std::string> names;
  for (const auto& [name, _] : allocations_) names.insert(name);
  for (const auto& [name, _] : weights_) names.insert(name);
  for (const auto& [name, _] : averages_) names.insert(name);
  std::vector<std::string> out(names.begin(), names.end());
  std::ranges::stable_sort(out, [&](const std::string& a, const std::string& b) {
    return weighted_share(a) < weighted_share(b);
  });
  return out;
}

}  // namespace loom::sched
