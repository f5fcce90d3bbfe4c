// A centre's policy in the live controller (issue 20): loomctld schedules by the
// configuration's [scheduler] section, and SIGHUP (systemctl reload) applies a new one to a
// running controller without touching a job.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>

#include "cluster_test.hpp"

namespace loom::testing {
namespace {

class PolicyTest : public ClusterTest {
 protected:
  std::string config() const override { return "[controller]\nkill_grace = \"2s\"\n"; }
  std::unique_ptr<LocalCluster> make_cluster() const override {
    return std::make_unique<LocalCluster>(1, "pack:1 numa:1 core:4 pu:1", config());
  }
  // Rewrites the daemons' file and has loomctld read it again: the line of its log that
  // says `answer`.
  std::string reload(const std::string& scheduler, const std::string& answer) {
    std::ofstream(cluster_->state_dir() / "loom.toml") << config() << "[scheduler]\n" << scheduler;
    EXPECT_EQ(::kill(daemon("loomctld"), SIGHUP), 0);
    return LocalCluster::wait_for(cluster_->state_dir() / "state" / "loomctld.log", answer);
  }
};

TEST_F(PolicyTest, ASighupOrdersTheNextPassByTheNewPolicyAndABadFileChangesNothing) {
  const std::uint64_t blocker = submit(
      {"submit", "-c", "4", "--", "/bin/sh", "-c", "while [ ! -e go ]; do sleep 0.05; done"});
  wait_running(blocker);
  // Both need the whole node: first come, the longer one would start first.
  const std::uint64_t longer =
      submit({"submit", "-c", "4", "-t", "1:00:00", "--", "/bin/sh", "-c", "echo long >> order"});
  const std::uint64_t shorter =
      submit({"submit", "-c", "4", "-t", "1", "--", "/bin/sh", "-c", "echo short >> order"});

  const std::string refused = reload("order = \"lottery\"\n", "the scheduler keeps its policy");
  EXPECT_NE(refused.find("key 'scheduler.order' must be"), std::string::npos) << refused;
  reload("order = \"sjf\"\nbackfill = \"none\"\n", "SIGHUP: scheduler: sjf order, none backfill");

  std::ofstream(dir_ / "go") << "";
  EXPECT_EQ(finish(blocker)["state"], "COMPLETED");
  EXPECT_EQ(finish(shorter)["state"], "COMPLETED");
  EXPECT_EQ(finish(longer)["state"], "COMPLETED");
  EXPECT_EQ(read("order"), "short\nlong\n");
}

}  // namespace
}  // namespace loom::testing
