// How a node confines jobs, end to end: what loom nodes says of it, the job's processes in
// its cgroup with its limits, and the usage loom show reports. On this machine's v1; the
// cgroup2 label runs the same tests inside tests/cgroup2/vm.sh, on v2 alone.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cluster_test.hpp"

namespace loom {
namespace {

using loom::testing::Completed;
using nlohmann::json;

class Cgroups : public loom::testing::ClusterTest {
 protected:
  // A wide heartbeat window: the cgroup2 label runs these in a kernel where processes start
  // about five times slower, and none of them is about a node going silent.
  std::string config() const override {
    return "[controller]\nkill_grace = \"2s\"\nheartbeat_misses = 30\n";
  }
  // The first compute node's cgroup, as loom nodes --json says it.
  json node_cgroup() const {
    Completed nodes = cluster_->loom("", {"nodes", "--json"});
    EXPECT_EQ(nodes.exit_code, 0) << nodes.err;
    const json listing = json::parse(nodes.out);
    for (const json& n : listing["nodes"]) {
      if (n["role"] == "compute") return n["cgroup"];
    }
    ADD_FAILURE() << nodes.out;
    return {};
  }
  static bool has(const json& list, const std::string& word) {
    return std::ranges::any_of(
        list, [&](const json& w) { return w.get<std::string>().find(word) != std::string::npos; });
  }
};

TEST_F(Cgroups, EveryNodeSaysWhichLimitsItEnforcesAndWhyNotTheOthers) {
  const json cgroup = node_cgroup();
  ASSERT_TRUE(cgroup["version"] == "v1" || cgroup["version"] == "v2") << cgroup.dump();
  ASSERT_TRUE(cgroup["layout"] == "legacy" || cgroup["layout"] == "hybrid" ||
              cgroup["layout"] == "unified")
      << cgroup.dump();
  for (const char* controller : {"cpuset", "memory", "pids"}) {
    const bool enforced = has(cgroup["enforced"], controller);
    const bool noted = has(cgroup["not_enforced"], std::string(controller) + ":");
    EXPECT_NE(enforced, noted) << controller
                               << " is either enforced or said not to be: " << cgroup.dump();
  }
  if (cgroup["version"] == "v2" && cgroup["layout"] == "unified") {
    EXPECT_TRUE(has(cgroup["enforced"], "memory")) << cgroup.dump();
  }
  const Completed table = cluster_->loom("", {"nodes"});
  for (const json& note : cgroup["not_enforced"]) {
    EXPECT_NE(table.out.find("not enforced: " + note.get<std::string>()), std::string::npos)
        << table.out;
  }
}

// A job's processes are in its own cgroup under the agent's, whose memory limit is the
// job's request; cancel empties it.
TEST_F(Cgroups, AJobsProcessIsInItsCgroupWithItsMemoryLimitAndCancelEmptiesIt) {
  const json cgroup = node_cgroup();
  if (!has(cgroup["enforced"], "memory")) GTEST_SKIP() << "no memory controller: " << cgroup;
  const std::uint64_t id = submit({"submit", "--mem-per-task", "64M", "-o", "cgroup.txt", "--",
                                   "sh", "-c", "cat /proc/self/cgroup; exec sleep 1005"});
  wait_running(id);
  const std::vector<pid_t> processes = [&] {
    for (int i = 0; i < 1000; ++i) {
      if (auto found = cluster_->job_processes(id); !found.empty()) return found;
      ::usleep(10'000);
    }
    return std::vector<pid_t>{};
  }();
  ASSERT_EQ(processes.size(), 1u) << "the job's sleep";
  std::ifstream membership(fmt::format("/proc/{}/cgroup", processes.front()));
  std::string path;
  for (std::string line; std::getline(membership, line);) {
    const bool v2 = cgroup["version"] == "v2";
    if (v2 && line.starts_with("0::")) path = "/sys/fs/cgroup" + line.substr(3);
    if (!v2 && line.find(":memory:") != std::string::npos)
      path = "/sys/fs/cgroup/memory" + line.substr(line.rfind(':') + 1);
  }
  EXPECT_NE(path.find(fmt::format("/loom/up{}/node", cluster_->pid())), std::string::npos)
      << path << ": under the agent's tree";
  std::ifstream limit(path +
                      (cgroup["version"] == "v2" ? "/memory.max" : "/memory.limit_in_bytes"));
  std::uint64_t bytes = 0;
  limit >> bytes;
  EXPECT_EQ(bytes, 64ull << 20) << path;
  ASSERT_EQ(alice({"cancel", std::to_string(id)}).exit_code, 0);
  EXPECT_EQ(finish(id)["state"], "CANCELLED");
  EXPECT_TRUE(cluster_->job_processes(id).empty());
  EXPECT_FALSE(std::filesystem::exists(path)) << "its cgroup is removed";
  // A level per job, a leaf per task: the level goes once the job has left the agent.
  const std::filesystem::path level = std::filesystem::path(path).parent_path();
  EXPECT_EQ(level.filename(), fmt::format("job_{}", id));
  for (int i = 0; i < 1000 && std::filesystem::exists(level); ++i) ::usleep(10'000);
  EXPECT_FALSE(std::filesystem::exists(level)) << level;
}

TEST_F(Cgroups, AnEndedJobShowsTheCpuTimeAndPeakMemoryTheKernelCounted) {
  const std::uint64_t id = submit({"submit", "-n", "2", "--", "sh", "-c",
                                   "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; "
                                   "head -c 48M /dev/zero | tail > /dev/null"});
  const json j = finish(id);
  ASSERT_EQ(j["state"], "COMPLETED") << j.dump();
  ASSERT_TRUE(j["usage"].is_object()) << j.dump();
  EXPECT_GT(j["usage"]["cpu_seconds"].get<double>(), 0.1) << "two ranks each counted to 100,000";
  if (has(node_cgroup()["enforced"], "memory")) {
    EXPECT_GE(j["usage"]["memory_peak_bytes"].get<std::uint64_t>(), 48ull << 20) << j.dump();
  }
  const Completed human = alice({"show", std::to_string(id)});
  EXPECT_NE(human.out.find("used "), std::string::npos) << human.out;
  const std::uint64_t running = submit({"submit", "--", "sleep", "1006"});
  EXPECT_TRUE(wait_running(running)["usage"].is_null()) << "no usage before a job has ended";
  ASSERT_EQ(alice({"cancel", std::to_string(running)}).exit_code, 0);
}

// An agent killed mid-job: the next one adopts the job, whose process stays in its cgroup,
// and learns how it ended.
TEST_F(Cgroups, AnAgentKilledMidJobIsAdoptedWithItsProcessInItsCgroup) {
  const std::uint64_t id = submit_gated("adopted.txt");
  wait_running(id);
  auto shell = [&] {  // the job's sh, among its processes (a sleep 0.05 comes and goes)
    for (pid_t pid : cluster_->job_processes(id)) {
      std::ifstream comm(fmt::format("/proc/{}/comm", pid));
      std::string name;
      if (comm >> name && name == "sh") return pid;
    }
    return pid_t{0};
  };
  pid_t before = 0;
  for (int i = 0; i < 1000 && (before = shell()) == 0; ++i) ::usleep(10'000);
  ASSERT_NE(before, 0);
  ASSERT_EQ(::kill(daemon("loomd", "--name node0 "), SIGKILL), 0);
  cluster_->wait_log("loomd node0 was killed by signal 9; restarting it");
  EXPECT_EQ(shell(), before) << "the job's shell is still in its cgroup";
  expect_gated_ran_once(id, "adopted.txt");  // it ends only now, under the new agent
}

// What a crashed agent left that no job holds (a launch cut short before its record): the
// agent after it kills it and removes it.
TEST_F(Cgroups, ARestartedAgentRemovesTheCgroupsNoJobHolds) {
  const bool v2 = node_cgroup()["version"] == "v2";
  std::string own;  // this process's cgroup, where loom up and its agents started
  std::ifstream self("/proc/self/cgroup");
  for (std::string line; std::getline(self, line);) {
    if (v2 ? line.starts_with("0::") : line.find(":freezer:") != std::string::npos)
      own = line.substr(line.rfind(':') + 1);
  }
  const std::filesystem::path stray =
      std::filesystem::path(v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/freezer") / own.substr(1) /
      fmt::format("loom/up{}/node0/job_999/rank_0", cluster_->pid());
  std::filesystem::create_directories(stray);
  const pid_t child = ::fork();
  if (child == 0) {
    std::ofstream(stray / "cgroup.procs") << ::getpid() << std::flush;
    ::execlp("sleep", "sleep", "1007", nullptr);
    ::_exit(127);
  }
  ASSERT_GT(child, 0);
  auto holds_child = [&] {
    std::ifstream procs(stray / "cgroup.procs");
    for (pid_t pid; procs >> pid;) {
      if (pid == child) return true;
    }
    return false;
  };
  for (int i = 0; i < 1000 && !holds_child(); ++i) ::usleep(10'000);
  ASSERT_TRUE(holds_child()) << stray;
  ASSERT_EQ(::kill(daemon("loomd", "--name node0 "), SIGKILL), 0);
  cluster_->wait_log("loomd node0 was killed by signal 9; restarting it");
  for (int i = 0; i < 3000 && std::filesystem::exists(stray); ++i) ::usleep(10'000);
  EXPECT_FALSE(std::filesystem::exists(stray)) << "the new agent removes it";
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "its process killed";
}

}  // namespace
}  // namespace loom
