// Accounts on a live cluster (issue 20): two accounts' shares divide a busy node between
// them, and a job past its account's NVMe limit waits, saying so, until there is room.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>

#include "cluster_test.hpp"

namespace loom::testing {
namespace {

using nlohmann::json;

// Every job, once none is pending or running (bounded: `limit`).
json settled_jobs(const LocalCluster& cluster, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  json jobs;
  while (std::chrono::steady_clock::now() < deadline) {
    jobs = json::parse(cluster.loom("", {"queue", "--all", "--json"}).out)["jobs"];
    if (std::ranges::none_of(
            jobs, [](const json& j) { return j["state"] == "PENDING" || j["state"] == "RUNNING"; }))
      return jobs;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ADD_FAILURE() << "jobs still pending or running after " << limit.count() << " s";
  return jobs;
}

class FairShareTest : public ClusterTest {
 protected:
  std::string config() const override {
    return R"([scheduler]
order = "fairshare"
fair_share_half_life = "1:00"

[[accounts]]
name = "small"
shares = 1
users = ["loom-alice"]

[[accounts]]
name = "large"
shares = 3
users = ["loom-bob"]
)";
  }
  std::unique_ptr<LocalCluster> make_cluster() const override {
    return std::make_unique<LocalCluster>(1, "pack:1 numa:1 core:16 pu:1", config());
  }
};

// Each user fills the node with 120 jobs of `sleep 2`: while both accounts have jobs
// waiting, the one with 3 shares holds 3/4 of the core-seconds allocated. Both queue while
// the node is drained: else the first to submit fills it before the other has a job.
TEST_F(FairShareTest, TwoAccountsWithSharesOneToThreeGetAQuarterAndThreeQuartersOfABusyNode) {
  ASSERT_EQ(cluster_->loom("", {"drain", "node0", "--reason", "queueing"}).exit_code, 0);
  const std::vector<std::string> array{"submit", "--array", "1-120", "-t", "1", "--", "sleep", "2"};
  for (const char* user : {"loom-alice", "loom-bob"}) {
    const Completed submitted = cluster_->loom(user, array, dir_.string());
    ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  }
  ASSERT_EQ(cluster_->loom("", {"resume", "node0"}).exit_code, 0);
  const json jobs = settled_jobs(*cluster_, std::chrono::seconds(120));
  ASSERT_EQ(jobs.size(), 240u);
  // Both accounts wait from the later first submission to the earlier last start.
  std::map<std::string, std::int64_t> first_submit, last_start;
  for (const json& j : jobs) {
    ASSERT_EQ(j["state"], "COMPLETED") << j.dump();
    const std::string account = j["account"];
    const std::int64_t submit = j["submit_time"], start = j["start_time"];
    first_submit[account] =
        first_submit.contains(account) ? std::min(first_submit[account], submit) : submit;
    last_start[account] = std::max(last_start[account], start);
  }
  ASSERT_EQ(first_submit.size(), 2u) << "each user's jobs charged to their account";
  const std::int64_t from = std::max(first_submit["small"], first_submit["large"]);
  const std::int64_t to = std::min(last_start["small"], last_start["large"]);
  ASSERT_GT(to - from, 5) << "both accounts had jobs waiting for a while";
  std::map<std::string, double> core_seconds;
  for (const json& j : jobs) {
    const std::int64_t start = j["start_time"], end = j["end_time"];
    core_seconds[j["account"]] +=
        static_cast<double>(std::max<std::int64_t>(0, std::min(end, to) - std::max(start, from)));
  }
  const double large = core_seconds["large"] / (core_seconds["large"] + core_seconds["small"]);
  RecordProperty("large_share", fmt::format("{:.3f}", large));
  EXPECT_NEAR(large, 0.75, 0.075) << fmt::format("over {} s: large {} core-seconds, small {}",
                                                 to - from, core_seconds["large"],
                                                 core_seconds["small"]);
}

class AccountLimitTest : public ClusterTest {
 protected:
  std::string config() const override {
    return R"([agent]
allow_root_jobs = true

[[accounts]]
name = "physics"
users = ["loom-alice"]
max_nvme = "100MiB"

[[accounts]]
name = "chemistry"
users = ["root"]
)";
  }
  // Polls `loom show` until the job's reason is not empty (bounded: 30 s).
  json with_reason(std::uint64_t id) {
    json j;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      j = show(id);
      if (!j["reason"].get<std::string>().empty()) return j;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "job " << id << " shows no reason: " << j.dump();
    return j;
  }
};

TEST_F(AccountLimitTest, AJobPastItsAccountsNvmeLimitWaitsWithTheReasonAndStartsWhenRoomIsFreed) {
  const std::uint64_t holder =
      submit({"submit", "--bb", "64M", "--", "sh", "-c", "while [ ! -e go ]; do sleep 0.05; done"});
  wait_running(holder);
  const std::uint64_t waiting = submit({"submit", "--bb", "64M", "--", "true"});
  const json pending = with_reason(waiting);
  EXPECT_EQ(pending["state"], "PENDING");
  EXPECT_EQ(pending["account"], "physics") << "loom-alice's account, unasked";
  EXPECT_EQ(pending["reason"], "AccountLimit: NVMe 64 MiB of 100 MiB held");
  EXPECT_EQ(pending["reason_code"], "ACCOUNT_LIMIT");
  const Completed queue = alice({"queue"});
  EXPECT_NE(queue.out.find("AccountLimit: NVMe 64 MiB of 100 MiB held"), std::string::npos)
      << queue.out;
  // Another account's job is not held back by it.
  const Completed other = cluster_->loom("", {"submit", "--bb", "64M", "--", "true"});
  ASSERT_EQ(other.exit_code, 0) << other.err;
  const Completed watched = cluster_->loom("", {"watch", "--json", lines(other.out).at(0)});
  ASSERT_FALSE(lines(watched.out).empty()) << watched.err;
  EXPECT_EQ(json::parse(lines(watched.out).back())["state"], "COMPLETED");

  std::ofstream(dir_ / "go") << "";
  EXPECT_EQ(finish(holder)["state"], "COMPLETED");
  EXPECT_EQ(finish(waiting)["state"], "COMPLETED");

  const Completed stranger = cluster_->loom("loom-bob", {"submit", "--", "true"}, dir_.string());
  EXPECT_NE(stranger.exit_code, 0);
  EXPECT_NE(stranger.err.find("loom-bob is in no account"), std::string::npos) << stranger.err;
  const Completed elsewhere = alice({"submit", "-A", "chemistry", "--", "true"});
  EXPECT_NE(elsewhere.err.find("--account chemistry: loom-alice is not in it"), std::string::npos)
      << elsewhere.err;

  // The record: each of alice's jobs with what it held and for how long.
  const Completed acct = alice({"acct", "--json"});
  ASSERT_EQ(acct.exit_code, 0) << acct.err;
  const json record = json::parse(acct.out)["jobs"];
  ASSERT_EQ(record.size(), 2u) << "alice's own: " << acct.out;
  for (const json& j : record) {
    EXPECT_EQ(j["account"], "physics");
    EXPECT_EQ(j["state"], "COMPLETED");
    EXPECT_EQ(j["cores"], 1);
    EXPECT_EQ(j["core_seconds"], j["elapsed_s"]);
    EXPECT_EQ(j["nvme_bytes"], 64 << 20);
    EXPECT_EQ(j["nvme_byte_seconds"], j["elapsed_s"].get<std::int64_t>() * (64 << 20));
    EXPECT_TRUE(j["cpu_seconds"].is_number()) << j.dump();
  }
  EXPECT_EQ(
      json::parse(cluster_->loom("", {"acct", "--json", "--account", "chemistry"}).out)["jobs"]
          .size(),
      1u);
  const Completed others = alice({"acct", "--user", "loom-bob"});
  EXPECT_NE(others.exit_code, 0);
  EXPECT_NE(others.err.find("only admins see other users' jobs"), std::string::npos) << others.err;

  // A persistent buffer is charged as a job is: its bytes count toward max_nvme.
  const Completed made = alice({"bb", "create", "scratch", "--size", "64M"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const json listed = json::parse(alice({"bb", "list", "--json"}).out)["buffers"];
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["account"], "physics");
  const Completed more = alice({"bb", "create", "more", "--size", "64M"});
  EXPECT_NE(more.exit_code, 0);
  EXPECT_NE(more.err.find("account physics: --size 64 MiB would pass its max_nvme 100 MiB (64 "
                          "MiB held)"),
            std::string::npos)
      << more.err;
  EXPECT_EQ(alice({"bb", "destroy", "scratch"}).exit_code, 0);
}

}  // namespace
}  // namespace loom::testing
