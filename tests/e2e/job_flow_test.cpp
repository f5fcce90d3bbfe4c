// The job flow end to end: loomctld and loomd as processes, `loom` as the user runs it.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <set>

#include "cluster_test.hpp"
#include "loom/common/index_list.hpp"
#include "loom/proto/controller.grpc.pb.h"

namespace loom {
namespace {

using loom::testing::Completed;
using nlohmann::json;

// With a 2 s kill grace.
class JobFlow : public loom::testing::ClusterTest {
 protected:
  std::string config() const override { return "[controller]\nkill_grace = \"2s\"\n"; }
};

TEST_F(JobFlow, AJobRunsAsItsUserBoundAsPlacedAndItsOutputLands) {
  const std::uint64_t id = submit({"submit", "-n", "2", "-o", "out-%j.txt", "--", "sh", "-c",
                                   "echo rank=$LOOM_RANK job=$LOOM_JOB_ID uid=$(id -u) $(grep "
                                   "Cpus_allowed_list /proc/self/status)"});
  ASSERT_NE(id, 0u);
  json j = finish(id);
  EXPECT_EQ(j["state"], "COMPLETED");
  EXPECT_EQ(j["exit_code"], 0);
  ASSERT_EQ(j["placement"].size(), 2u);
  const std::string out = read(fmt::format("out-{}.txt", id));
  // Each rank reports the CPUs the kernel let it run on: what the agent said it applied.
  for (const json& rank : j["placement"]) {
    ASSERT_FALSE(rank["bound_cpus"].is_null()) << j.dump();
    std::vector<unsigned> cpus = rank["bound_cpus"];
    EXPECT_NE(out.find(fmt::format("rank={} job={}", rank["rank"].get<unsigned>(), id)),
              std::string::npos);
    // (the shell's word splitting turned /proc's tab into a space)
    EXPECT_NE(out.find(fmt::format("Cpus_allowed_list: {}", loom::format_index_list(cpus))),
              std::string::npos)
        << out;
  }
  const uid_t alice = ::getpwnam("loom-alice")->pw_uid;
  // Simulated node: 4 cores over 2 domains; ranks 0 and 1 on cores 0 and 1, mapped onto
  // this machine's PUs k mod P.
  EXPECT_NE(out.find(fmt::format("rank=0 job={} uid={}", id, alice)), std::string::npos) << out;
  EXPECT_NE(out.find(fmt::format("rank=1 job={} uid={}", id, alice)), std::string::npos) << out;
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / fmt::format("out-{}.txt", id)).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, alice);
}

TEST_F(JobFlow, AFailingJobReportsItsExitCodeAndASignalledOne128PlusTheSignal) {
  const std::uint64_t failing = submit({"submit", "--", "sh", "-c", "exit 7"});
  const std::uint64_t killed = submit({"submit", "--", "sh", "-c", "kill -TERM $$"});
  json f = finish(failing);
  EXPECT_EQ(f["state"], "FAILED");
  EXPECT_EQ(f["exit_code"], 7);
  json k = finish(killed);
  EXPECT_EQ(k["exit_code"], 128 + 15);
  EXPECT_EQ(k["signal"], 15);
}

TEST_F(JobFlow, CancelEndsARunningJobAndLeavesNoProcess) {
  const std::uint64_t id = submit({"submit", "--", "sh", "-c", "sleep 1001 & sleep 1001"});
  wait_running(id);
  Completed cancel = alice({"cancel", std::to_string(id)});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  json j = finish(id);
  EXPECT_EQ(j["state"], "CANCELLED");
  EXPECT_EQ(j["reason"], "cancelled by loom-alice");
  Completed left = loom::testing::run({"sh", "-c", "pgrep -u loom-alice -f 'sleep 1001' || true"});
  EXPECT_EQ(left.out, "");
}

// Walltime as Slurm enforces it: SIGTERM, and SIGKILL once the grace (2 s here) has passed.
TEST_F(JobFlow, AJobPastItsWalltimeGetsTermThenKillAndEndsTimeout) {
  const std::uint64_t polite = submit({"submit", "-t", "2s", "--", "sleep", "1002"});
  const std::uint64_t stubborn =
      submit({"submit", "-t", "2s", "-o", "stubborn.txt", "--", "sh", "-c",
              "trap 'echo got TERM' TERM; while :; do sleep 0.1; done"});
  json p = finish(polite);
  EXPECT_EQ(p["state"], "TIMEOUT");
  EXPECT_EQ(p["reason"], "TimeLimit");
  EXPECT_EQ(p["reason_code"], "TIME_LIMIT");
  EXPECT_EQ(p["signal"], 15) << "sleep ends on the SIGTERM";
  json s = finish(stubborn);
  EXPECT_EQ(s["state"], "TIMEOUT") << s.dump();
  EXPECT_EQ(s["signal"], 9) << "a job that ignores SIGTERM is killed after the grace";
  EXPECT_GE(s["times"]["end"].get<std::int64_t>() - s["times"]["start"].get<std::int64_t>(), 4)
      << "2 s walltime + 2 s grace";
  EXPECT_NE(read("stubborn.txt").find("got TERM"), std::string::npos);
}

