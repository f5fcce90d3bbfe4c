// QOS preemption on a live cluster (issue 20): a debug job on a full node has the normal
// job there sent SIGTERM and requeued, starts in its room, and the preempted job later runs
// again, with its id, to completion.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "cluster_test.hpp"

namespace loom::testing {
namespace {

using nlohmann::json;

class PreemptionTest : public ClusterTest {
 protected:
  std::string config() const override {
    return R"([controller]
kill_grace = "5s"

[[qos]]
name = "debug"
priority = 100
users = ["loom-bob"]
preempt = ["normal"]
)";
  }
  std::unique_ptr<LocalCluster> make_cluster() const override {
    return std::make_unique<LocalCluster>(1, "pack:1 numa:1 core:4 pu:1", config());
  }
};

TEST_F(PreemptionTest, TheVictimIsSentSigtermRequeuedAndRunsAgainAfterTheDebugJob) {
  // It says when it starts and when SIGTERM reaches it, then waits for `go`; `order` is
  // written by both users' jobs.
  const std::uint64_t victim =
      submit({"submit", "-c", "4", "--", "sh", "-c",
              "umask 0; echo start >> order; trap 'echo term >> order; exit 143' TERM; "
              "while [ ! -e go ]; do sleep 0.05; done; echo done >> order"});
  wait_running(victim);
  const Completed submitted =
      cluster_->loom("loom-bob",
                     {"submit", "--qos", "debug", "-c", "4", "--", "sh", "-c",
                      "echo urgent >> order; while [ ! -e release ]; do sleep 0.05; done"},
                     dir_.string());
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  const std::string urgent = lines(submitted.out).at(0);
  const Completed refused = alice({"submit", "--qos", "debug", "--", "true"});
  EXPECT_NE(refused.err.find("--qos debug: loom-alice may not use it"), std::string::npos)
      << refused.err;

  // While the debug job runs, the victim waits, requeued with its id.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  json running;
  while (std::chrono::steady_clock::now() < deadline) {
    running = json::parse(cluster_->loom("", {"show", urgent, "--json"}).out);
    if (running["state"] == "RUNNING") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(running["state"], "RUNNING") << running.dump();
  const json requeued = show(victim);
  EXPECT_EQ(requeued["state"], "PENDING");
  EXPECT_EQ(requeued["reason"], "Preempted by job " + urgent);
  EXPECT_EQ(requeued["reason_code"], "PREEMPTED");

  std::ofstream(dir_ / "release") << "";
  wait_running(victim);  // again, in the room the debug job left
  std::ofstream(dir_ / "go") << "";
  EXPECT_EQ(finish(victim)["state"], "COMPLETED");
  EXPECT_EQ(read("order"), "start\nterm\nurgent\nstart\ndone\n")
      << "SIGTERM to the victim, the debug job's start, the victim again";
}

}  // namespace
}  // namespace loom::testing
