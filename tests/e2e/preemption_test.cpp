// QOS preemption on a live cluster (issue 20): a debug job on a full node has the normal
// job there sent SIGTERM and requeued, starts in its room, and the preempted job later runs
// again, with its id, to completion; its slice kept for it meanwhile, unless the node needs
// the room or the job will not run there again.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <thread>

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
    return std::make_unique<LocalCluster>(1, "pack:1 numa:1 core:4 pu:1", config(), up_args());
  }
  virtual std::vector<std::string> up_args() const { return {}; }

  // Submits, as loom-bob, a debug job that runs until the file `release`.
  std::string submit_urgent(const std::vector<std::string>& options = {}) {
    std::vector<std::string> args{"submit", "--qos", "debug", "-c", "4"};
    args.insert(args.end(), options.begin(), options.end());
    args.insert(args.end(), {"--", "sh", "-c", "while [ ! -e release ]; do sleep 0.05; done"});
    const Completed submitted = cluster_->loom("loom-bob", args, dir_.string());
    EXPECT_EQ(submitted.exit_code, 0) << submitted.err;
    return lines(submitted.out).at(0);
  }
  // Waits (bounded: 30 s) until the job, anybody's, is in `state`.
  nlohmann::json wait_state(const std::string& id, const std::string& state) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    auto shown = [&] { return json::parse(cluster_->loom("", {"show", id, "--json"}).out); };
    nlohmann::json j = shown();
    while (j["state"] != state && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      j = shown();
    }
    EXPECT_EQ(j["state"], state) << j.dump();
    return j;
  }
  // Whether the node keeps a slice for the job (its record beside the slice's image).
  bool keeps_slice(std::uint64_t job) const {
    const std::string record = fmt::format("job_{}.kept", job);
    return std::ranges::any_of(slices_left(), [&](const std::string& path) {
      return std::filesystem::path(path).filename() == record;
    });
  }
  // A job that, in its first run, marks its slice, changes its staged b.bin and runs until
  // it is killed; run again, it says whether it found its mark and copies out b.bin.
  std::uint64_t submit_marking(const std::string& bb) {
    return submit({"submit", "--bb", bb, "--stage-in", "storage:/a.bin", "--stage-in",
                   "storage:/b.bin", "-c", "4", "--", "sh", "-c",
                   "umask 0; if [ -e \"$LOOM_BB_DIR/mark\" ]; then echo again >> order; "
                   "cp \"$LOOM_BB_DIR/b.bin\" b-again.bin; exit 0; fi; "
                   "touch \"$LOOM_BB_DIR/mark\"; echo x >> \"$LOOM_BB_DIR/b.bin\"; "
                   "echo start >> order; while true; do sleep 0.05; done"});
  }
  void write_inputs() const {
    const std::filesystem::path exported = cluster_->storage_export();
    std::ofstream(exported / "a.bin") << std::string(3 << 20, 'a');
    std::ofstream(exported / "b.bin") << std::string(1 << 20, 'b');
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

// The requeued job starts again in the slice it left: a.bin is not staged again, b.bin,
// which the job changed, is; once it has ended nothing of the slice is left.
TEST_F(PreemptionTest, ARequeuedJobFindsItsSliceAsItLeftItWithTheFilesItChangedStagedAgain) {
  write_inputs();
  const std::uint64_t victim = submit_marking("16M");
  wait_running(victim);
  const std::string urgent = submit_urgent({"--bb", "16M"});
  wait_state(urgent, "RUNNING");
  EXPECT_EQ(show(victim)["state"], "PENDING");
  EXPECT_TRUE(keeps_slice(victim));

  std::ofstream(dir_ / "release") << "";
  const json ended = finish(victim);
  EXPECT_EQ(ended["state"], "COMPLETED") << ended.dump();
  EXPECT_EQ(read("order"), "start\nagain\n") << "the second run found its mark";
  EXPECT_TRUE(read("b-again.bin") == std::string(1 << 20, 'b')) << "b.bin was staged again, whole";
  const json& staging = ended["staging"];
  ASSERT_EQ(staging.size(), 2u) << ended.dump();
  EXPECT_EQ(staging[0]["state"], "done");
  EXPECT_EQ(staging[0]["bytes_done"], 3 << 20);
  ASSERT_EQ(staging[0]["notes"].size(), 1u) << staging.dump();
  EXPECT_NE(staging[0]["notes"][0].get<std::string>().find("kept"), std::string::npos);
  EXPECT_EQ(staging[1]["state"], "done");
  EXPECT_TRUE(staging[1]["notes"].empty()) << staging.dump();
  EXPECT_EQ(slices_left(), std::vector<std::string>{});
}

// A requeued job that is cancelled while it waits has its kept slice removed.
TEST_F(PreemptionTest, ACancelledRequeuedJobsKeptSliceIsRemoved) {
  const std::uint64_t victim = submit(
      {"submit", "--bb", "8M", "-c", "4", "--", "sh", "-c", "while true; do sleep 0.05; done"});
  wait_running(victim);
  wait_state(submit_urgent(), "RUNNING");
  ASSERT_TRUE(keeps_slice(victim));
  ASSERT_EQ(alice({"cancel", std::to_string(victim)}).exit_code, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!slices_left().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(slices_left(), std::vector<std::string>{});
  std::ofstream(dir_ / "release") << "";
}

// A node whose device is too small for both slices: the debug job's slice evicts the kept
// one, and the requeued job starts again in a new slice, its files staged again. Its first
// run's SIGKILL, due kill_grace after its SIGTERM, does not strike the second.
class SmallDevicePreemptionTest : public PreemptionTest {
 protected:
  std::string config() const override {
    std::string c = PreemptionTest::config();
    return c.replace(c.find("\"5s\""), 4, "\"2s\"");
  }
  std::vector<std::string> up_args() const override { return {"--nvme", "64M"}; }
};

TEST_F(SmallDevicePreemptionTest, AKeptSliceGivesWayToTheSliceOfTheJobThatPreemptedIt) {
  write_inputs();
  const std::uint64_t victim = submit_marking("40M");
  wait_running(victim);
  const auto preempted = std::chrono::steady_clock::now();
  const std::string urgent = submit_urgent({"--bb", "40M"});
  wait_state(urgent, "RUNNING");
  EXPECT_FALSE(keeps_slice(victim)) << "evicted for the debug job's slice";
  std::ofstream(dir_ / "release") << "";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (read("order") == "start\n" && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(read("order"), "start\nstart\n") << "a new slice: no mark in it";
  std::this_thread::sleep_until(preempted +
                                std::chrono::seconds(3));  // past the first SIGKILL's time
  EXPECT_EQ(show(victim)["state"], "RUNNING");
  ASSERT_EQ(alice({"cancel", std::to_string(victim)}).exit_code, 0);
  EXPECT_EQ(finish(victim)["state"], "CANCELLED");
}

}  // namespace
}  // namespace loom::testing
