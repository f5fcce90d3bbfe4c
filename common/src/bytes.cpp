#include "loom/common/bytes.hpp"

#include <fmt/format.h>

#include <array>
#include <cctype>

#include "decimal.hpp"

namespace loom {

namespace {

struct Unit {
  std::string_view name;  // lower case
  std::uint64_t multiplier;
};

constexpr std::uint64_t kKi = 1024;
constexpr std::uint64_t kK = 1000;

constexpr std::array kUnits = {
    Unit{"", 1},
    Unit{"b", 1},
    Unit{"k", kKi},
    Unit{"kib", kKi},
    Unit{"m", kKi* kKi},
    Unit{"mib", kKi* kKi},
    Unit{"g", kKi* kKi* kKi},
    Unit{"gib", kKi* kKi* kKi},
    Unit{"t", kKi* kKi* kKi* kKi},
    Unit{"tib", kKi* kKi* kKi* kKi},
    Unit{"p", kKi* kKi* kKi* kKi* kKi},
    Unit{"pib", kKi* kKi* kKi* kKi* kKi},
    Unit{"kb", kK},
    Unit{"mb", kK* kK},
    Unit{"gb", kK* kK* kK},
    Unit{"tb", kK* kK* kK* kK},
    Unit{"pb", kK* kK* kK* kK* kK},
};

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

Result<Bytes> parse_bytes(std::string_view text) {
  auto fail = [&](std::string_view why) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("invalid size \"{}\": {}", text, why));
  };
  std::string_view rest = text;
  if (rest.empty()) return fail("empty");
  if (rest.front() == '-') return fail("a size cannot be negative");
  auto number = detail::take_decimal(rest);
  if (!number) return fail("expected a number such as 512M, 64G or 1.5TiB");
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  const std::string unit = lower(rest);
  for (const Unit& u : kUnits) {
    if (u.name != unit) continue;
    auto count = detail::scale_decimal(*number, u.multiplier);
    if (!count) return fail("too large (a size is below 16384P: 2^64 bytes)");
    return Bytes(*count);
  }
  return fail(
      fmt::format("unknown unit \"{}\" (K, M, G, T, P or KiB, MiB, ... are powers of 1024; "
                  "KB, MB, GB, TB, PB are powers of 1000)",
                  rest));
}

std::string format_bytes(Bytes bytes) {
  static constexpr std::array<std::string_view, 7> kNames = {"B",   "KiB", "MiB", "GiB",
                                                             "TiB", "PiB", "EiB"};
  std::uint64_t n = bytes.count();
  if (n < kKi) return fmt::format("{} B", n);
  std::size_t unit = 0;
  auto value = static_cast<long double>(n);
  while (value >= 1024.0L && unit + 1 < kNames.size()) {
    value /= 1024.0L;
    ++unit;
  }
  std::string text = fmt::format("{:.2f}", static_cast<double>(value));
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  return fmt::format("{} {}", text, kNames[unit]);
}

}  // namespace loom
