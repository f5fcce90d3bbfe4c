// A cache of memory registrations, since registering is expensive and staging reuses the
// same buffers: a lookup finds a registered region that covers the request (an interval
// search), least recently used regions are deregistered past a byte budget, and a caller
// that frees or remaps memory invalidates it explicitly. It can be switched off, and
// then every lookup registers afresh.
//
// Not thread-safe: one per endpoint, used by the thread that drives it.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>

#include "loom/common/error.hpp"
#include "loom/fabric/fabric.hpp"

namespace loom::fabric {

struct CacheStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t evictions = 0;
  std::uint64_t registered_bytes = 0;  // now
  friend bool operator==(const CacheStats&, const CacheStats&) = default;
};

class RegistrationCache {
 public:
  RegistrationCache(std::shared_ptr<Endpoint> endpoint, std::uint64_t max_bytes,
                    bool enabled = true);

  // A region covering [buffer, buffer + length) with at least `access`. The region stays
  // registered while the caller holds it, whatever the budget says.
  Result<std::shared_ptr<const MemoryRegion>> get(void* buffer, std::size_t length,
                                                  std::uint64_t access);

  // Forgets every region overlapping [buffer, buffer + length): call before freeing it.
  void invalidate(const void* buffer, std::size_t length);

  const CacheStats& stats() const { return stats_; }

 private:
  struct Entry {
    std::uintptr_t end;
    std::uint64_t access;
    std::shared_ptr<const MemoryRegion> region;
    std::list<std::uintptr_t>::iterator lru;  // position in lru_, most recent first
  };
  void evict_over_budget();
  void erase(std::map<std::uintptr_t, Entry>::iterator it);

  std::shared_ptr<Endpoint> endpoint_;
  std::uint64_t max_bytes_;
  bool enabled_;
  std::map<std::uintptr_t, Entry> by_start_;
  std::list<std::uintptr_t> lru_;
  CacheStats stats_;
};

}  // namespace loom::fabric
