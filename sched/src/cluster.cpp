#include "loom/sched/cluster.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <unordered_map>

#include "free_core_index.hpp"
#include "loom/common/bytes.hpp"

namespace loom::sched {

std::string_view to_string(NodeState state) {
  switch (state) {
    case NodeState::kUp:
      return "up";
    case NodeState::kDrain:
      return "drain";
    case NodeState::kDown:
      return "down";
  }
  return "unknown";
}

namespace {

struct Domain {
  unsigned os_index = 0;
  std::vector<unsigned> core_ids;   // logical indexes, ascending
  std::vector<std::uint64_t> free;  // bit i set: core_ids[i] is free
  std::size_t position(unsigned core) const {
    auto it = std::ranges::lower_bound(core_ids, core);
    return it != core_ids.end() && *it == core ? static_cast<std::size_t>(it - core_ids.begin())
                                               : core_ids.size();
  }
};

// Where a core's free bit lives: its domain's position on the node and its bit index.
struct CoreSlot {
  std::size_t domain;
  std::size_t bit;
};

struct Node {
  std::string name;
  NodeState state = NodeState::kUp;
  std::shared_ptr<const hwtopo::Topology> topology;
  std::vector<NvmeDevice> nvme;
  std::vector<Domain> domains;  // domains with cores, ascending OS index
  NodeCapacity total;
  NodeCapacity free;
  unsigned free_cores = 0;

  std::size_t domain_of(unsigned numa) const {
    std::size_t d = 0;
    while (d < domains.size() && domains[d].os_index != numa) ++d;
    LOOM_CHECK(d < domains.size(), fmt::format("node {} has no domain {} with cores", name, numa));
    return d;
  }
  // Flips the placement's cores in the bitsets: to taken, or back to free.
  void mark(const NodePlacement& np, bool free) {
    for (const RankPlacement& rank : np.ranks) {
      for (unsigned core : rank.cores) {
        const CoreSlot slot = slot_of(core);
        std::uint64_t& word = domains[slot.domain].free[slot.bit / 64];
        const std::uint64_t bit = std::uint64_t{1} << (slot.bit % 64);
        LOOM_CHECK(((word & bit) != 0) != free, fmt::format("core {} of node {} {} twice", core,
                                                            name, free ? "released" : "given"));
        word ^= bit;
      }
      const auto count = static_cast<unsigned>(rank.cores.size());
      free_cores = free ? free_cores + count : free_cores - count;
    }
  }

  CoreSlot slot_of(unsigned core) const {
    for (std::size_t d = 0; d < domains.size(); ++d) {
      if (std::size_t bit = domains[d].position(core); bit < domains[d].core_ids.size())
        return {d, bit};
    }
    LOOM_CHECK(false, fmt::format("node {} has no core {}", name, core));
    return {};
  }
};

NodeCapacity empty_capacity(const hwtopo::Topology& t, const std::vector<NvmeDevice>& nvme) {
  NodeCapacity c;
  for (const hwtopo::NumaDomain& d : t.numa_domains) {
    if (d.memory_only()) continue;
    c.domains.push_back({static_cast<unsigned>(d.cores.size()), d.memory_bytes});
  }
  for (const NvmeDevice& dev : nvme) c.nvme.push_back(dev.capacity_bytes);
  return c;
}

}  // namespace

struct Cluster::State {
  std::vector<Node> nodes;
  std::unordered_map<std::string, NodeId> by_name;
  FreeCoreIndex index;
  // Distinct empty-node shapes with their counts: feasibility is decided per shape, so a
  // submit costs the number of node types, not the number of nodes.
  std::vector<std::pair<NodeCapacity, unsigned>> node_types;
  std::uint64_t total_cores = 0, total_memory = 0, total_nvme = 0;

