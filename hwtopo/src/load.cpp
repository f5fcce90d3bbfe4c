#include "loom/hwtopo/load.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "convert.hpp"
#include "hwloc_handle.hpp"
#include "loom/common/index_list.hpp"

namespace loom::hwtopo {

namespace detail {

namespace {

bool is_dram(hwloc_obj_t numa) { return numa->subtype == nullptr; }

// The domain a set of CPUs calls home: among the eligible domains (by logical index) whose
// cpuset holds all of them, plain DRAM before any subtyped memory (MCDRAM, HBM), then
// hwloc's order. nullptr when the CPUs span several domains, e.g. a device attached to
// the whole machine.
hwloc_obj_t home_domain(hwloc_topology_t topology, hwloc_const_cpuset_t cpus,
                        const std::vector<bool>& eligible) {
  hwloc_obj_t best = nullptr;
  const int count = hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_NUMANODE);
  for (int i = 0; i < count; ++i) {
    hwloc_obj_t numa =
        hwloc_get_obj_by_type(topology, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
    if (!eligible[static_cast<std::size_t>(i)]) continue;
    if (hwloc_bitmap_iszero(cpus) || !hwloc_bitmap_isincluded(cpus, numa->cpuset)) continue;
    if (best == nullptr || (is_dram(numa) && !is_dram(best))) best = numa;
  }
  return best;
}

std::optional<unsigned> logical_package(hwloc_topology_t topology, hwloc_obj_t obj) {
  hwloc_obj_t package = hwloc_get_ancestor_obj_by_type(topology, HWLOC_OBJ_PACKAGE, obj);
  if (package == nullptr) return std::nullopt;
  return package->logical_index;
}

std::vector<unsigned> pus_in(hwloc_topology_t topology, hwloc_const_cpuset_t cpus) {
  std::vector<unsigned> pus;
  hwloc_obj_t pu = nullptr;
  while ((pu = hwloc_get_next_obj_inside_cpuset_by_type(topology, cpus, HWLOC_OBJ_PU, pu)) !=
         nullptr) {
    pus.push_back(pu->os_index);
  }
  std::ranges::sort(pus);
  return pus;
}

std::vector<std::vector<std::uint64_t>> numa_distances(hwloc_topology_t topology,
                                                       const std::vector<NumaDomain>& domains) {
  std::array<hwloc_distances_s*, 8> found{};
  auto count = static_cast<unsigned>(found.size());
  if (hwloc_distances_get_by_type(topology, HWLOC_OBJ_NUMANODE, &count, found.data(),
                                  HWLOC_DISTANCES_KIND_MEANS_LATENCY, 0) != 0) {
    return {};
  }
  // Prefer the firmware's table (named NUMALatency) covering every domain.
  hwloc_distances_s* chosen = nullptr;
  for (unsigned i = 0; i < count; ++i) {
    std::size_t covered = 0;
    for (unsigned k = 0; k < found[i]->nbobjs; ++k) {
      for (const NumaDomain& d : domains) covered += d.os_index == found[i]->objs[k]->os_index;
    }
    if (covered != domains.size()) continue;
    const char* name = hwloc_distances_get_name(topology, found[i]);
    if (chosen == nullptr || (name != nullptr && std::strcmp(name, "NUMALatency") == 0))
      chosen = found[i];
  }
  std::vector<std::vector<std::uint64_t>> matrix;
  if (chosen != nullptr) {  // it may cover disallowed domains too: those rows are left out
    auto position = [&](hwloc_obj_t obj) {
      for (std::size_t k = 0; k < domains.size(); ++k) {
        if (domains[k].os_index == obj->os_index) return k;
      }
      return domains.size();
    };
    matrix.assign(domains.size(), std::vector<std::uint64_t>(domains.size(), 0));
    for (unsigned a = 0; a < chosen->nbobjs; ++a) {
      for (unsigned b = 0; b < chosen->nbobjs; ++b) {
        std::size_t row = position(chosen->objs[a]);
        std::size_t col = position(chosen->objs[b]);
        if (row < domains.size() && col < domains.size()) {
          matrix[row][col] = chosen->values[a * chosen->nbobjs + b];
        }
      }
    }
  }
  for (unsigned i = 0; i < count; ++i) hwloc_distances_release(topology, found[i]);
  return matrix;
}

// The domain that takes the place of `hidden`, a NUMA node this process may not use, for
// the cores whose home it is: the nearest allowed one by hwloc's latencies, else an
// allowed one in the same package, else the first allowed; and how it was chosen.
std::pair<hwloc_obj_t, std::string_view> stand_in(hwloc_topology_t topology, hwloc_obj_t hidden,
                                                  hwloc_const_nodeset_t allowed) {
  auto is_allowed = [&](hwloc_obj_t numa) { return hwloc_bitmap_isset(allowed, numa->os_index); };
  hwloc_obj_t best = nullptr;
  std::array<hwloc_distances_s*, 8> found{};
  auto count = static_cast<unsigned>(found.size());
  if (hwloc_distances_get_by_type(topology, HWLOC_OBJ_NUMANODE, &count, found.data(),
                                  HWLOC_DISTANCES_KIND_MEANS_LATENCY, 0) == 0) {
    for (unsigned m = 0; m < count && best == nullptr; ++m) {
      const hwloc_distances_s* d = found[m];
      unsigned from = d->nbobjs;
      for (unsigned i = 0; i < d->nbobjs; ++i) {
        if (d->objs[i] == hidden) from = i;
      }
      if (from == d->nbobjs) continue;
      std::uint64_t nearest = 0;
      for (unsigned to = 0; to < d->nbobjs; ++to) {
        if (!is_allowed(d->objs[to])) continue;
        const std::uint64_t value = d->values[from * d->nbobjs + to];
        if (best == nullptr || value < nearest) {
          best = d->objs[to];
          nearest = value;
        }
      }
    }
    for (unsigned m = 0; m < count; ++m) hwloc_distances_release(topology, found[m]);
    if (best != nullptr) return {best, "the nearest by hwloc's latencies"};
  }
  const auto package = logical_package(topology, hidden);
  hwloc_obj_t first = nullptr;
  for (hwloc_obj_t numa = hwloc_get_next_obj_by_type(topology, HWLOC_OBJ_NUMANODE, nullptr);
       numa != nullptr; numa = hwloc_get_next_obj_by_type(topology, HWLOC_OBJ_NUMANODE, numa)) {
    if (!is_allowed(numa)) continue;
    if (first == nullptr) first = numa;
    if (package && logical_package(topology, numa) == package) return {numa, "in the same package"};
  }
  return {first, "the first allowed"};
}

}  // namespace

Result<Topology> to_topology(const HwlocTopology& hwloc, std::string source) {
  hwloc_topology_t topology = hwloc.get();
  Topology out;
  out.source = std::move(source);
  out.packages =
      static_cast<unsigned>(std::max(0, hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_PACKAGE)));

