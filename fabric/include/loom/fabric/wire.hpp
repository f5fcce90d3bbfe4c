// Endpoint names and region descriptors as text, so that the control plane (gRPC, JSON)
// can carry them between agents: hex for names, "address:key:length" in hex for regions.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/fabric/fabric.hpp"

namespace loom::fabric {

std::string encode_name(std::span<const std::byte> name);
Result<std::vector<std::byte>> decode_name(std::string_view text);

std::string encode_region(const RemoteRegion& region);
Result<RemoteRegion> decode_region(std::string_view text);

}  // namespace loom::fabric
