// A node's NVMe devices for burst buffers: as loomd's --nvme gives them, and local to the
// NUMA node hwloc says their block device is on.
#pragma once

#include <string_view>
#include <vector>

#include "loom/common/config.hpp"
#include "loom/common/error.hpp"
#include "loom/hwtopo/topology.hpp"

namespace loom::agent {

// PATH=SIZE[:NUMA], e.g. "/var/lib/loom/nvme0=400G:1".
Result<Config::NvmeDevice> parse_nvme(std::string_view text);

// A device with no NUMA node given takes the one hwloc reports for the block device its
// filesystem is on (the sysfs path of a partition names its disk too).
void match_block_devices(std::vector<Config::NvmeDevice>& devices,
                         const hwtopo::Topology& topology);

}  // namespace loom::agent
