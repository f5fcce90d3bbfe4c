#include "loom/common/crc32c.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string_view>
#include <vector>

namespace loom {
namespace {

std::span<const std::byte> bytes(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

// Bit by bit, straight from the definition: what the fast paths must equal.
std::uint32_t reference(std::span<const std::byte> data) {
  std::uint32_t c = 0xFFFFFFFF;
  for (std::byte b : data) {
    c ^= static_cast<std::uint8_t>(b);
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78 : c >> 1;
  }
  return ~c;
}

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(crc32c(bytes("123456789")), 0xE3069283u);  // the check value of CRC-32C
  EXPECT_EQ(crc32c(bytes("")), 0u);
  const std::vector<std::byte> zeros(32, std::byte{0});
  EXPECT_EQ(crc32c(zeros), 0x8A9136AAu);  // RFC 3720, B.4
}

TEST(Crc32c, EqualsTheDefinitionAtEveryLengthAndAlignment) {
  std::mt19937 random(7);
  std::vector<std::byte> data(4096);
  for (std::byte& b : data) b = std::byte(random() & 0xFF);
  for (std::size_t start = 0; start < 9; ++start) {
    for (std::size_t length : {0, 1, 7, 8, 9, 63, 64, 1000, 4000}) {
      const auto slice = std::span(data).subspan(start, length);
      EXPECT_EQ(crc32c(slice), reference(slice)) << start << "+" << length;
    }
  }
}

TEST(Crc32c, ContinuesARunningChecksum) {
  const std::string_view text = "the quick brown fox jumps over the lazy dog";
  EXPECT_EQ(crc32c(bytes(text.substr(17)), crc32c(bytes(text.substr(0, 17)))), crc32c(bytes(text)));
}

}  // namespace
}  // namespace loom
