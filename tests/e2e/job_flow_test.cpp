// The job flow end to end: loomctld and loomd as processes, `loom` as the user runs it.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "local_cluster.hpp"

namespace loom {
namespace {

using loom::testing::Completed;
using loom::testing::LocalCluster;
using nlohmann::json;

class JobFlow : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "agents run as root, as loomd does";
    dir_ = loom::testing::temp_path("jobs");
    std::filesystem::create_directories(dir_);
    ::chmod(dir_.c_str(), 01777);
    cluster_ = std::make_unique<LocalCluster>(std::vector<std::string>{"pack:1 numa:2 core:2 pu:1"});
  }
  void TearDown() override {
    cluster_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::uint64_t submit(const std::vector<std::string>& args) {
    Completed done = cluster_->loom("loom-alice", args, dir_.string());
    EXPECT_EQ(done.exit_code, 0) << done.err;
    return done.exit_code == 0 ? std::stoull(done.out) : 0;
  }

  // Polls `loom show --json` until the job is in one of `states` (bounded: 30 s).
  json wait_state(std::uint64_t id, std::initializer_list<const char*> states) {
    json j;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      Completed done = cluster_->loom("loom-alice", {"show", std::to_string(id), "--json"});
      if (done.exit_code == 0) {
        j = json::parse(done.out);
        for (const char* s : states) {
          if (j["state"] == s) return j;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "job " << id << " stayed " << j.dump();
    return j;
  }

  std::string read(const std::string& name) {
    std::ifstream in(dir_ / name);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  std::filesystem::path dir_;
  std::unique_ptr<LocalCluster> cluster_;
};

TEST_F(JobFlow, AJobRunsAsItsUserBoundAsPlacedAndItsOutputLands) {
  const std::uint64_t id = submit({"submit", "-n", "2", "-o", "out-%j.txt", "--", "sh", "-c",
                                   "echo rank=$LOOM_RANK job=$LOOM_JOB_ID uid=$(id -u) $(grep Cpus_allowed_list /proc/self/status)"});
  ASSERT_NE(id, 0u);
  json j = wait_state(id, {"COMPLETED", "FAILED"});
  EXPECT_EQ(j["state"], "COMPLETED");
  EXPECT_EQ(j["exit_code"], 0);
  ASSERT_EQ(j["placement"].size(), 2u);
  const std::string out = read(fmt::format("out-{}.txt", id));
  const uid_t alice = ::getpwnam("loom-alice")->pw_uid;
  // Simulated node: 4 cores over 2 domains; ranks 0 and 1 on cores 0 and 1, mapped onto
  // this machine's PUs k mod P.
  EXPECT_NE(out.find(fmt::format("rank=0 job={} uid={}", id, alice)), std::string::npos) << out;
  EXPECT_NE(out.find(fmt::format("rank=1 job={} uid={}", id, alice)), std::string::npos) << out;
  struct stat st{};
  ASSERT_EQ(::stat((dir_ / fmt::format("out-{}.txt", id)).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, alice);
}

TEST_F(JobFlow, AFailingJobReportsItsExitCodeAndASignalledOne128PlusTheSignal) {
  const std::uint64_t failing = submit({"submit", "--", "sh", "-c", "exit 7"});
  const std::uint64_t killed = submit({"submit", "--", "sh", "-c", "kill -TERM $$"});
  json f = wait_state(failing, {"FAILED", "COMPLETED"});
  EXPECT_EQ(f["state"], "FAILED");
  EXPECT_EQ(f["exit_code"], 7);
  json k = wait_state(killed, {"FAILED", "COMPLETED"});
  EXPECT_EQ(k["exit_code"], 128 + 15);
  EXPECT_EQ(k["signal"], 15);
}

TEST_F(JobFlow, CancelEndsARunningJobAndLeavesNoProcess) {
  const std::uint64_t id = submit({"submit", "--", "sh", "-c", "sleep 1001 & sleep 1001"});
  wait_state(id, {"RUNNING"});
  Completed cancel = cluster_->loom("loom-alice", {"cancel", std::to_string(id)});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  json j = wait_state(id, {"CANCELLED"});
  EXPECT_EQ(j["reason"], "cancelled by loom-alice");
  Completed left = loom::testing::run({"sh", "-c", "pgrep -u loom-alice -f 'sleep 1001' || true"});
  EXPECT_EQ(left.out, "");
}

TEST_F(JobFlow, AJobPastItsWalltimeEndsTimeout) {
  const std::uint64_t id = submit({"submit", "-t", "2s", "--", "sleep", "1002"});
  json j = wait_state(id, {"TIMEOUT", "COMPLETED", "FAILED"});
  EXPECT_EQ(j["state"], "TIMEOUT");
  EXPECT_EQ(j["reason"], "TimeLimit");
}

TEST_F(JobFlow, OthersJobsAreInvisibleAndBadInputGetsOneLine) {
  const std::uint64_t id = submit({"submit", "--", "true"});
  Completed bob = cluster_->loom("loom-bob", {"show", std::to_string(id)});
  EXPECT_EQ(bob.exit_code, 1);
  EXPECT_EQ(bob.err, fmt::format("loom: job {} does not exist\n", id));
  Completed queue = cluster_->loom("loom-bob", {"queue", "--json"});
  ASSERT_EQ(queue.exit_code, 0) << queue.err;
  EXPECT_TRUE(json::parse(queue.out)["jobs"].empty());
  Completed huge = cluster_->loom("loom-alice", {"submit", "-c", "3", "--", "true"});
  EXPECT_EQ(huge.exit_code, 1);
  EXPECT_EQ(huge.err, "loom: cpus-per-task 3 exceeds the largest NUMA domain (2 cores); ask for --spread-numa to cross domains\n");
  Completed size = cluster_->loom("loom-alice", {"submit", "--mem-per-task", "lots", "--", "true"});
  EXPECT_EQ(size.exit_code, 1);
  EXPECT_NE(size.err.find("loom: --mem-per-task: invalid size \"lots\""), std::string::npos) << size.err;
}

TEST_F(JobFlow, OnlyRootMayRegisterANode) {
  Completed rogue = loom::testing::run({"runuser", "-u", "loom-bob", "--", loom::testing::built("agent/loomd"),
                                        "--controller", cluster_->address(), "--name", "rogue", "--synthetic",
                                        "pack:1 core:64 pu:1"});
  EXPECT_NE(rogue.exit_code, 0);
  EXPECT_NE(rogue.err.find("an agent must run as root; loom-bob"), std::string::npos) << rogue.err;
}

}  // namespace
}  // namespace loom
