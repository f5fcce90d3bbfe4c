#include "loom/common/index_list.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace loom {

namespace {

constexpr unsigned kMaxIndex = 1u << 20;  // far above any core count; bounds a range's size

}  // namespace

Result<std::vector<unsigned>> parse_index_list(std::string_view text) {
  auto fail = [&](std::string_view element, std::string_view why) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format(R"(invalid index list "{}": "{}" {})", text, element, why));
  };
  if (text.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "invalid index list \"\": empty");
  }
  std::vector<unsigned> out;
  for (std::size_t start = 0; start <= text.size();) {
    std::size_t comma = std::min(text.find(',', start), text.size());
    std::string_view element = text.substr(start, comma - start);
    auto number = [&](std::string_view digits, unsigned& value) {
      auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
      return !digits.empty() && ec == std::errc() && end == digits.data() + digits.size() &&
             value <= kMaxIndex;
    };
    unsigned first = 0, last = 0;
    std::size_t dash = element.find('-');
    if (dash == std::string_view::npos) {
      if (!number(element, first))
        return fail(element, "is not an index such as 3 or a range such as 0-7");
      last = first;
    } else {
      if (!number(element.substr(0, dash), first) || !number(element.substr(dash + 1), last)) {
        return fail(element, "is not an index such as 3 or a range such as 0-7");
      }
      if (last < first) return fail(element, "is a range that ends before it starts");
    }
    for (unsigned i = first; i <= last; ++i) out.push_back(i);
    start = comma + 1;
  }
  std::ranges::sort(out);
  out.erase(std::ranges::unique(out).begin(), out.end());
  return out;
}

std::string format_index_list(std::span<const unsigned> indexes) {
  std::vector<unsigned> sorted(indexes.begin(), indexes.end());
  std::ranges::sort(sorted);
  sorted.erase(std::ranges::unique(sorted).begin(), sorted.end());
  std::string out;
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j > i ? fmt::format("{}-{}", sorted[i], sorted[j]) : fmt::format("{}", sorted[i]);
    i = j + 1;
  }
  return out;
}

}  // namespace loom
