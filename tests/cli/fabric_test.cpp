#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "run.hpp"

namespace loom {
namespace {

using loom::testing::built;
using loom::testing::run;
using nlohmann::json;

TEST(LoomFabricInfo, ListsTheProvidersAndTheChoice) {
  auto done = run({built("cli/loom"), "fabric", "info", "--json"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  json j = json::parse(done.out);
  bool shm = false, tcp_on_lo = false;
  for (const json& p : j["providers"]) {
    for (const char* key : {"name", "fabric", "domain", "ep_type", "mr_mode"})
      EXPECT_TRUE(p.contains(key)) << key;
    if (p["name"] == "shm") {
      shm = true;
      EXPECT_EQ(p["mr_mode"], json({"FI_MR_VIRT_ADDR"}));
    }
    if (p["name"] == "tcp;ofi_rxm" && p["domain"] == "lo") tcp_on_lo = true;
  }
  EXPECT_TRUE(shm);
  EXPECT_TRUE(tcp_on_lo);
  // No verbs here: the fallback order lands on tcp;ofi_rxm, off loopback when it can.
  ASSERT_TRUE(j["chosen"].is_object()) << done.out;
  EXPECT_EQ(j["chosen"]["name"], "tcp;ofi_rxm");
}

TEST(LoomFabricInfo, FollowsFiProvider) {
  auto done = run({"env", "FI_PROVIDER=shm", built("cli/loom"), "fabric", "info", "--json"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  EXPECT_EQ(json::parse(done.out)["chosen"]["name"], "shm");
}

}  // namespace
}  // namespace loom