  Node& node(NodeId id) {
    LOOM_CHECK(id.value() < nodes.size(), fmt::format("no node {}", id.value()));
    return nodes[id.value()];
  }
  const Node& node(NodeId id) const {
    LOOM_CHECK(id.value() < nodes.size(), fmt::format("no node {}", id.value()));
    return nodes[id.value()];
  }
  bool schedulable(const Node& n) const {
    return n.state == NodeState::kUp && !n.free.held_exclusive;
  }
  void reindex(NodeId id) {
    const Node& n = node(id);
    index.update(id.value(), n.free_cores, schedulable(n));
  }
};

Cluster::Cluster() : state_(std::make_unique<State>()) {}
Cluster::~Cluster() = default;
Cluster::Cluster(Cluster&&) noexcept = default;
Cluster& Cluster::operator=(Cluster&&) noexcept = default;

NodeId Cluster::add_node(NodeSpec spec) {
  LOOM_CHECK(spec.topology != nullptr, "a node needs a topology");
  LOOM_CHECK(!state_->by_name.contains(spec.name), fmt::format("node {} added twice", spec.name));
  const NodeId id(static_cast<NodeId::rep>(state_->nodes.size()));
  Node n;
  n.name = spec.name;
  n.topology = std::move(spec.topology);
  n.nvme = std::move(spec.nvme);
  for (const hwtopo::NumaDomain& d : n.topology->numa_domains) {
    if (d.memory_only()) continue;
    Domain domain{d.os_index, d.cores, std::vector<std::uint64_t>((d.cores.size() + 63) / 64, 0)};
    for (std::size_t i = 0; i < d.cores.size(); ++i)
      domain.free[i / 64] |= std::uint64_t{1} << (i % 64);
    n.domains.push_back(std::move(domain));
  }
  n.total = empty_capacity(*n.topology, n.nvme);
  n.free = n.total;
  for (const DomainCapacity& d : n.total.domains) {
    n.free_cores += d.cores;
    state_->total_memory += d.memory;
  }
  for (std::uint64_t bytes : n.total.nvme) state_->total_nvme += bytes;
  state_->total_cores += n.free_cores;
  auto type = std::find_if(state_->node_types.begin(), state_->node_types.end(),
                           [&](const auto& t) { return t.first == n.total; });
  if (type == state_->node_types.end()) {
    state_->node_types.emplace_back(n.total, 1);
  } else {
    ++type->second;
  }
  state_->by_name.emplace(n.name, id);
  state_->index.add(n.free_cores);
  state_->nodes.push_back(std::move(n));
  state_->reindex(id);
  return id;
}

std::size_t Cluster::size() const { return state_->nodes.size(); }

Status Cluster::set_state(NodeId id, NodeState state) {
  if (id.value() >= state_->nodes.size()) {
    return make_error(ErrorCode::kNotFound, fmt::format("no node with id {}", id.value()));
  }
  state_->node(id).state = state;
  state_->reindex(id);
  return {};
}

NodeState Cluster::state(NodeId id) const { return state_->node(id).state; }
const std::string& Cluster::name(NodeId id) const { return state_->node(id).name; }
std::optional<NodeId> Cluster::find(std::string_view name) const {
  auto it = state_->by_name.find(std::string(name));
  if (it == state_->by_name.end()) return std::nullopt;
  return it->second;
}
const hwtopo::Topology& Cluster::topology(NodeId id) const { return *state_->node(id).topology; }
std::span<const NvmeDevice> Cluster::nvme(NodeId id) const { return state_->node(id).nvme; }
const NodeCapacity& Cluster::free(NodeId id) const { return state_->node(id).free; }
const NodeCapacity& Cluster::total(NodeId id) const { return state_->node(id).total; }
std::uint64_t Cluster::total_cores() const { return state_->total_cores; }
std::uint64_t Cluster::total_memory() const { return state_->total_memory; }
std::uint64_t Cluster::total_nvme() const { return state_->total_nvme; }

std::vector<unsigned> Cluster::free_cores(NodeId id, std::size_t domain) const {
  const Domain& d = state_->node(id).domains.at(domain);
  std::vector<unsigned> out;
  for (std::size_t i = 0; i < d.core_ids.size(); ++i) {
    if (d.free[i / 64] >> (i % 64) & 1) out.push_back(d.core_ids[i]);
  }
  return out;
}

Status Cluster::check_feasible(const Request& r) const {
  auto refuse = [](std::string message) {
    return make_error(ErrorCode::kInvalidArgument, std::move(message));
  };
  if (state_->nodes.empty()) return refuse("the cluster has no nodes");
  if (!r.node.empty() && !state_->by_name.contains(r.node))
    return refuse(fmt::format("there is no node {}", r.node));
  unsigned largest_domain = 0, largest_node = 0;
  std::uint64_t largest_domain_memory = 0, largest_nvme = 0;
  for (const auto& [shape, count] : state_->node_types) {
    unsigned node_cores = 0;
    for (const DomainCapacity& d : shape.domains) {
      largest_domain = std::max(largest_domain, d.cores);
      largest_domain_memory = std::max(largest_domain_memory, d.memory);
      node_cores += d.cores;
    }
    largest_node = std::max(largest_node, node_cores);
    for (std::uint64_t bytes : shape.nvme) largest_nvme = std::max(largest_nvme, bytes);
  }
  if (!r.spread_numa && r.cores_per_task > largest_domain) {
    return refuse(fmt::format(
        "cpus-per-task {} exceeds the largest NUMA domain ({} cores); ask for --spread-numa to "
        "cross domains",
        r.cores_per_task, largest_domain));
  }
  if (r.spread_numa && r.cores_per_task > largest_node) {
    return refuse(fmt::format("cpus-per-task {} exceeds the largest node ({} cores)",
                              r.cores_per_task, largest_node));
  }
  if (!r.spread_numa && r.mem_per_task > largest_domain_memory) {
    return refuse(fmt::format(
        "mem-per-task {} exceeds the largest NUMA domain's memory ({}); ask for --spread-numa "
        "to cross domains",
        format_bytes(Bytes(r.mem_per_task)), format_bytes(Bytes(largest_domain_memory))));
  }
  if (r.bb_per_node > largest_nvme) {
    return refuse(largest_nvme == 0 ? fmt::format("bb {} asked for, but no node has an NVMe device",
                                                  format_bytes(Bytes(r.bb_per_node)))
                                    : fmt::format("bb {} exceeds the largest NVMe device ({})",
                                                  format_bytes(Bytes(r.bb_per_node)),
                                                  format_bytes(Bytes(largest_nvme))));
  }
  if (r.nodes_min > state_->nodes.size()) {
    return refuse(
        fmt::format("nodes {} exceeds the cluster's {} nodes", r.nodes_min, state_->nodes.size()));
  }
  // On an empty cluster: enough nodes that hold a node's share, or enough room in all.
  std::uint64_t nodes_that_fit = 0, ranks_that_fit = 0;
  const unsigned per_node = r.ranks_per_node != 0 ? r.ranks_per_node : r.tasks;
  unsigned most_on_a_node = 0;
  for (const auto& [shape, count] : state_->node_types) {
    const unsigned fit = ranks_fit(shape, r, per_node);
    most_on_a_node = std::max(most_on_a_node, fit);
    if (fit >= per_node) nodes_that_fit += count;
    ranks_that_fit += std::uint64_t{fit} * count;
  }
  if (r.ranks_per_node != 0 && nodes_that_fit < r.nodes_min) {
    return refuse(fmt::format(
        "{} tasks per node of {} cores{} fit on {} of the cluster's nodes, and {} are asked for "
        "(a node holds at most {})",
        r.ranks_per_node, r.cores_per_task,
        r.mem_per_task ? fmt::format(" and {}", format_bytes(Bytes(r.mem_per_task))) : "",
        nodes_that_fit, r.nodes_min, most_on_a_node));
  }
  if (r.ranks_per_node == 0 && ranks_that_fit < r.tasks) {
    return refuse(
        fmt::format("ntasks {} of {} cores exceeds what the whole cluster holds ({} tasks)",
                    r.tasks, r.cores_per_task, ranks_that_fit));
  }
  return {};
}

namespace {

// Fills in one node's ranks: domain by domain, the lowest free cores first.
NodePlacement assign(const Node& n, NodeId id, const Request& r, unsigned ranks,
                     unsigned first_rank) {
  NodePlacement out;
  out.node = id;
  out.exclusive = r.exclusive;
  out.bb_bytes = r.bb_per_node;
  std::vector<DomainCapacity> left = n.free.domains;
  std::vector<std::vector<std::uint64_t>> bits;
  bits.reserve(n.domains.size());
  for (const Domain& d : n.domains) bits.push_back(d.free);
  auto take = [&](std::size_t d, unsigned count, std::vector<unsigned>& cores) {
    for (std::size_t w = 0; w < bits[d].size() && count > 0; ++w) {
      while (bits[d][w] != 0 && count > 0) {
        const auto bit = static_cast<unsigned>(std::countr_zero(bits[d][w]));
        bits[d][w] &= bits[d][w] - 1;
        cores.push_back(n.domains[d].core_ids[w * 64 + bit]);
        --count;
      }
    }
  };
  std::size_t domain = 0;
  for (unsigned k = 0; k < ranks; ++k) {
    RankPlacement rank;
    rank.rank = first_rank + k;
    rank.memory_bytes = r.mem_per_task;
    if (!r.spread_numa) {
      while (left[domain].cores < r.cores_per_task || left[domain].memory < r.mem_per_task)
        ++domain;
      take(domain, r.cores_per_task, rank.cores);
      left[domain].cores -= r.cores_per_task;
      left[domain].memory -= r.mem_per_task;
      rank.numa = n.domains[domain].os_index;
    } else {
      unsigned need = r.cores_per_task, best_taken = 0;
      std::size_t best = domain;
      for (std::size_t d = domain; need > 0; ++d) {
        const unsigned taken = std::min(need, left[d].cores);
        if (taken == 0) continue;
        take(d, taken, rank.cores);
        left[d].cores -= taken;
        if (taken > best_taken) {
          best = d;
          best_taken = taken;
        }
        need -= taken;
      }
      left[best].memory -= r.mem_per_task;
      rank.numa = n.domains[best].os_index;
      while (domain < left.size() && left[domain].cores == 0) ++domain;
    }
    std::ranges::sort(rank.cores);
    out.ranks.push_back(std::move(rank));
  }
  if (r.bb_per_node > 0) {
    // The device local to most of the node's ranks, among those with room; then the first.
    std::size_t best_local = 0;
    for (std::size_t i = 0; i < n.nvme.size(); ++i) {
      if (n.free.nvme[i] < r.bb_per_node) continue;
      const auto local = static_cast<std::size_t>(
          std::count_if(out.ranks.begin(), out.ranks.end(),
                        [&](const RankPlacement& rank) { return n.nvme[i].numa == rank.numa; }));
      if (!out.nvme || local > best_local) {
        out.nvme = static_cast<unsigned>(i);
        best_local = local;
      }
    }
  }
  return out;
}

// The request's preferred nodes (node, ranks), if they hold it now as the placer would fill
// them; empty when they do not.
std::vector<std::pair<NodeId, unsigned>> on_preferred(const std::vector<Node>& nodes,
                                                      const Request& r) {
  std::vector<std::pair<NodeId, unsigned>> chosen;
  if (r.ranks_per_node != 0 && r.prefer.size() != r.nodes_min) return chosen;
  unsigned remaining = r.tasks;
  for (NodeId id : r.prefer) {
    const Node& n = nodes.at(id.value());
    if (remaining == 0 || n.state != NodeState::kUp || chosen.size() == r.nodes_max) break;
    if (r.ranks_per_node != 0) {
      if (ranks_fit(n.free, r, r.ranks_per_node) < r.ranks_per_node) break;
      chosen.emplace_back(id, ranks_on_node(r, static_cast<unsigned>(chosen.size())));
      remaining -= chosen.back().second;
      continue;
    }
    const unsigned fit = ranks_fit(n.free, r, remaining);
    if (fit == 0) break;
    chosen.emplace_back(id, fit);
    remaining -= fit;
  }
  if (remaining != 0) chosen.clear();
  return chosen;
}

}  // namespace

std::optional<Placement> Cluster::place(const Request& r) const {
  const State& s = *state_;
  if (r.total_cores() > s.index.free_cores()) return std::nullopt;
  std::vector<std::pair<NodeId, unsigned>> chosen;  // node, ranks
  if (r.node.empty() && !r.prefer.empty()) chosen = on_preferred(s.nodes, r);
  if (!chosen.empty()) {
    // The nodes it ran on hold it (a requeued job: its slices may be kept there).
  } else if (!r.node.empty()) {
    // One node, named: whether it is up and holds every rank now.
    auto it = s.by_name.find(r.node);
    if (it == s.by_name.end() || s.nodes[it->second.value()].state != NodeState::kUp ||
        ranks_fit(s.nodes[it->second.value()].free, r, r.tasks) < r.tasks) {
      return std::nullopt;
    }
    chosen.emplace_back(it->second, r.tasks);
  } else if (r.ranks_per_node != 0) {
    const unsigned per_node = r.ranks_per_node;
    s.index.for_each_from(std::uint64_t{per_node} * r.cores_per_task, [&](std::uint32_t id) {
      const Node& n = s.nodes[id];
      if (ranks_fit(n.free, r, per_node) < per_node) return true;
      chosen.emplace_back(NodeId(id), ranks_on_node(r, static_cast<unsigned>(chosen.size())));
      return chosen.size() < r.nodes_min;
    });
    if (chosen.size() < r.nodes_min) return std::nullopt;
  } else {
    // All ranks on one node if any holds them (best fit); else the emptiest nodes first,
    // so that the job spans as few nodes as it can.
    s.index.for_each_from(std::uint64_t{r.tasks} * r.cores_per_task, [&](std::uint32_t id) {
      if (ranks_fit(s.nodes[id].free, r, r.tasks) < r.tasks) return true;
      chosen.emplace_back(NodeId(id), r.tasks);
      return false;
    });
    if (chosen.empty()) {
      unsigned remaining = r.tasks;
      s.index.for_each_descending(r.cores_per_task, [&](std::uint32_t id) {
        const unsigned fit = ranks_fit(s.nodes[id].free, r, remaining);
        if (fit == 0) return true;
        chosen.emplace_back(NodeId(id), fit);
        remaining -= fit;
        return remaining > 0 && chosen.size() < r.nodes_max;
      });
      if (remaining > 0) return std::nullopt;
    }
  }
  Placement placement;
  unsigned rank = 0;
  for (const auto& [id, ranks] : chosen) {
    placement.nodes.push_back(assign(s.nodes[id.value()], id, r, ranks, rank));
    rank += ranks;
  }
  return placement;
}

void Cluster::take(NodeCapacity& capacity, const NodePlacement& np) const {
  const Node& n = state_->node(np.node);
  LOOM_CHECK(!capacity.held_exclusive, fmt::format("node {} is held by an exclusive job", n.name));
  LOOM_CHECK(!np.exclusive || capacity.idle(),
             fmt::format("exclusive job on busy node {}", n.name));
  for (const RankPlacement& rank : np.ranks) {
    DomainCapacity& memory_domain = capacity.domains[n.domain_of(rank.numa)];
    LOOM_CHECK(memory_domain.memory >= rank.memory_bytes,
               fmt::format("memory over-committed on node {} domain {}", n.name, rank.numa));
    memory_domain.memory -= rank.memory_bytes;
    for (unsigned core : rank.cores) {
      DomainCapacity& d = capacity.domains[n.slot_of(core).domain];
      LOOM_CHECK(d.cores > 0, fmt::format("cores over-committed on node {}", n.name));
      --d.cores;
    }
  }
  if (np.nvme) {
    std::uint64_t& free = capacity.nvme.at(*np.nvme);
    LOOM_CHECK(free >= np.bb_bytes, fmt::format("NVMe over-committed on node {}", n.name));
    free -= np.bb_bytes;
  }
  ++capacity.allocations;
  capacity.held_exclusive = np.exclusive;
}

void Cluster::give_back(NodeCapacity& capacity, const NodePlacement& np) const {
  const Node& n = state_->node(np.node);
  LOOM_CHECK(capacity.allocations > 0, fmt::format("release on idle node {}", n.name));
  for (const RankPlacement& rank : np.ranks) {
    capacity.domains[n.domain_of(rank.numa)].memory += rank.memory_bytes;
    for (unsigned core : rank.cores) ++capacity.domains[n.slot_of(core).domain].cores;
  }
  if (np.nvme) capacity.nvme.at(*np.nvme) += np.bb_bytes;
  --capacity.allocations;
  if (np.exclusive) capacity.held_exclusive = false;
}

void Cluster::allocate(const Placement& placement) {
  for (const NodePlacement& np : placement.nodes) {
    Node& n = state_->node(np.node);
    take(n.free, np);
    n.mark(np, false);
    state_->reindex(np.node);
  }
}

void Cluster::release(const Placement& placement) {
  for (const NodePlacement& np : placement.nodes) {
    Node& n = state_->node(np.node);
    give_back(n.free, np);
    n.mark(np, true);
    state_->reindex(np.node);
  }
}

}  // namespace loom::sched
