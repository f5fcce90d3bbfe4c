#include "loom/hwtopo/binding.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "convert.hpp"
#include "hwloc_handle.hpp"
#include "loom/common/index_list.hpp"
#include "loom/hwtopo/apply_binding.hpp"

namespace loom::hwtopo {

struct Binder::State {
  detail::HwlocTopology live;
  Topology machine;
  std::optional<Topology> simulated;  // the placed topology, when it is not the machine

  const Topology& placed() const { return simulated ? *simulated : machine; }
};

namespace {

std::vector<unsigned> domain_indexes(const Topology& topology) {
  std::vector<unsigned> out;
  out.reserve(topology.numa_domains.size());
  for (const NumaDomain& d : topology.numa_domains) out.push_back(d.os_index);
  return out;
}

std::vector<unsigned> all_pus(const Topology& topology) {
  std::vector<unsigned> out;
  for (const Core& c : topology.cores) out.insert(out.end(), c.pus.begin(), c.pus.end());
  std::ranges::sort(out);
  return out;
}

}  // namespace

std::string Binding::describe() const {
  std::string text =
      fmt::format("cores {} (PUs {})", format_index_list(cores), format_index_list(pus));
  if (numa) text += fmt::format(" memory on NUMA {}", *numa);
  if (simulated) {
    text += fmt::format(" -> applied PUs {}", format_index_list(applied_pus));
    if (applied_numa) text += fmt::format(" memory on NUMA {}", *applied_numa);
  }
  return text;
}

Binder::Binder(std::unique_ptr<State> state) : state_(std::move(state)) {}
Binder::Binder(Binder&&) noexcept = default;
Binder& Binder::operator=(Binder&&) noexcept = default;
Binder::~Binder() = default;

Result<Binder> Binder::for_live_machine() {
  auto live = LOOM_TRY(detail::HwlocTopology::live());
  Topology machine = LOOM_TRY(detail::to_topology(live, "live"));
  return Binder(std::make_unique<State>(State{std::move(live), std::move(machine), std::nullopt}));
}

Result<Binder> Binder::for_simulated(Topology placed) {
  auto live = LOOM_TRY(detail::HwlocTopology::live());
  Topology machine = LOOM_TRY(detail::to_topology(live, "live"));
  Binder binder(
      std::make_unique<State>(State{std::move(live), std::move(machine), std::move(placed)}));
  spdlog::info("{}", binder.describe_mapping());
  return binder;
}

const Topology& Binder::placed() const { return state_->placed(); }
const Topology& Binder::machine() const { return state_->machine; }
bool Binder::simulated() const { return state_->simulated.has_value(); }

std::string Binder::describe_mapping() const {
  const Topology& m = state_->machine;
  if (!simulated()) {
    return fmt::format("binding on this machine: {} PUs, {} NUMA domains", m.pu_count(),
                       m.numa_domains.size());
  }
  const Topology& p = placed();
  return fmt::format(
      "simulated topology ({}) mapped onto this machine: placed PU k -> real PU #(k mod {}) of "
      "{{{}}}, placed NUMA n -> real NUMA #(n mod {}) of {{{}}}",
      p.source, m.pu_count(), format_index_list(all_pus(m)), m.numa_domains.size(),
      format_index_list(domain_indexes(m)));
}

Result<Binding> Binder::resolve(std::span<const unsigned> cores,
                                std::optional<unsigned> numa) const {
  const Topology& placed = this->placed();
  if (cores.empty()) return make_error(ErrorCode::kInvalidArgument, "no cores to bind to");
  Binding b;
  b.simulated = simulated();
  b.cores.assign(cores.begin(), cores.end());
  std::ranges::sort(b.cores);
  b.cores.erase(std::ranges::unique(b.cores).begin(), b.cores.end());
  for (unsigned core : b.cores) {
    if (core >= placed.cores.size()) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("core {} does not exist: this node has cores 0-{}", core,
                                    placed.cores.size() - 1));
    }
    const auto& pus = placed.cores[core].pus;
    b.pus.insert(b.pus.end(), pus.begin(), pus.end());
  }
  std::ranges::sort(b.pus);
  if (numa) {
    if (placed.find_numa(*numa) == nullptr) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("NUMA domain {} does not exist: this node has domains {}",
                                    *numa, format_index_list(domain_indexes(placed))));
    }
    b.numa = numa;
  }
  if (!b.simulated) {
    b.applied_pus = b.pus;
    b.applied_numa = b.numa;
    return b;
  }
  const std::vector<unsigned> real_pus = all_pus(state_->machine);
  for (unsigned pu : b.pus) b.applied_pus.push_back(real_pus[pu % real_pus.size()]);
  std::ranges::sort(b.applied_pus);
  b.applied_pus.erase(std::ranges::unique(b.applied_pus).begin(), b.applied_pus.end());
  if (numa) {
    const auto& domains = state_->machine.numa_domains;
    b.applied_numa = domains[*numa % domains.size()].os_index;
  }
  return b;
}

Status Binder::apply(const Binding& binding) const {
  if (const std::string failed = apply_binding(binding.applied_pus, binding.applied_numa);
      !failed.empty()) {
    return make_error(ErrorCode::kInternal, failed);
  }
  return {};
}

}  // namespace loom::hwtopo
