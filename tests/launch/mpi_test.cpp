#include "loom/launch/mpi.hpp"

#include <gtest/gtest.h>

namespace loom::launch {
namespace {

TEST(Mpi, MpirunBindsNothingAndStartsEachRankThroughTheWrapper) {
  const MpiPlan plan{{{"node0", 4}, {"node1", 2}},
                     "/opt/loom/loom-rank",
                     "/opt/loom/loom-rsh",
                     "eth1",
                     {"./app", "--steps", "3"}};
  const std::vector<std::string> argv = mpirun_argv(plan);
  const std::vector<std::string> expected{"mpirun",
                                          "-np",
                                          "6",
                                          "--host",
                                          "node0:4,node1:2",
                                          "--map-by",
                                          "slot",
                                          "--bind-to",
                                          "none",
                                          "--mca",
                                          "plm_rsh_agent",
                                          "/opt/loom/loom-rsh",
                                          "--mca",
                                          "plm_rsh_no_tree_spawn",
                                          "1",
                                          "--mca",
                                          "oob_tcp_if_include",
                                          "eth1",
                                          "--mca",
                                          "btl_tcp_if_include",
                                          "eth1",
                                          "/opt/loom/loom-rank",
                                          "./app",
                                          "--steps",
                                          "3"};
  EXPECT_EQ(argv, expected);
  EXPECT_EQ(nodelist(plan.nodes), "node0,node1");
}

// What Open MPI 4.1 hands its rsh agent (seen with a recording agent): the daemon's words,
// values quoted for the remote shell.
TEST(Mpi, TheDaemonsCommandIsSplitAsAShellWouldAndOnlyOrtedPasses) {
  const std::vector<std::string> given{" orted",
                                       "--daemonize",
                                       "-mca",
                                       "ess",
                                       "\"env\"",
                                       "-mca",
                                       "orte_hnp_uri",
                                       "\"644218880.0;tcp://198.18.0.2:53691\"",
                                       "-mca",
                                       "pmix",
                                       "\"^s1,s2,cray,isolated\""};
  std::string line;
  for (const std::string& word : given) line += word + " ";
  auto words = split_command(line);
  ASSERT_TRUE(words) << words.error().to_string();
  const std::vector<std::string> expected{"orted",
                                          "--daemonize",
                                          "-mca",
                                          "ess",
                                          "env",
                                          "-mca",
                                          "orte_hnp_uri",
                                          "644218880.0;tcp://198.18.0.2:53691",
                                          "-mca",
                                          "pmix",
                                          "^s1,s2,cray,isolated"};
  EXPECT_EQ(*words, expected);
  auto arguments = daemon_arguments(*words);
  ASSERT_TRUE(arguments) << arguments.error().to_string();
  EXPECT_EQ(arguments->size(), expected.size() - 2)
      << "orted itself and --daemonize are not its arguments";
  EXPECT_EQ(arguments->front(), "-mca");

  EXPECT_EQ(split_command(R"(a 'b c' "d \"e\" $f" g\ h)").value(),
            (std::vector<std::string>{"a", "b c", "d \"e\" $f", "g h"}));
  EXPECT_EQ(split_command("say \"unclosed").error().message(),
            "command \"say \"unclosed\": a \" at 4 is not closed");
  for (const char* other :
       {"sh -c orted", "/usr/bin/orted -mca x y", "PATH=/tmp orted", "orted2", ""}) {
    auto refused = daemon_arguments(split_command(other).value());
    ASSERT_FALSE(refused) << other;
    EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
    EXPECT_NE(refused.error().message().find("runs only Open MPI's daemon, orted"),
              std::string::npos);
  }
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
