// Crash recovery end to end, on `loom up`: agents and the controller killed with SIGKILL
// mid-job, and a node that falls silent. Nothing is lost and nothing runs twice.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <csignal>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "cluster_test.hpp"
#include "loom/common/exec_args.hpp"

namespace loom {
namespace {

using loom::testing::Completed;
using loom::testing::LocalCluster;
using nlohmann::json;

// Heartbeats every second, a node DOWN after 3 missed, its jobs given up after 6 s.
class Recovery : public loom::testing::ClusterTest {
 protected:
  std::string config() const override {
    return "[controller]\nkill_grace = \"2s\"\nheartbeat_misses = 3\nrequeue_after = \"0:06\"\n"
           "[agent]\nfence_after = \"0:03\"\n";
  }

  // Polls (bounded: 30 s) until the job's output file holds `text`: the job is running.
  void wait_output(const std::string& file, const std::string& text) {
    LocalCluster::wait_for(dir_ / file, text);
  }
  // Polls (bounded: 30 s) until the file has `count` lines.
  void wait_lines(const std::string& file, std::size_t count) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline &&
           loom::testing::lines(read(file)).size() < count) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_EQ(loom::testing::lines(read(file)).size(), count) << file;
  }
  // A job's agent, stopped by `signal` while the job runs, ends as `how` and is restarted;
  // the job ends only then, under the new agent, having run once.
  void stop_its_agent_mid_job(const std::string& output, int signal, std::string_view how) {
    const std::uint64_t id = submit_gated(output);
    wait_output(output, "start");
    const std::string node = show(id)["placement"][0]["node"];
    ASSERT_EQ(::kill(daemon("loomd", "--name " + node + " "), signal), 0);
    cluster_->wait_log(fmt::format("loomd {} {}; restarting it", node, how));
    expect_gated_ran_once(id, output);
  }
};

TEST_F(Recovery, AnAgentKilledMidJobIsRestartedAndKeepsItsJob) {
  stop_its_agent_mid_job("agent.txt", SIGKILL, "was killed by signal 9");
}

// An orderly stop (systemctl stop, an upgrade): the agent leaves, joins its threads and
// exits 0, and the job runs on for the next agent.
TEST_F(Recovery, AnAgentStoppedWithSigtermLeavesItsJobRunningForTheNextOne) {
  stop_its_agent_mid_job("term.txt", SIGTERM, "exited with status 0");
}

TEST_F(Recovery, AControllerKilledMidJobLosesNothingAndRunsNothingTwice) {
  const std::uint64_t first =
      submit({"submit", "-o", "first.txt", "--", "sh", "-c",
              "echo start; while [ ! -e go ]; do sleep 0.05; done; echo end"});
  const std::uint64_t after = submit({"submit", "--dependency", fmt::format("afterok:{}", first),
                                      "-o", "after.txt", "--", "echo", "after"});
  wait_output("first.txt", "start");
  const json running = wait_running(first);
  ASSERT_EQ(::kill(daemon("loomctld"), SIGKILL), 0);
  cluster_->wait_log("loomctld was killed by signal 9; restarting it");
  EXPECT_EQ(wait_running(first)["placement"], running["placement"])
      << "the agent reported the ranks' binding again";
  std::ofstream(dir_ / "go") << "";
  EXPECT_EQ(finish(first)["state"], "COMPLETED");
  EXPECT_EQ(finish(after)["state"], "COMPLETED") << "the pending dependent survived the restart";
  EXPECT_EQ(read("first.txt"), "start\nend\n") << "ran once";
  EXPECT_EQ(read("after.txt"), "after\n");
}

