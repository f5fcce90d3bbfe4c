// Exact decimal numbers for the size and duration parsers: "1.5" is 15 / 10^1, so that
// "1.5TiB" is computed in integers and never through a double's rounding.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace loom::detail {

struct Decimal {
  unsigned __int128 digits = 0;  // the number with its decimal point removed
  unsigned scale = 0;            // how many of those digits follow the point
};

// The leading "D+[.D+]" of text, consuming it; nullopt when text does not start with a
// digit or has more digits than we can hold exactly (35, ample for any real size).
std::optional<Decimal> take_decimal(std::string_view& text);

// value * multiplier, rounded to the nearest integer; nullopt past UINT64_MAX.
std::optional<std::uint64_t> scale_decimal(Decimal value, std::uint64_t multiplier);

}  // namespace loom::detail