TEST_F(JobFlow, DependentsWaitForTheirDependencyAndDieWithAFailedOne) {
  const std::uint64_t first = submit({"submit", "--", "sleep", "1"});
  const std::uint64_t after_ok =
      submit({"submit", "--dependency", fmt::format("afterok:{}", first), "--", "true"});
  const std::uint64_t failing = submit({"submit", "--", "false"});
  const std::uint64_t never =
      submit({"submit", "--dependency", fmt::format("afterok:{}", failing), "--", "true"});
  const std::uint64_t anyway =
      submit({"submit", "--dependency", fmt::format("afterany:{}", failing), "--", "true"});
  json a = finish(after_ok);
  EXPECT_EQ(a["state"], "COMPLETED");
  EXPECT_GE(a["times"]["start"].get<std::int64_t>(),
            show(std::to_string(first))["times"]["end"].get<std::int64_t>());
  json n = finish(never);
  EXPECT_EQ(n["state"], "CANCELLED");
  EXPECT_EQ(n["reason"], "DependencyNeverSatisfied");
  EXPECT_EQ(finish(anyway)["state"], "COMPLETED");
}

TEST_F(JobFlow, AnArraysElementsSeeTheirIndexAndAreNamedByIt) {
  const std::uint64_t array = submit({"submit", "--array", "1-4", "-o", "array-%j.txt", "--", "sh",
                                      "-c", "echo index=$LOOM_ARRAY_INDEX of=$LOOM_ARRAY_JOB_ID"});
  std::set<std::string> seen;
  for (int i = 1; i <= 4; ++i) {
    const std::string ref = fmt::format("{}_{}", array, i);
    json j = finish(ref);
    EXPECT_EQ(j["state"], "COMPLETED") << ref;
    EXPECT_EQ(j["array_job"], array);
    EXPECT_EQ(j["array_index"], i);
    seen.insert(read(fmt::format("array-{}.txt", j["id"].get<std::uint64_t>())));
  }
  std::set<std::string> expected;
  for (int i = 1; i <= 4; ++i) expected.insert(fmt::format("index={} of={}\n", i, array));
  EXPECT_EQ(seen, expected);

  const std::uint64_t sleepers = submit({"submit", "--array", "1-3", "--", "sleep", "1003"});
  Completed cancel = alice({"cancel", std::to_string(sleepers)});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  for (int i = 1; i <= 3; ++i)
    EXPECT_EQ(finish(fmt::format("{}_{}", sleepers, i))["state"], "CANCELLED");
  Completed missing = alice({"show", fmt::format("{}_9", array)});
  EXPECT_EQ(missing.err, fmt::format("loom: job {}_9 does not exist\n", array));
}

TEST_F(JobFlow, MemoryPerTaskIsEnforced) {
  const std::uint64_t id = submit({"submit", "--mem-per-task", "32M", "--", "sh", "-c",
                                   "head -c 256M /dev/zero | tail > /dev/null"});
  json j = finish(id);
  EXPECT_EQ(j["state"], "FAILED");
  EXPECT_EQ(j["reason"], "OutOfMemory");
}