// A node whose agent stops answering (SIGSTOP: the stream stays open) is DOWN after the
// heartbeat window, and after controller.requeue_after its job ends NODE_FAIL, a --requeue
// job runs again elsewhere, and what the agent still ran when it woke up is killed. (A
// stopped agent cannot fence: its --requeue job's processes run on until it wakes.)
TEST_F(Recovery, ANodeSilentPastTheWindowFailsItsJobsAndARequeuedOneRunsAgain) {
  const std::uint64_t plain =
      submit({"submit", "-o", "plain.txt", "--", "sh", "-c", "echo start; exec sleep 3001"});
  const std::uint64_t again = submit(
      {"submit", "--requeue", "-o", "again.txt", "--", "sh", "-c", "echo run; exec sleep 3002"});
  wait_output("plain.txt", "start");
  wait_output("again.txt", "run");
  const std::string node = show(plain)["placement"][0]["node"];
  ASSERT_EQ(show(again)["placement"][0]["node"], node) << "best fit puts both on one node";
  const pid_t agent = daemon("loomd", "--name " + node + " ");
  ASSERT_EQ(::kill(agent, SIGSTOP), 0);
  const json p = finish(plain);
  EXPECT_EQ(p["state"], "NODE_FAIL");
  EXPECT_NE(p["reason"].get<std::string>().find("NodeFail: " + node), std::string::npos)
      << p.dump();
  wait_lines("again.txt", 2);  // the requeued job's second run has started
  json a = show(again);
  EXPECT_EQ(a["state"], "RUNNING");
  EXPECT_NE(a["placement"][0]["node"], node) << "requeued onto the node that is up";
  ASSERT_EQ(::kill(agent, SIGCONT), 0);
  // The woken agent reports both old runs; the controller has ended them, so they die.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline &&
         !loom::testing::run({"pgrep", "-f", "sleep 3001"}).out.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(loom::testing::run({"pgrep", "-f", "sleep 3001"}).out, "");
  EXPECT_EQ(loom::testing::lines(loom::testing::run({"pgrep", "-f", "sleep 3002"}).out).size(), 1u)
      << "only the requeued run";
  ASSERT_EQ(alice({"cancel", std::to_string(again)}).exit_code, 0);
  EXPECT_EQ(finish(again)["state"], "CANCELLED");
}

// Every test job appends its id to a file: "exactly once" means every acknowledged id is
// there once, and no id twice.
TEST_F(Recovery, AControllerKilledWhileJobsStreamThroughLosesNoneAndRunsNoneTwice) {
  std::vector<std::uint64_t> acknowledged;
  std::thread submitter([&] {
    for (int i = 0; i < 200; ++i) {
      Completed done =
          alice({"submit", "-o", "/dev/null", "--", "sh", "-c", "echo $LOOM_JOB_ID >> ids.txt"});
      if (done.exit_code == 0)
        acknowledged.push_back(std::stoull(done.out));  // refused in flight: not acknowledged
    }
  });
  LocalCluster::wait_for(dir_ / "ids.txt", "");  // jobs are running
  while (loom::testing::lines(read("ids.txt")).size() < 50)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(::kill(daemon("loomctld"), SIGKILL), 0);
  submitter.join();
  EXPECT_GE(acknowledged.size(), 199u) << "the CLI waits for the controller to come back";
  for (std::uint64_t id : acknowledged) EXPECT_EQ(finish(id)["state"], "COMPLETED") << id;
  std::map<std::uint64_t, int> runs;
  for (const std::string& line : loom::testing::lines(read("ids.txt"))) ++runs[std::stoull(line)];
  for (std::uint64_t id : acknowledged) EXPECT_EQ(runs[id], 1) << "job " << id;
  for (const auto& [id, count] : runs)
    EXPECT_EQ(count, 1) << "job " << id << " ran " << count << " times";
}

// After a controller restart, before the job's agent has re-registered: the job's state is
// unknown, not lost; a cancel then is carried out once the agent reports the job.
TEST_F(Recovery, AJobIsUnknownUntilItsAgentReturnsAndACancelMeanwhileKillsItThen) {
  const std::uint64_t id =
      submit({"submit", "-o", "unknown.txt", "--", "sh", "-c", "echo start; exec sleep 3004"});
  wait_output("unknown.txt", "start");
  const std::string node = show(id)["placement"][0]["node"];
  const pid_t agent = daemon("loomd", "--name " + node + " ");
  ASSERT_EQ(::kill(agent, SIGSTOP), 0);  // it cannot re-register until SIGCONT
  ASSERT_EQ(::kill(daemon("loomctld"), SIGKILL), 0);
  cluster_->wait_log("loomctld was killed by signal 9; restarting it");
  const json unknown = show(id);
  EXPECT_EQ(unknown["state"], "RUNNING");
  EXPECT_EQ(unknown["reason"], "StateUnknown: waiting for " + node + " to re-register");
  ASSERT_EQ(alice({"cancel", std::to_string(id)}).exit_code, 0);
  ASSERT_EQ(::kill(agent, SIGCONT), 0);
  const json j = finish(id);
  EXPECT_EQ(j["state"], "CANCELLED");
  EXPECT_EQ(loom::testing::run({"pgrep", "-f", "sleep 3004"}).out, "");
}

