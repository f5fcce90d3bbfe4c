// An errno value's text, as strerror gives it ("No such file or directory"), but safe from
// any thread: strerror may write a static buffer. Header-only, so that the small programs
// that link no Loom library (loom-keeper, loom-rank) use it too.
#pragma once

#include <array>
#include <cstring>
#include <string>

namespace loom {

inline std::string errno_text(int code) {
  std::array<char, 128> buffer{};
  // GNU strerror_r: the text, in `buffer` or a static string of its own.
  return ::strerror_r(code, buffer.data(), buffer.size());
}

}  // namespace loom
