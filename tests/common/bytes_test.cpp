#include "loom/common/bytes.hpp"

#include <gtest/gtest.h>

namespace loom {
namespace {

std::uint64_t parsed(std::string_view text) {
  auto bytes = parse_bytes(text);
  EXPECT_TRUE(bytes.has_value()) << text << ": " << bytes.error().to_string();
  return bytes ? bytes->count() : 0;
}

std::string error_of(std::string_view text) {
  auto bytes = parse_bytes(text);
  EXPECT_FALSE(bytes.has_value()) << text << " parsed as " << (bytes ? bytes->count() : 0);
  if (bytes) return "";
  EXPECT_EQ(bytes.error().code(), ErrorCode::kInvalidArgument);
  return bytes.error().message();
}

TEST(ParseBytes, PlainNumbersAreBytes) {
  EXPECT_EQ(parsed("0"), 0u);
  EXPECT_EQ(parsed("4096"), 4096u);
  EXPECT_EQ(parsed("4096B"), 4096u);
}

TEST(ParseBytes, SingleLettersAreBinaryAsInSlurm) {
  EXPECT_EQ(parsed("512M"), 512ull << 20);
  EXPECT_EQ(parsed("64G"), 64ull << 30);
  EXPECT_EQ(parsed("2T"), 2ull << 40);
  EXPECT_EQ(parsed("1K"), 1024u);
  EXPECT_EQ(parsed("1P"), 1ull << 50);
  EXPECT_EQ(parsed("64g"), 64ull << 30);
}

TEST(ParseBytes, IecSuffixesAreBinary) {
  EXPECT_EQ(parsed("1.5TiB"), 1649267441664ull);
  EXPECT_EQ(parsed("3.5TiB"), 3848290697216ull);
  EXPECT_EQ(parsed("512MiB"), 512ull << 20);
  EXPECT_EQ(parsed("512 MiB"), 512ull << 20);
}

TEST(ParseBytes, TwoLetterSiSuffixesAreDecimal) {
  EXPECT_EQ(parsed("64GB"), 64'000'000'000ull);
  EXPECT_EQ(parsed("1kB"), 1000u);
  EXPECT_EQ(parsed("1.5TB"), 1'500'000'000'000ull);
}

TEST(ParseBytes, FractionsRoundToTheNearestByte) {
  EXPECT_EQ(parsed("0.5K"), 512u);
  EXPECT_EQ(parsed("1.1K"), 1126u);  // 1126.4
  EXPECT_EQ(parsed("1.0009765625K"), 1025u);
}

TEST(ParseBytes, TheLargestSizeParsesAndOneMoreDoesNot) {
  EXPECT_EQ(parsed("18446744073709551615"), UINT64_MAX);
  EXPECT_NE(error_of("18446744073709551616").find("too large"), std::string::npos);
  EXPECT_NE(error_of("16384P").find("too large"), std::string::npos);
  EXPECT_NE(error_of("99999999999999999999999999999999999999999").find("expected a number"),
            std::string::npos);
}

TEST(ParseBytes, ErrorsQuoteTheInput) {
  EXPECT_EQ(error_of("12X"),
            "invalid size \"12X\": unknown unit \"X\" (K, M, G, T, P or KiB, MiB, ... are powers "
            "of 1024; KB, MB, GB, TB, PB are powers of 1000)");
  EXPECT_EQ(error_of(""), "invalid size \"\": empty");
  EXPECT_EQ(error_of("-1G"), "invalid size \"-1G\": a size cannot be negative");
  EXPECT_EQ(error_of("G"), "invalid size \"G\": expected a number such as 512M, 64G or 1.5TiB");
  EXPECT_NE(error_of("1.G").find("\"1.G\""), std::string::npos);
  EXPECT_NE(error_of(".5G").find("\".5G\""), std::string::npos);
  EXPECT_NE(error_of("1GiBB").find("unknown unit \"GiBB\""), std::string::npos);
  EXPECT_NE(error_of("1 2G").find("unknown unit \"2G\""), std::string::npos);
}

TEST(FormatBytes, ReadsAtAGlance) {
  EXPECT_EQ(format_bytes(Bytes(512)), "512 B");
  EXPECT_EQ(format_bytes(kibibytes(1)), "1 KiB");
  EXPECT_EQ(format_bytes(mebibytes(1536)), "1.5 GiB");
  EXPECT_EQ(format_bytes(Bytes(3848290697216ull)), "3.5 TiB");
  EXPECT_EQ(format_bytes(Bytes(UINT64_MAX)), "16 EiB");
}

}  // namespace
}  // namespace loom