TEST_F(JobFlow, ADrainedNodeTakesNoNewJobsUntilResumed) {
  Completed refused = alice({"drain", "node0", "--reason", "mine"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(refused.err, "loom: only an administrator may drain a node (loom-alice is not one)\n");
  Completed drained = cluster_->loom("", {"drain", "node0", "--reason", "DIMM swap"});
  ASSERT_EQ(drained.exit_code, 0) << drained.err;
  json nodes = json::parse(alice({"nodes", "--json"}).out)["nodes"];
  ASSERT_EQ(nodes.size(), 3u);  // and loom up's storage agent, which runs no jobs
  EXPECT_EQ(nodes[2]["role"], "storage");
  EXPECT_EQ(nodes[0]["state"], "DRAIN");
  EXPECT_EQ(nodes[0]["reason"], "DIMM swap");
  EXPECT_EQ(nodes[1]["state"], "UP");
  EXPECT_EQ(nodes[1]["numa"][0]["cores_total"], 2);
  // Four 1-core jobs at once would fill node1; each must land there.
  std::vector<std::uint64_t> ids;
  ids.reserve(4);
  for (int i = 0; i < 4; ++i) ids.push_back(submit({"submit", "--", "sleep", "1"}));
  for (std::uint64_t id : ids) {
    json j = finish(id);
    EXPECT_EQ(j["state"], "COMPLETED");
    EXPECT_EQ(j["placement"][0]["node"], "node1");
  }
  ASSERT_EQ(cluster_->loom("", {"resume", "node0"}).exit_code, 0);
  const std::uint64_t wide = submit({"submit", "-N", "2", "-n", "2", "--", "true"});
  EXPECT_EQ(finish(wide)["state"], "COMPLETED") << "both nodes take jobs again";
}

TEST_F(JobFlow, ThreeHundredTrivialJobsAllComplete) {
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 300; ++i) {
    ids.push_back(submit({"submit", "-o", "/dev/null", "--", "true"}));
    ASSERT_NE(ids.back(), 0u);
  }
  for (std::uint64_t id : ids) {
    const json j = finish(id);
    ASSERT_EQ(j["state"], "COMPLETED") << j.dump();
  }
  json all = json::parse(alice({"queue", "--all", "--json"}).out)["jobs"];
  EXPECT_EQ(all.size(), 300u);
  EXPECT_TRUE(json::parse(alice({"queue", "--json"}).out)["jobs"].empty())
      << "nothing pending or running";
}

// loom up restarts a controller that dies, on the same port, with its state; and when it is
// stopped it leaves no process and no cgroup.
TEST_F(JobFlow, LoomUpRestartsADeadControllerAndStopsCleanly) {
  const std::uint64_t before = submit({"submit", "--", "true"});
  EXPECT_EQ(finish(before)["state"], "COMPLETED");
  Completed controller =
      loom::testing::run({"pgrep", "-x", "-P", std::to_string(cluster_->pid()), "loomctld"});
  ASSERT_EQ(controller.exit_code, 0);
  ASSERT_EQ(::kill(std::stoi(controller.out), SIGKILL), 0);
  cluster_->wait_log("loomctld was killed by signal 9; restarting it");
  EXPECT_EQ(show(std::to_string(before))["state"], "COMPLETED")
      << "the state outlives the controller";
  const std::uint64_t after = submit({"submit", "--", "true"});
  EXPECT_EQ(finish(after)["state"], "COMPLETED") << cluster_->log();

  const pid_t up = cluster_->pid();
  const std::uint64_t running = submit({"submit", "--", "sleep", "1004"});
  wait_running(running);
  EXPECT_EQ(cluster_->stop(), 0);
  EXPECT_EQ(loom::testing::run({"pgrep", "-f", "sleep 1004"}).out, "");
  EXPECT_EQ(loom::testing::run({"pgrep", "-f", fmt::format("--cgroup up{}/", up)}).out, "")
      << "no agent left";
  for (const char* controller_name : {"cpuset", "memory", "freezer", "pids"}) {
    EXPECT_FALSE(
        std::filesystem::exists(fmt::format("/sys/fs/cgroup/{}/loom/up{}", controller_name, up)))
        << controller_name;
  }
}

TEST_F(JobFlow, OthersJobsAreInvisibleAndBadInputGetsOneLine) {
  const std::uint64_t id = submit({"submit", "--", "true"});
  Completed bob = cluster_->loom("loom-bob", {"show", std::to_string(id)});
  EXPECT_EQ(cluster_->loom("loom-bob", {"cancel", std::to_string(id)}).err,
            fmt::format("loom: job {} does not exist\n", id));
  EXPECT_EQ(bob.exit_code, 1);
  EXPECT_EQ(bob.err, fmt::format("loom: job {} does not exist\n", id));
  Completed queue = cluster_->loom("loom-bob", {"queue", "--all", "--json"});
  ASSERT_EQ(queue.exit_code, 0) << queue.err;
  EXPECT_TRUE(json::parse(queue.out)["jobs"].empty());
  Completed huge = alice({"submit", "-c", "3", "--", "true"});
  EXPECT_EQ(huge.exit_code, 1);
  EXPECT_EQ(huge.err,
            "loom: cpus-per-task 3 exceeds the largest NUMA domain (2 cores); ask for "
            "--spread-numa to cross domains\n");
  Completed size = alice({"submit", "--mem-per-task", "lots", "--", "true"});
  EXPECT_EQ(size.exit_code, 1);
  Completed bad_id = alice({"show", "12_x"});
  EXPECT_EQ(bad_id.err, "loom: \"12_x\" is not a job id (12, or 12_3 in an array)\n");
  EXPECT_EQ(size.exit_code, 1);
  EXPECT_NE(size.err.find("loom: --mem-per-task: invalid size \"lots\""), std::string::npos)
      << size.err;
}

// A command, its arguments, an exported variable and a name that are not UTF-8 reach the job
// byte for byte (protobuf refused them before: "loom: " and nothing else); listings show
// the name escaped, and --json stays JSON.
TEST_F(JobFlow, BytesThatAreNotUtf8ReachTheJobExactly) {
  const std::uint64_t id =
      submit({"submit", "-J", "caf\xe9\x1b[2J", "--export", "ALL,LATIN1=gr\xfc\xdf", "--", "sh",
              "-c", R"(printf '%s' "$1" > arg.out; printf '%s' "$LATIN1" > env.out)", "sh",
              "r\xe9sum\xe9 \xff"});
  ASSERT_NE(id, 0u);
  const json j = finish(id);
  EXPECT_EQ(j["state"], "COMPLETED") << j.dump();
  EXPECT_EQ(read("arg.out"), "r\xe9sum\xe9 \xff");
  EXPECT_EQ(read("env.out"), "gr\xfc\xdf");
  EXPECT_EQ(j["name"], "caf\xef\xbf\xbd\x1b[2J") << "U+FFFD for the byte; JSON escapes ESC";
  Completed queue = alice({"queue", "--all"});
  ASSERT_EQ(queue.exit_code, 0) << queue.err;
  EXPECT_NE(queue.out.find("caf\\xe9\\x1b[2J"), std::string::npos) << queue.out;
}

TEST_F(JobFlow, AnAdminSeesAndCancelsAnyJob) {
  const std::uint64_t id = submit({"submit", "--", "sleep", "1005"});
  Completed queue = cluster_->loom("", {"queue", "--json"});
  ASSERT_EQ(queue.exit_code, 0) << queue.err;
  EXPECT_EQ(json::parse(queue.out)["jobs"][0]["user"], "loom-alice");
  ASSERT_EQ(cluster_->loom("", {"cancel", std::to_string(id)}).exit_code, 0);
  const json j = finish(id);
  EXPECT_EQ(j["state"], "CANCELLED");
  EXPECT_EQ(j["reason"], "cancelled by root");
}

// The controller itself refuses a request whose credential is forged or missing: the CLI
// is not the only door.
TEST_F(JobFlow, TheControllerRefusesForgedAndMissingCredentials) {
  auto stub =
      v1::Controller::NewStub(grpc::CreateChannel(cluster_->address(), cluster_->tls().channel()));
  for (const std::string& credential :
       {std::string("MUNGE:AwQFAAD1forgedforgedforged:"), std::string()}) {
    v1::ListRequest request;
    request.mutable_caller()->set_credential(credential);
    v1::ListReply reply;
    grpc::ClientContext call;
    const grpc::Status status = stub->List(&call, request, &reply);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << credential;
    EXPECT_TRUE(reply.jobs().empty());
  }
}

TEST_F(JobFlow, OnlyRootMayRegisterANode) {
  // A state directory of its own, so that what stops it is the controller's refusal (loomd
  // refuses to start on one it cannot write).
  const passwd* bob = ::getpwnam("loom-bob");
  ASSERT_NE(bob, nullptr);
  const std::filesystem::path state = loom::testing::temp_path("rogue-state");
  std::filesystem::create_directories(state);
  ASSERT_EQ(::chown(state.c_str(), bob->pw_uid, bob->pw_gid), 0);
  // With a copy of a host's certificate: what stops loom-bob is that he is not root.
  std::vector<std::string> argv{"runuser", "-u", "loom-bob", "--", "env"};
  for (const std::string& e : cluster_->stolen_tls("node0", "loom-bob")) argv.push_back(e);
  argv.insert(argv.end(),
              {loom::testing::built("agent/loomd"), "--controller", cluster_->address(), "--name",
               "rogue", "--synthetic", "pack:1 core:64 pu:1", "--state-dir", state.string()});
  Completed rogue = loom::testing::run(argv);
  std::filesystem::remove_all(state);
  EXPECT_NE(rogue.exit_code, 0);
  EXPECT_NE(rogue.err.find("an agent must run as root; loom-bob"), std::string::npos) << rogue.err;
}

}  // namespace
}  // namespace loom
