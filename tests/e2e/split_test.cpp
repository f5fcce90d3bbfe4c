// A network split: one host of `loom up --netns 2` cut off from the controller (its link
// down) for about ten seconds, with short configured deadlines. Its --requeue job is killed
// by its agent (agent.fence_after) before the controller starts it again on the other host
// (controller.requeue_after): the two copies never run at the same time. Its other jobs
// are unreachable, not final, until controller.requeue_after; then they are lost, and what
// still runs of them is killed when the host is back.
#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>
#include <thread>

#include "cluster_test.hpp"
#include "run.hpp"

namespace loom::testing {
namespace {

using Clock = std::chrono::steady_clock;

class Split : public ClusterTest {
 protected:
  // Heartbeats every second: a host is DOWN after 2 s of silence, its agent fences after
  // 3 s, the controller requeues after 6 s.
  std::string config() const override {
    return "[controller]\nkill_grace = \"2s\"\nheartbeat_misses = 2\nrequeue_after = \"0:06\"\n"
           "[agent]\nfence_after = \"0:03\"\n";
  }
  std::unique_ptr<LocalCluster> make_cluster() const override {
    return std::make_unique<LocalCluster>(2, "pack:1 numa:1 core:2 pu:1", config(),
                                          std::vector<std::string>{"--netns", "2"});
  }

  // The host's link to the bridge, from inside its namespace (through its agent's). Never
  // this machine's own: a testbed that fell back to loopback is a failure, not a target.
  void link(const std::string& host, const std::string& state) const {
    const pid_t agent = daemon("loomd", "--name " + host + " ");
    ASSERT_GT(agent, 0);
    const std::string ns = "/proc/" + std::to_string(agent) + "/ns/net";
    ASSERT_NE(std::filesystem::read_symlink(ns), std::filesystem::read_symlink("/proc/self/ns/net"))
        << host << " is not in a network namespace of its own";
    const Completed done = run({"nsenter", "--net=" + ns, "ip", "link", "set", "eth0", state});
    ASSERT_EQ(done.exit_code, 0) << done.err;
  }

  // Bounded (60 s): until `ready` holds.
  template <class F>
  static bool wait_until(F ready) {
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (!ready()) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return true;
  }

  std::string read_log() const {
    std::ifstream in(cluster_->state_dir() / "up.out");
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  // What a job wrote to ticks.txt: "HOST NANOSECONDS" lines, by host.
  std::map<std::string, std::vector<long long>> ticks() const {
    std::map<std::string, std::vector<long long>> by_host;
    for (const std::string& line : lines(read("ticks.txt"))) {
      std::istringstream words(line);
      std::string host;
      long long at = 0;
      if (words >> host >> at) by_host[host].push_back(at);
    }
    return by_host;
  }
};

TEST_F(Split, ARequeueJobCutOffIsFencedBeforeItRunsAgainElsewhere) {
  // A plain job: not fenced, it runs through the split.
  const std::uint64_t plain =
      submit({"submit", "-o", "plain.txt", "--", "sh", "-c",
              "echo start; while [ ! -e release ]; do sleep 0.1; done; echo end"});
  LocalCluster::wait_for(dir_ / "plain.txt", "start");
  // Each copy says where and when it runs, ten times a second, until it is killed.
  const std::uint64_t again =
      submit({"submit", "--requeue", "-o", "/dev/null", "--", "sh", "-c",
              "while :; do echo \"$(hostname) $(date +%s%N)\" >> ticks.txt; sleep 0.1; done"});
  ASSERT_TRUE(wait_until([&] { return !ticks().empty(); })) << show(again).dump();
  const std::string cut = show(again)["placement"][0]["node"];
  ASSERT_EQ(show(plain)["placement"][0]["node"], cut) << "best fit puts both on one host";
  const std::string other = cut == "node0" ? "node1" : "node0";

  link(cut, "down");
  const auto split = Clock::now();
  // Silent past the heartbeat window: unreachable, not final.
  ASSERT_TRUE(wait_until([&] { return show(plain)["reason_code"] == "NODE_UNREACHABLE"; }))
      << show(plain).dump() << "\n"
      << read_log();
  EXPECT_EQ(show(plain)["state"], "RUNNING");
  // Past controller.requeue_after the controller gives the host up and starts the
  // --requeue job on the other one; the plain job is lost.
  ASSERT_TRUE(wait_until([&] { return ticks().contains(other); })) << show(again).dump();
  EXPECT_EQ(show(again)["placement"][0]["node"], other);
  const nlohmann::json p = finish(plain);
  EXPECT_EQ(p["state"], "NODE_FAIL");
  EXPECT_EQ(p["reason"], "NodeFail: " + cut +
                             " was unreachable for longer than controller.requeue_after (0:06)");
  std::this_thread::sleep_until(split + std::chrono::seconds(10));
  link(cut, "up");

  // Back: what still ran of the plain job there is killed, as the controller has ended it.
  ASSERT_TRUE(wait_until([&] { return cluster_->job_processes(plain).empty(); }));
  EXPECT_EQ(read("plain.txt"), "start\n");
  ASSERT_EQ(alice({"cancel", std::to_string(again)}).exit_code, 0);
  EXPECT_EQ(finish(again)["state"], "CANCELLED");
  const auto by_host = ticks();
  ASSERT_TRUE(by_host.contains(cut) && by_host.contains(other));
  const long long first_ends = std::ranges::max(by_host.at(cut));
  const long long second_starts = std::ranges::min(by_host.at(other));
  EXPECT_LT(first_ends, second_starts)
      << "the copy on " << cut << " ran until " << first_ends << ", "
      << (first_ends - second_starts) / 1'000'000 << " ms after the copy on " << other << " began";
}

}  // namespace
}  // namespace loom::testing
