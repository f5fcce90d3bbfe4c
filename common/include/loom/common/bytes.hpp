// Byte counts as a type, and the one parser for sizes written by people.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "loom/common/error.hpp"

namespace loom {

// A count of bytes. Arithmetic is the caller's to keep in range: a size that could
// overflow is refused where it is parsed.
class Bytes {
 public:
  constexpr Bytes() = default;
  constexpr explicit Bytes(std::uint64_t count) : count_(count) {}

  constexpr std::uint64_t count() const { return count_; }

  friend constexpr auto operator<=>(Bytes, Bytes) = default;
  constexpr Bytes& operator+=(Bytes other) {
    count_ += other.count_;
    return *this;
  }
  constexpr Bytes& operator-=(Bytes other) {
    count_ -= other.count_;
    return *this;
  }
  friend constexpr Bytes operator+(Bytes a, Bytes b) { return a += b; }
  friend constexpr Bytes operator-(Bytes a, Bytes b) { return a -= b; }
  friend constexpr Bytes operator*(Bytes a, std::uint64_t n) { return Bytes(a.count_ * n); }

 private:
  std::uint64_t count_ = 0;
};

constexpr Bytes kibibytes(std::uint64_t n) { return Bytes(n << 10); }
constexpr Bytes mebibytes(std::uint64_t n) { return Bytes(n << 20); }
constexpr Bytes gibibytes(std::uint64_t n) { return Bytes(n << 30); }
constexpr Bytes tebibytes(std::uint64_t n) { return Bytes(n << 40); }

// Parses a size as people write it: a number, optionally with a fraction, then a unit.
//   no unit, or B                 bytes
//   K  M  G  T  P  (KiB MiB ...)  binary: powers of 1024, as Slurm's --mem means them
//   KB MB GB TB PB (kB)           decimal: powers of 1000, as disk vendors and hwloc write
// Letters are case-insensitive. A fraction is rounded to the nearest byte ("1.5TiB" is
// 1649267441664). Errors quote the input: invalid size "12X": unknown unit "X" ...
Result<Bytes> parse_bytes(std::string_view text);

// "512 B", "1 KiB", "1.5 GiB", "3.5 TiB": binary units, at most two decimals, so that a
// person reads it at a glance. Not for round-tripping: use count() for that.
std::string format_bytes(Bytes bytes);

}  // namespace loom
