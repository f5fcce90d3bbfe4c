// Strong id types, so that a JobId is never passed where a NodeId belongs.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>

namespace loom {

template <typename Tag, typename Rep>
class StrongId {
 public:
  using rep = Rep;

  constexpr StrongId() = default;
  constexpr explicit StrongId(Rep value) : value_(value) {}

  constexpr Rep value() const { return value_; }
  friend constexpr auto operator<=>(StrongId, StrongId) = default;

 private:
  Rep value_{};
};

using JobId = StrongId<struct JobIdTag, std::uint64_t>;
using NodeId = StrongId<struct NodeIdTag, std::uint32_t>;

}  // namespace loom

template <typename Tag, typename Rep>
struct std::hash<loom::StrongId<Tag, Rep>> {
  std::size_t operator()(loom::StrongId<Tag, Rep> id) const noexcept {
    return std::hash<Rep>{}(id.value());
  }
};
