#include "loom/fabric/registration_cache.hpp"

#include <gtest/gtest.h>

#include "fabric_fixture.hpp"

namespace loom::fabric {
namespace {

using namespace loom::fabric::testing;

class Cache : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ep = open_endpoint("tcp;ofi_rxm");
    ASSERT_TRUE(ep.has_value()) << ep.error().to_string();
    endpoint_ = *ep;
  }
  std::shared_ptr<Endpoint> endpoint_;
  std::vector<std::byte> memory_ = std::vector<std::byte>(std::size_t{1} << 20);
  std::byte* at(std::size_t offset) { return memory_.data() + offset; }
};

TEST_F(Cache, ACoveredRequestIsAHit) {
  RegistrationCache cache(endpoint_, std::uint64_t{1} << 30);
  auto whole = cache.get(at(0), 65536, kAllAccess);
  ASSERT_TRUE(whole.has_value()) << whole.error().to_string();
  auto inside = cache.get(at(4096), 8192, FI_READ);
  ASSERT_TRUE(inside.has_value());
  EXPECT_EQ(inside->get(), whole->get());
  EXPECT_EQ(cache.stats(),
            (CacheStats{.hits = 1, .misses = 1, .evictions = 0, .registered_bytes = 65536}));
}

TEST_F(Cache, MoreAccessOrAWiderRangeIsAMissThatReplacesTheOldRegion) {
  RegistrationCache cache(endpoint_, std::uint64_t{1} << 30);
  ASSERT_TRUE(cache.get(at(0), 4096, FI_READ).has_value());
  ASSERT_TRUE(cache.get(at(0), 4096, FI_READ | FI_WRITE).has_value());
  ASSERT_TRUE(cache.get(at(0), 8192, FI_READ | FI_WRITE).has_value());
  EXPECT_EQ(cache.stats().misses, 3u);
  EXPECT_EQ(cache.stats().registered_bytes, 8192u);  // one region left, the widest
}

TEST_F(Cache, LeastRecentlyUsedGoesFirstPastTheBudget) {
  RegistrationCache cache(endpoint_, 3 * 4096);
  for (std::size_t i = 0; i < 3; ++i)
    ASSERT_TRUE(cache.get(at(i * 8192), 4096, kAllAccess).has_value());
  ASSERT_TRUE(cache.get(at(0), 4096, kAllAccess).has_value());         // 0 is now the most recent
  ASSERT_TRUE(cache.get(at(3 * 8192), 4096, kAllAccess).has_value());  // over budget: 8192 goes
  EXPECT_EQ(cache.stats().evictions, 1u);
  EXPECT_EQ(cache.stats().registered_bytes, 3u * 4096);
  const auto hits = cache.stats().hits;
  ASSERT_TRUE(cache.get(at(0), 4096, kAllAccess).has_value());
  EXPECT_EQ(cache.stats().hits, hits + 1);
  ASSERT_TRUE(cache.get(at(8192), 4096, kAllAccess).has_value());
  EXPECT_EQ(cache.stats().misses, 5u) << "the evicted region had to be registered again";
}

TEST_F(Cache, ARegionInUseIsNotEvicted) {
  RegistrationCache cache(endpoint_, 4096);
  auto held = cache.get(at(0), 4096, kAllAccess);
  ASSERT_TRUE(held.has_value());
  ASSERT_TRUE(cache.get(at(8192), 4096, kAllAccess).has_value());  // over budget, but returned
  ASSERT_TRUE(
      cache.get(at(16384), 4096, kAllAccess).has_value());  // evicts 8192, keeps the held one
  EXPECT_EQ(cache.stats().evictions, 1u);
  const auto hits = cache.stats().hits;
  auto again = cache.get(at(0), 4096, kAllAccess);
  EXPECT_EQ(again->get(), held->get());
  EXPECT_EQ(cache.stats().hits, hits + 1);
}

TEST_F(Cache, InvalidationForgetsOverlappingRegions) {
  RegistrationCache cache(endpoint_, std::uint64_t{1} << 30);
  ASSERT_TRUE(cache.get(at(0), 8192, kAllAccess).has_value());
  ASSERT_TRUE(cache.get(at(16384), 8192, kAllAccess).has_value());
  cache.invalidate(at(4096), 16384);  // overlaps both
  EXPECT_EQ(cache.stats().registered_bytes, 0u);
  ASSERT_TRUE(cache.get(at(0), 4096, kAllAccess).has_value());
  EXPECT_EQ(cache.stats().misses, 3u);
}

TEST_F(Cache, SwitchedOffEveryLookupRegisters) {
  RegistrationCache cache(endpoint_, std::uint64_t{1} << 30, false);
  auto a = cache.get(at(0), 4096, kAllAccess);
  auto b = cache.get(at(0), 4096, kAllAccess);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_NE(a->get(), b->get());
  EXPECT_EQ(cache.stats().misses, 2u);
  EXPECT_EQ(cache.stats().hits, 0u);
}

}  // namespace
}  // namespace loom::fabric