  const int numa_count = hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_NUMANODE);
  if (numa_count <= 0) {
    return make_error(ErrorCode::kInvalidArgument, "the topology has no NUMA domain");
  }
  auto numa_obj = [&](std::size_t i) {
    return hwloc_get_obj_by_type(topology, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
  };
  const auto numa_total = static_cast<std::size_t>(numa_count);
  // Loaded with the disallowed objects (HwlocTopology), so that a core whose NUMA node
  // this process may not use still has a home to stand in for.
  hwloc_const_cpuset_t allowed_cpus = hwloc_topology_get_allowed_cpuset(topology);
  hwloc_const_nodeset_t allowed_nodes = hwloc_topology_get_allowed_nodeset(topology);
  auto is_allowed = [&](hwloc_obj_t numa) {
    return hwloc_bitmap_isset(allowed_nodes, numa->os_index) != 0;
  };
  struct StandIn {
    unsigned os_index;
    std::string_view how;
    std::vector<unsigned> cores;
  };
  std::map<unsigned, StandIn> stand_ins;  // hidden domain's OS index -> what replaces it

  // Cores first: a domain is memory-only exactly when no core calls it home.
  std::vector<bool> has_cores(numa_total, false);
  const std::vector<bool> any_domain(numa_total, true);
  const int core_count = hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_CORE);
  std::vector<hwloc_obj_t> homes;
  for (int i = 0; i < core_count; ++i) {
    hwloc_obj_t core = hwloc_get_obj_by_type(topology, HWLOC_OBJ_CORE, static_cast<unsigned>(i));
    Core c;
    // Among the usable cores: hwloc's own index counts the disallowed ones as well.
    c.logical_index = static_cast<unsigned>(out.cores.size());
    c.package = logical_package(topology, core).value_or(0);
    hwloc_bitmap_t usable = hwloc_bitmap_alloc();
    hwloc_bitmap_and(usable, core->cpuset, allowed_cpus);
    c.pus = pus_in(topology, usable);
    hwloc_bitmap_free(usable);
    if (c.pus.empty()) continue;  // every PU disallowed or offline: not usable
    hwloc_obj_t home = home_domain(topology, core->cpuset, any_domain);
    if (home == nullptr) {
      return make_error(
          ErrorCode::kInvalidArgument,
          fmt::format("core L#{} lies in no single NUMA domain", core->logical_index));
    }
    if (!is_allowed(home)) {
      auto [replacement, how] = stand_in(topology, home, allowed_nodes);
      if (replacement == nullptr)
        return make_error(ErrorCode::kInvalidArgument, "no NUMA domain is allowed here");
      stand_ins.try_emplace(home->os_index, StandIn{replacement->os_index, how, {}})
          .first->second.cores.push_back(c.logical_index);
      home = replacement;
    }
    has_cores[home->logical_index] = true;
    c.numa = home->os_index;
    homes.push_back(home);
    out.cores.push_back(std::move(c));
  }
  if (out.cores.empty())
    return make_error(ErrorCode::kInvalidArgument, "the topology has no usable core");

