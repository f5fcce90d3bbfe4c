// CRC-32C (Castagnoli), the checksum staging verifies each byte range with: the one iSCSI,
// ext4 metadata and most RDMA storage stacks use, computed by the SSE4.2 crc32 instruction
// where the CPU has it (several GB/s), by table otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace loom {

// Continues a running checksum: crc32c(b, crc32c(a)) == crc32c(a + b). Start from 0.
std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t crc = 0);

}  // namespace loom
