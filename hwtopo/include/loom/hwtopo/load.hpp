// Building a Topology from hwloc: the live machine, an XML export, or a synthetic
// description. This and binding are the only places in Loom that talk to hwloc.
#pragma once

#include <filesystem>
#include <string_view>

#include "loom/common/error.hpp"
#include "loom/hwtopo/topology.hpp"

namespace loom::hwtopo {

// The machine this process runs on, as far as this process may use it: PUs outside its
// cgroup cpuset, or offline, are neither usable nor counted.
Result<Topology> load_live();

// An XML file written by `lstopo --of xml` or hwloc_topology_export_xml().
Result<Topology> load_xml(const std::filesystem::path& file);

// hwloc's synthetic description, e.g. "pack:2 numa:2(memory=64GiB) core:16 pu:2".
// Without a memory size hwloc gives each NUMA domain 1 GiB. "64GB" means 64 * 10^9 bytes,
// as elsewhere in Loom: write GiB for binary sizes.
Result<Topology> load_synthetic(std::string_view description);

}  // namespace loom::hwtopo
