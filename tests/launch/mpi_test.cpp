#include "loom/launch/mpi.hpp"

#include <gtest/gtest.h>

namespace loom::launch {
namespace {

TEST(Mpi, MpirunBindsNothingAndStartsEachRankThroughTheWrapper) {
  const MpiPlan plan{{{"node0", 4}, {"node1", 2}}, "/opt/loom/loom-rank", "/opt/loom/loom-rsh", "eth1", {"./app", "--steps", "3"}};
  const std::vector<std::string> argv = mpirun_argv(plan);
  const std::vector<std::string> expected{
      "mpirun", "-np", "6", "--host", "node0:4,node1:2", "--map-by", "slot", "--bind-to", "none",
      "--mca", "plm_rsh_agent", "/opt/loom/loom-rsh", "--mca", "plm_rsh_no_tree_spawn", "1",
      "--mca", "oob_tcp_if_include", "eth1", "--mca", "btl_tcp_if_include", "eth1",
      "-x", "LOOM_JOB_ID", "-x", "LOOM_NTASKS", "-x", "LOOM_BB_DIR", "-x", "LOOM_NODELIST", "-x", "LOOM_STAGED_FILES", "-x", "LOOM_RANK_BINDING",
      "/opt/loom/loom-rank", "./app", "--steps", "3"};
  EXPECT_EQ(argv, expected);
  EXPECT_EQ(nodelist(plan.nodes), "node0,node1");
}

TEST(Mpi, RankBindingsRoundTripAndBadOnesAreRefused) {
  const std::vector<RankBinding> ranks{{0, {0, 1}, 0}, {1, {2, 3}, 1}, {2, {4}, std::nullopt}};
  const std::string text = encode_bindings(ranks);
  EXPECT_EQ(text, "0=0,1@0;1=2,3@1;2=4@");
  auto decoded = decode_bindings(text);
  ASSERT_TRUE(decoded) << decoded.error().to_string();
  EXPECT_EQ(*decoded, ranks);
  for (const char* bad : {"0=1", "x=1@0", "0=1,@0", "0=1@z"}) {
    auto refused = decode_bindings(bad);
    ASSERT_FALSE(refused) << bad;
    EXPECT_NE(refused.error().message().find("LOOM_RANK_BINDING"), std::string::npos);
  }
}

}  // namespace
}  // namespace loom::launch
