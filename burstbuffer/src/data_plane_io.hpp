// What both sides of the data plane use: errors from errno, whole reads and writes at an
// offset, memory touched up front, an endpoint on the configured provider.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "loom/burstbuffer/data_plane.hpp"
#include "loom/fabric/fabric.hpp"

namespace loom::burstbuffer {

Error errno_error(std::string_view what, int e);
Status read_all(int fd, std::byte* data, std::size_t length, std::uint64_t offset);
Status write_all(int fd, const std::byte* data, std::size_t length, std::uint64_t offset);
// Memory touched once, up front: registering pins pages that exist, and fresh pages cost
// more to fault in than the copy that fills them (../shared/MACHINE.md).
std::vector<std::byte> touched(std::size_t size);
Result<std::shared_ptr<fabric::Endpoint>> open_endpoint(const fabric::Options& options);

}  // namespace loom::burstbuffer