  for (const auto& [hidden, s] : stand_ins) {
    out.notes.push_back(fmt::format(
        "NUMA P#{} is not allowed here: the memory of its cores (L#{}) comes from P#{}, {}", hidden,
        format_index_list(s.cores), s.os_index, s.how));
  }
  for (std::size_t i = 0; i < numa_total; ++i) {
    hwloc_obj_t numa = numa_obj(i);
    if (!is_allowed(numa)) continue;
    NumaDomain d;
    d.os_index = numa->os_index;
    d.memory_bytes = numa->attr != nullptr ? numa->attr->numanode.local_memory : 0;
    d.package = logical_package(topology, numa);
    d.kind = numa->subtype != nullptr ? numa->subtype : "DRAM";
    for (std::size_t k = 0; k < out.cores.size(); ++k) {
      if (homes[k] != numa) continue;
      d.cores.push_back(out.cores[k].logical_index);
      d.pus.insert(d.pus.end(), out.cores[k].pus.begin(), out.cores[k].pus.end());
    }
    std::ranges::sort(d.pus);
    if (d.cores.empty()) {
      for (std::size_t j = 0; j < numa_total; ++j) {
        if (has_cores[j] && hwloc_bitmap_intersects(numa_obj(j)->cpuset, numa->cpuset)) {
          d.near.push_back(numa_obj(j)->os_index);
        }
      }
      std::ranges::sort(d.near);
    }
    out.numa_domains.push_back(std::move(d));
  }
  std::ranges::sort(out.numa_domains, [](const NumaDomain& a, const NumaDomain& b) {
    return a.os_index < b.os_index;
  });

  for (hwloc_obj_t dev = hwloc_get_next_osdev(topology, nullptr); dev != nullptr;
       dev = hwloc_get_next_osdev(topology, dev)) {
    hwloc_obj_t cpu_side = hwloc_get_non_io_ancestor_obj(topology, dev);
    hwloc_obj_t home = home_domain(topology, cpu_side->cpuset, has_cores);
    std::optional<unsigned> numa;
    if (home != nullptr) numa = home->os_index;
    const std::string name = dev->name != nullptr ? dev->name : "";
    switch (dev->attr->osdev.type) {
      case HWLOC_OBJ_OSDEV_BLOCK: {
        BlockDevice b{.name = name, .nvme = false, .numa = numa, .capacity_bytes = std::nullopt};
        b.nvme = name.starts_with("nvme") ||
                 (dev->subtype != nullptr && std::strcmp(dev->subtype, "NVMe") == 0);
        // hwloc gives a block device's Size in KiB.
        if (const char* size = hwloc_obj_get_info_by_name(dev, "Size"); size != nullptr) {
          b.capacity_bytes = std::strtoull(size, nullptr, 10) * 1024;
        }
        out.block_devices.push_back(std::move(b));
        break;
      }
      case HWLOC_OBJ_OSDEV_NETWORK:
        out.network_devices.push_back({.name = name, .rdma = false, .numa = numa});
        break;
      case HWLOC_OBJ_OSDEV_OPENFABRICS:
        out.network_devices.push_back({.name = name, .rdma = true, .numa = numa});
        break;
      default:
        break;  // GPUs, DMA engines, coprocessors: not scheduled by Loom yet
    }
  }
  out.distances = numa_distances(topology, out.numa_domains);
  return out;
}

}  // namespace detail

Result<Topology> load_live() {
  auto hwloc = LOOM_TRY(detail::HwlocTopology::live());
  return detail::to_topology(hwloc, "live");
}

Result<Topology> load_xml(const std::filesystem::path& file) {
  auto hwloc = LOOM_TRY(detail::HwlocTopology::xml(file));
  return with_context(detail::to_topology(hwloc, "xml:" + file.string()),
                      fmt::format("topology XML {}", file.string()));
}

Result<Topology> load_synthetic(std::string_view description) {
  auto hwloc = LOOM_TRY(detail::HwlocTopology::synthetic(description));
  return with_context(detail::to_topology(hwloc, fmt::format("synthetic:{}", description)),
                      fmt::format("synthetic topology \"{}\"", description));
}

}  // namespace loom::hwtopo
