// hwloc topology → Loom's Topology value (private to hwtopo).
#pragma once

#include <string>

#include "hwloc_handle.hpp"
#include "loom/common/error.hpp"
#include "loom/hwtopo/topology.hpp"

namespace loom::hwtopo::detail {

Result<Topology> to_topology(const HwlocTopology& hwloc, std::string source);

}  // namespace loom::hwtopo::detail
