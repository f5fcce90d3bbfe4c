#include "decimal.hpp"

#include <limits>

namespace loom::detail {

namespace {
constexpr unsigned kMaxDigits = 35;  // 10^35 < 2^127, so the digits never overflow
constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }
}  // namespace

std::optional<Decimal> take_decimal(std::string_view& text) {
  Decimal value;
  unsigned count = 0;
  std::size_t i = 0;
  auto take_digits = [&](bool fraction) {
    std::size_t start = i;
    for (; i < text.size() && is_digit(text[i]); ++i) {
      if (++count > kMaxDigits) return false;
      value.digits = value.digits * 10 + static_cast<unsigned>(text[i] - '0');
      if (fraction) ++value.scale;
    }
    return i > start;
  };
  if (!take_digits(false)) return std::nullopt;
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (!take_digits(true)) return std::nullopt;
  }
  text.remove_prefix(i);
  return value;
}

std::optional<std::uint64_t> scale_decimal(Decimal value, std::uint64_t multiplier) {
  unsigned __int128 divisor = 1;
  for (unsigned k = 0; k < value.scale; ++k) divisor *= 10;
  // digits < 10^35 and multiplier < 2^64 could overflow 2^128: check before multiplying.
  constexpr auto kMax = std::numeric_limits<unsigned __int128>::max();
  if (multiplier != 0 && value.digits > kMax / multiplier) return std::nullopt;
  unsigned __int128 scaled = (value.digits * multiplier + divisor / 2) / divisor;
  if (scaled > std::numeric_limits<std::uint64_t>::max()) return std::nullopt;
  return static_cast<std::uint64_t>(scaled);
}

}  // namespace loom::detail
