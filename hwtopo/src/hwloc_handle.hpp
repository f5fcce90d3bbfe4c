// Owners of hwloc's C handles (private to hwtopo). One move-only wrapper per handle, built
// by a factory that returns Result, so that no early return can leak a topology.
#pragma once

#include <hwloc.h>

#include <filesystem>
#include <string_view>
#include <utility>

#include "loom/common/error.hpp"

namespace loom::hwtopo::detail {

class Bitmap {
 public:
  Bitmap() : bitmap_(hwloc_bitmap_alloc()) {
    LOOM_CHECK(bitmap_ != nullptr, "hwloc_bitmap_alloc: out of memory");
  }
  ~Bitmap() { hwloc_bitmap_free(bitmap_); }
  Bitmap(Bitmap&& other) noexcept : bitmap_(std::exchange(other.bitmap_, nullptr)) {}
  Bitmap& operator=(Bitmap&& other) noexcept {
    std::swap(bitmap_, other.bitmap_);
    return *this;
  }
  Bitmap(const Bitmap&) = delete;
  Bitmap& operator=(const Bitmap&) = delete;

  hwloc_bitmap_t get() const { return bitmap_; }

 private:
  hwloc_bitmap_t bitmap_;
};

// A loaded hwloc topology. Immutable once built; hwloc documents concurrent reads of a
// loaded topology as safe, so it may be shared between threads for lookups and binding.
class HwlocTopology {
 public:
  static Result<HwlocTopology> live();
  static Result<HwlocTopology> xml(const std::filesystem::path& file);
  static Result<HwlocTopology> synthetic(std::string_view description);

  ~HwlocTopology() {
    if (topology_ != nullptr) hwloc_topology_destroy(topology_);
  }
  HwlocTopology(HwlocTopology&& other) noexcept
      : topology_(std::exchange(other.topology_, nullptr)) {}
  HwlocTopology& operator=(HwlocTopology&& other) noexcept {
    std::swap(topology_, other.topology_);
    return *this;
  }
  HwlocTopology(const HwlocTopology&) = delete;
  HwlocTopology& operator=(const HwlocTopology&) = delete;

  hwloc_topology_t get() const { return topology_; }

 private:
  explicit HwlocTopology(hwloc_topology_t topology) : topology_(topology) {}
  // configure sets the source on a fresh topology, returning hwloc's 0 or -1 (errno set).
  template <typename Configure>
  static Result<HwlocTopology> load(std::string_view what, Configure configure);

  hwloc_topology_t topology_;
};

}  // namespace loom::hwtopo::detail