TEST_F(Recovery, TheCliWaitsForAControllerAndThenSaysItIsUnreachable) {
  std::ofstream(dir_ / "short.toml") << "[controller]\nconnect_timeout = \"2s\"\n";
  Completed done = loom::testing::run(
      {"runuser", "-u", "loom-alice", "--", loom::testing::built("cli/loom"), "--config",
       (dir_ / "short.toml").string(), "queue", "--controller", "127.0.0.1:1"});
  EXPECT_EQ(done.exit_code, 1);
  EXPECT_EQ(done.err,
            "loom: the controller at 127.0.0.1:1 is unreachable (tried for 0:02, without TLS: "
            "tls.ca is not set): failed to connect to all addresses; last error: UNKNOWN: "
            "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused\n");
}

// An agent that dies and stays away (loom up --no-restart): its node goes DOWN and its job
// NODE_FAIL; when it comes back, the node is UP with nothing of that job left running.
TEST(RecoveryNoRestart, AnAgentKeptAwayFailsItsJobsAndComesBackEmpty) {
  ASSERT_EQ(::geteuid(), 0u);
  const std::filesystem::path dir = loom::testing::temp_path("jobs");
  std::filesystem::create_directories(dir);
  ::chmod(dir.c_str(), 01777);
  LocalCluster cluster(1, "pack:1 numa:2 core:2 pu:1",
                       "[controller]\nheartbeat_misses = 2\nrequeue_after = \"0:05\"\n"
                       "[agent]\nfence_after = \"0:02\"\n",
                       {"--no-restart"});
  Completed submitted = cluster.loom(
      "loom-alice", {"submit", "-o", "away.txt", "--", "sh", "-c", "echo start; exec sleep 3003"},
      dir.string());
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  const std::string id = loom::testing::lines(submitted.out).at(0);
  LocalCluster::wait_for(dir / "away.txt", "start");
  // loomd's command line, to start it again as loom up did.
  const std::string agent =
      loom::testing::run({"pgrep", "-x", "-P", std::to_string(cluster.pid()), "loomd"}).out;
  ASSERT_FALSE(agent.empty());
  std::ifstream in(fmt::format("/proc/{}/cmdline", std::stoi(agent)));
  std::vector<std::string> argv;
  for (std::string word; std::getline(in, word, '\0');) argv.push_back(word);
  ASSERT_EQ(::kill(std::stoi(agent), SIGKILL), 0);
  cluster.wait_log("loomd node0 was killed by signal 9; not restarted (--no-restart)");
  // Bounded (requeue_after is 5 s): a job that never ends fails here, saying so.
  json ended;
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
       std::chrono::steady_clock::now() < until;
       std::this_thread::sleep_for(std::chrono::milliseconds(50))) {
    ended = json::parse(cluster.loom("loom-alice", {"show", id, "--json"}).out);
    if (ended["state"] == "NODE_FAIL") break;
  }
  EXPECT_EQ(ended["state"], "NODE_FAIL") << ended.dump();
  json nodes = json::parse(cluster.loom("", {"nodes", "--json"}).out)["nodes"];
  EXPECT_EQ(nodes[0]["state"], "DOWN");
  EXPECT_FALSE(loom::testing::run({"pgrep", "-f", "sleep 3003"}).out.empty())
      << "its keeper kept the task while it was away";

  // The agent comes back: it reports the job, which the state has ended, and it is killed.
  // With its host's certificate, as loom up gave it.
  std::vector<std::string> env = cluster.tls_env("node0");
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  const std::vector<char*> args = loom::exec_args(argv), envp = loom::exec_args(env);
  const pid_t back = ::fork();
  if (back == 0) {
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline &&
         (json::parse(cluster.loom("", {"nodes", "--json"}).out)["nodes"][0]["state"] != "UP" ||
          !loom::testing::run({"pgrep", "-f", "sleep 3003"}).out.empty())) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(json::parse(cluster.loom("", {"nodes", "--json"}).out)["nodes"][0]["state"], "UP");
  EXPECT_EQ(loom::testing::run({"pgrep", "-f", "sleep 3003"}).out, "")
      << "nothing of the failed job runs";
  EXPECT_EQ(json::parse(cluster.loom("loom-alice", {"show", id, "--json"}).out)["state"],
            "NODE_FAIL")
      << "and it stays failed";
  ::kill(back, SIGTERM);
  bool exited = false;  // bounded: an agent that does not leave on SIGTERM fails here
  for (int i = 0; i < 3000 && !exited; ++i) {
    exited = ::waitpid(back, nullptr, WNOHANG) == back;
    if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(exited) << "the restarted agent did not leave within 30 s of SIGTERM";
  if (!exited) {
    ::kill(back, SIGKILL);
    ::waitpid(back, nullptr, 0);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace loom
