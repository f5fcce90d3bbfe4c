#include "loom/fabric/registration_cache.hpp"

namespace loom::fabric {

RegistrationCache::RegistrationCache(std::shared_ptr<Endpoint> endpoint, std::uint64_t max_bytes,
                                     bool enabled)
    : endpoint_(std::move(endpoint)), max_bytes_(max_bytes), enabled_(enabled) {}

Result<std::shared_ptr<const MemoryRegion>> RegistrationCache::get(void* buffer, std::size_t length,
                                                                   std::uint64_t access) {
  const auto start = reinterpret_cast<std::uintptr_t>(buffer);
  const std::uintptr_t end = start + length;
  if (enabled_) {
    // Regions never overlap in the cache (see below), so only the one starting at or
    // before `start` can cover the request.
    auto it = by_start_.upper_bound(start);
    if (it != by_start_.begin()) {
      --it;
      Entry& e = it->second;
      if (e.end >= end && (e.access & access) == access) {
        ++stats_.hits;
        lru_.splice(lru_.begin(), lru_, e.lru);
        return e.region;
      }
    }
  }
  ++stats_.misses;
  std::unique_ptr<MemoryRegion> made =
      LOOM_TRY(MemoryRegion::register_memory(*endpoint_, buffer, length, access));
  std::shared_ptr<const MemoryRegion> region = std::move(made);
  if (!enabled_) return region;
  // The new region replaces any it overlaps, so lookups stay a single interval probe.
  invalidate(buffer, length);
  lru_.push_front(start);
  by_start_.emplace(start, Entry{end, access, region, lru_.begin()});
  stats_.registered_bytes += length;
  evict_over_budget();
  return region;
}

void RegistrationCache::erase(std::map<std::uintptr_t, Entry>::iterator it) {
  stats_.registered_bytes -= it->second.end - it->first;
  lru_.erase(it->second.lru);
  by_start_.erase(it);
}

void RegistrationCache::invalidate(const void* buffer, std::size_t length) {
  const auto start = reinterpret_cast<std::uintptr_t>(buffer);
  const std::uintptr_t end = start + length;
  auto it = by_start_.upper_bound(start);
  if (it != by_start_.begin() && std::prev(it)->second.end > start) --it;
  while (it != by_start_.end() && it->first < end) erase(it++);
}

void RegistrationCache::evict_over_budget() {
  // Least recently used first; a region a caller still holds stays (its owner keeps it
  // registered), so the budget may be exceeded while callers hold more than it.
  auto position = lru_.end();
  while (stats_.registered_bytes > max_bytes_ && position != lru_.begin()) {
    --position;
    auto it = by_start_.find(*position);
    if (it->second.region.use_count() > 1) continue;
    const auto after = std::next(position);  // erase() drops `position` from the list
    erase(it);
    position = after;
    ++stats_.evictions;
  }
}

}  // namespace loom::fabric
