#include "hwloc_handle.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include "loom/common/errno_text.hpp"

namespace loom::hwtopo::detail {

template <typename Configure>
Result<HwlocTopology> HwlocTopology::load(std::string_view what, Configure configure) {
  hwloc_topology_t raw = nullptr;
  if (hwloc_topology_init(&raw) != 0) {
    return make_error(ErrorCode::kResourceExhausted,
                      fmt::format("hwloc_topology_init: {}", loom::errno_text(errno)));
  }
  HwlocTopology owned(raw);  // destroys it on every early return below
  // NVMe and NIC locality come from I/O objects, which hwloc drops unless asked.
  hwloc_topology_set_io_types_filter(raw, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  // Objects outside this process's cpuset and nodeset too (marked by the allowed sets):
  // a core whose NUMA node a cgroup hides must still show where its memory would be.
  hwloc_topology_set_flags(raw, HWLOC_TOPOLOGY_FLAG_INCLUDE_DISALLOWED);
  if (configure(raw) != 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{}: {}", what, loom::errno_text(errno)));
  }
  if (hwloc_topology_load(raw) != 0) {
    return make_error(ErrorCode::kInvalidArgument, fmt::format("{}: hwloc could not load it: {}",
                                                               what, loom::errno_text(errno)));
  }
  return owned;
}

Result<HwlocTopology> HwlocTopology::live() {
  return load("the live machine's topology", [](hwloc_topology_t) { return 0; });
}

Result<HwlocTopology> HwlocTopology::xml(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    return make_error(ErrorCode::kNotFound,
                      fmt::format("topology XML {}: no such file", file.string()));
  }
  const std::string path = file.string();
  auto result = load(fmt::format("topology XML {}", path), [&](hwloc_topology_t topology) {
    return hwloc_topology_set_xml(topology, path.c_str());
  });
  if (!result && result.error().code() == ErrorCode::kInvalidArgument) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("topology XML {} is malformed or not an hwloc export "
                                  "(`lstopo --of xml` writes one)",
                                  path));
  }
  return result;
}

Result<HwlocTopology> HwlocTopology::synthetic(std::string_view description) {
  const std::string spec(description);
  auto result =
      load(fmt::format("synthetic topology \"{}\"", spec), [&](hwloc_topology_t topology) {
        return hwloc_topology_set_synthetic(topology, spec.c_str());
      });
  if (!result && result.error().code() == ErrorCode::kInvalidArgument) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("invalid synthetic topology \"{}\": hwloc cannot parse it "
                                  "(expected levels such as \"pack:2 numa:2 core:16 pu:2\")",
                                  spec));
  }
  return result;
}

}  // namespace loom::hwtopo::detail
