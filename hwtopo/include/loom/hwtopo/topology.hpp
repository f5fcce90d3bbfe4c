// A node's topology as Loom schedules it: packages, NUMA domains with their memory, cores
// with their PUs, and the block and network devices local to each domain.
//
// A plain value: no hwloc type appears here, so the scheduler, the controller and the
// wire format use it without hwloc. It is built from hwloc (load.hpp) and carried as JSON
// (json.hpp), which round-trips exactly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace loom::hwtopo {

// A core, identified by hwloc's logical index among the machine's usable cores: a core's
// OS index repeats in every package, its logical index does not.
struct Core {
  unsigned logical_index = 0;
  unsigned package = 0;       // logical index of its package
  unsigned numa = 0;          // OS index of its home NUMA domain
  std::vector<unsigned> pus;  // OS indexes of its usable PUs, ascending

  friend bool operator==(const Core&, const Core&) = default;
};

// A NUMA domain. Domains with cores hold the memory that ranks are pinned to; a
// memory-only domain (KNL MCDRAM, a CXL expander, HBM) has none and names the domains
// whose cores sit nearest to it, so that it is modelled, not folded into them.
struct NumaDomain {
  unsigned os_index = 0;
  std::uint64_t memory_bytes = 0;
  std::optional<unsigned> package;  // logical index; none when it spans packages
  std::string kind;                 // hwloc's subtype, e.g. "MCDRAM"; "DRAM" when it has none
  std::vector<unsigned> cores;      // logical indexes of the cores whose home this is
  std::vector<unsigned> pus;        // OS indexes of those cores' PUs
  std::vector<unsigned> near;       // memory-only: OS indexes of the domains with cores near it

  bool memory_only() const { return cores.empty(); }
  friend bool operator==(const NumaDomain&, const NumaDomain&) = default;
};

struct BlockDevice {
  std::string name;  // "nvme0n1", "sda"
  bool nvme = false;
  std::optional<unsigned> numa;  // OS index of the domain it is local to
  std::optional<std::uint64_t> capacity_bytes;

  friend bool operator==(const BlockDevice&, const BlockDevice&) = default;
};

struct NetworkDevice {
  std::string name;              // "eth0", "ib0", "mlx5_0"
  bool rdma = false;             // an OpenFabrics (verbs) device rather than a netdev
  std::optional<unsigned> numa;  // OS index of the domain it is local to

  friend bool operator==(const NetworkDevice&, const NetworkDevice&) = default;
};

struct Topology {
  std::string source;  // "live", "xml:FILE" or "synthetic:SPEC"
  unsigned packages = 0;
  std::vector<NumaDomain> numa_domains;  // ascending OS index
  std::vector<Core> cores;               // ascending logical index, 0..n-1
  std::vector<BlockDevice> block_devices;
  std::vector<NetworkDevice> network_devices;
  // Relative latencies between domains, in numa_domains' order (10 = local, as the ACPI
  // SLIT gives them); empty when hwloc has none.
  std::vector<std::vector<std::uint64_t>> distances;
  // What loading had to decide, for `loom topo` to say: cores whose own NUMA node this
  // process may not use (a Slurm allocation's or a systemd slice's cpuset hides it), and
  // the allowed domain their memory comes from instead.
  std::vector<std::string> notes;

  std::size_t pu_count() const;
  std::uint64_t memory_bytes() const;
  // nullptr when no domain has that OS index.
  const NumaDomain* find_numa(unsigned os_index) const;

  friend bool operator==(const Topology&, const Topology&) = default;
};

}  // namespace loom::hwtopo
