// Real tasks, as a real user, in real cgroups: needs root (CI and the README's commands run
// as root) and the loom-alice user that scripts/install-deps.sh creates.
#include "loom/agent/task.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <sstream>

#include "loom/common/index_list.hpp"
#include "run.hpp"
#include "temp.hpp"

namespace loom::agent {
namespace {

// Each test runs on both cgroup versions the node has: here v1's hierarchies and the v2
// tree of a hybrid node (which has no controllers: kill and events, no limits); inside
// tests/support/cgroup2-vm (the cgroup2 label) v2 with memory and pids, and no v1.
class TaskTest : public ::testing::TestWithParam<CgroupChoice> {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "the agent's tests run as root, as loomd does";
    auto tree = CgroupTree::find(GetParam());
    if (!tree) GTEST_SKIP() << tree.error().to_string();
    tree_.emplace(std::move(*tree));
    passwd* pw = ::getpwnam("loom-alice");
    ASSERT_NE(pw, nullptr) << "scripts/install-deps.sh creates loom-alice";
    alice_ = pw->pw_uid;
    dir_ = loom::testing::temp_path("job");
    std::filesystem::create_directories(dir_);
    std::filesystem::create_directories(state_);
    ::chown(dir_.c_str(), alice_, pw->pw_gid);
    auto binder = hwtopo::Binder::for_live_machine();
    ASSERT_TRUE(binder.has_value()) << binder.error().to_string();
    binder_.emplace(std::move(*binder));
  }
  void TearDown() override {
    if (tree_) tree_->remove_level(level());
    std::filesystem::remove_all(dir_);
    std::filesystem::remove_all(state_);
  }
  static std::string level() { return "test_" + std::to_string(::getpid()); }

  TaskSpec spec(std::vector<std::string> argv) {
    TaskSpec s;
    s.cgroup_name = level() + "/task";
    s.argv = std::move(argv);
    s.environment = {{"PATH", "/usr/bin:/bin"}, {"LOOM_JOB_ID", "42"}};
    s.chdir = dir_.string();
    s.stdout_path = (dir_ / "out").string();
    s.stderr_path = s.stdout_path;
    s.uid = alice_;
    s.status_path = state_ / "status";
    s.keeper = loom::testing::built("agent/loom-keeper");
    return s;
  }
  std::string output() {
    std::ifstream in(dir_ / "out");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  bool enforces(std::string_view controller) const { return tree_->enforces(controller); }
  Result<Task> start(const TaskSpec& s) { return Task::start(*tree_, s); }
  // A sleep's argument no other test (ctest runs them side by side) gives: what pgrep finds
  // of it after a kill is this test's own.
  std::string sleep_for(int test) const {
    return std::to_string(9000 + 10 * test + static_cast<int>(GetParam()));
  }

  std::optional<CgroupTree> tree_;
  uid_t alice_ = 0;
  std::filesystem::path dir_;
  std::filesystem::path state_ =
      loom::testing::temp_path("agent-state");  // the agent's, root's only
  std::optional<hwtopo::Binder> binder_;
};

TEST_P(TaskTest, RunsAsTheUserWithItsEnvironmentAndReportsTheExitCode) {
  auto task = start(spec({"sh", "-c", "id -u; echo job=$LOOM_JOB_ID; pwd; echo oops >&2; exit 3"}));
  ASSERT_TRUE(task.has_value()) << task.error().to_string();
  auto exit = task->wait();
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->exit_code, 3);
  EXPECT_FALSE(exit->signal.has_value());
  EXPECT_EQ(output(), fmt::format("{}\njob=42\n{}\noops\n", alice_, dir_.string()));
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "out").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, alice_) << "the output file is the user's";
}

TEST_P(TaskTest, ASignalIsReportedAs128PlusIt) {
  auto task = start(spec({"sh", "-c", "kill -TERM $$"}));
  ASSERT_TRUE(task.has_value()) << task.error().to_string();
  auto exit = task->wait();
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->signal, SIGTERM);
  EXPECT_EQ(exit->exit_code, 128 + SIGTERM);
}

// loomd blocks SIGTERM to wait for it on a thread; its tasks must not inherit that.
TEST_P(TaskTest, ATaskStartsWithNoSignalBlockedWhateverTheAgentBlocks) {
  sigset_t term, before;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &term, &before);
  auto task = start(spec({"grep", "SigBlk", "/proc/self/status"}));
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  ASSERT_TRUE(task.has_value()) << task.error().to_string();
  ASSERT_TRUE(task->wait().has_value());
  EXPECT_EQ(output(), "SigBlk:\t0000000000000000\n");
}

TEST_P(TaskTest, TheTaskRunsOnItsPlacedCoresAndMemory) {
  const hwtopo::Core& last = binder_->machine().cores.back();
  auto binding = binder_->resolve(std::vector<unsigned>{last.logical_index}, last.numa);
  ASSERT_TRUE(binding.has_value());
  // A kernel without NUMA (the cgroup2 label's) has no numa_maps, and one memory node.
  const bool numa = std::filesystem::exists("/proc/self/numa_maps");
  TaskSpec s = spec({"sh", "-c",
                     numa ? "grep Cpus_allowed_list /proc/self/status; "
                            "grep -m1 -o 'bind:[0-9]*' /proc/self/numa_maps"
                          : "grep Cpus_allowed_list /proc/self/status"});
  s.binding = *binding;
  auto task = start(s);
  ASSERT_TRUE(task.has_value()) << task.error().to_string();
  ASSERT_TRUE(task->wait().has_value());
  EXPECT_EQ(output(), fmt::format("Cpus_allowed_list:\t{}\n", format_index_list(last.pus)) +
                          (numa ? fmt::format("bind:{}\n", last.numa) : ""));
}

TEST_P(TaskTest, TheMemoryLimitIsEnforced) {
  if (!enforces("memory")) GTEST_SKIP() << "this tree has no memory controller";
  TaskSpec s =
      spec({"sh", "-c", "head -c 256M /dev/zero | tail > /dev/null"});  // tail holds it all
  s.memory_limit = 32ull << 20;
  auto task = start(s);
  ASSERT_TRUE(task.has_value()) << task.error().to_string();
  auto exit = task->wait();
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->out_of_memory);
  EXPECT_NE(exit->exit_code, 0);
}

TEST_P(TaskTest, ATaskRemovesItsCgroupAndTheLevelAboveIsRemovedOnRequest) {
  std::filesystem::path level_dir;
  {
    auto task = start(spec({"true"}));
    ASSERT_TRUE(task.has_value()) << task.error().to_string();
    ASSERT_TRUE(task->wait().has_value());
    level_dir = task->cgroup().dir("pids").parent_path();
    EXPECT_EQ(level_dir.filename(), level());
  }
  EXPECT_FALSE(std::filesystem::exists(level_dir / "task"));
  EXPECT_TRUE(std::filesystem::exists(level_dir)) << "the level is its owner's to remove";
  tree_->remove_level(level());
  EXPECT_FALSE(std::filesystem::exists(level_dir));
}

// An agent that restarts finds its tasks again: running ones, and how ended ones ended.
TEST_P(TaskTest, ATaskOutlivesItsAgentAndIsAdoptedWithItsExitStatus) {
  auto task = start(spec({"sh", "-c", "sleep 0.3; exit 5"}));
  ASSERT_TRUE(task.has_value()) << task.error().to_string();
  const TaskRecord record = std::move(*task).detach();
  auto adopted = Task::adopt(*tree_, record);
  ASSERT_TRUE(adopted.has_value()) << adopted.error().to_string();
  auto exit = adopted->wait();
  ASSERT_TRUE(exit.has_value()) << exit.error().to_string();
  EXPECT_EQ(exit->exit_code, 5);
  ::waitpid(record.keeper, nullptr, 0);  // this test's own child, after all

  // A keeper that vanished without a word: its task is lost, and said to be.
  auto second = start(spec({"sleep", sleep_for(1)}));
  ASSERT_TRUE(second.has_value()) << second.error().to_string();
  TaskRecord gone = std::move(*second).detach();
  ::kill(gone.keeper, SIGKILL);
  ::waitpid(gone.keeper, nullptr, 0);
  auto lost = Task::adopt(*tree_, gone);
  ASSERT_FALSE(lost.has_value());
  EXPECT_EQ(lost.error().code(), ErrorCode::kDataLoss);
  EXPECT_EQ(loom::testing::run(
                {"sh", "-c", "pgrep -u loom-alice -fx 'sleep " + sleep_for(1) + "' || true"})
                .out,
            "")
      << "its task is killed";
}

TEST_P(TaskTest, KillLeavesNoProcessBehindEvenForked) {
  const std::string sleeper = "sleep " + sleep_for(2);
  auto task = start(spec({"sh", "-c", sleeper + " & " + sleeper + " & echo started; wait"}));
  ASSERT_TRUE(task.has_value()) << task.error().to_string();
  // Wait for the event: the line the task prints once its children exist.
  for (int i = 0; i < 500 && output().empty(); ++i) ::usleep(10'000);
  ASSERT_EQ(output(), "started\n");
  ASSERT_TRUE(task->kill().has_value());
  auto exit = task->wait();
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->signal, SIGKILL);
  // Both sleeps went with it: no process of loom-alice's is left running them.
  std::string ps;
  FILE* pipe = ::popen(("pgrep -u loom-alice -fx '" + sleeper + "' || true").c_str(), "r");
  char line[256];
  while (std::fgets(line, sizeof(line), pipe) != nullptr) ps += line;
  ::pclose(pipe);
  EXPECT_EQ(ps, "");
}

TEST_P(TaskTest, RefusalsComeBackBeforeAnythingRuns) {
  TaskSpec root = spec({"true"});
  root.uid = 0;
  auto refused = start(root);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().message(), "jobs as root are refused (agent.allow_root_jobs is false)");

  auto missing = start(spec({"/nonexistent/app"}));
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().message(), "cannot run /nonexistent/app: No such file or directory");

  TaskSpec elsewhere = spec({"true"});
  elsewhere.stdout_path = "/root/loom-test-output";  // not the user's to write
  auto denied = start(elsewhere);
  ASSERT_FALSE(denied.has_value());
  EXPECT_EQ(denied.error().message(), "cannot open /root/loom-test-output: Permission denied");
}

// What `loom show` reports as the job's usage: CPU time and peak memory, from the kernel.
TEST_P(TaskTest, CpuTimeAndPeakMemoryComeFromTheKernel) {
  auto task = start(spec({"sh", "-c",
                          "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; "
                          "head -c 64M /dev/zero | tail > /dev/null"}));
  ASSERT_TRUE(task.has_value()) << task.error().to_string();
  auto exit = task->wait();
  ASSERT_TRUE(exit.has_value()) << exit.error().to_string();
  EXPECT_EQ(exit->exit_code, 0);
  EXPECT_GT(exit->usage.cpu_seconds, 0.05) << "a shell counting to 100,000 takes CPU";
  EXPECT_LT(exit->usage.cpu_seconds, 60.0);
  if (enforces("memory")) {
    ASSERT_TRUE(exit->usage.memory_peak_bytes.has_value());
    EXPECT_GE(*exit->usage.memory_peak_bytes, 64ull << 20) << "tail held 64 MiB";
  }
}

// The task's processes are in its cgroup, under the tree's loom/, with the limits asked.
TEST_P(TaskTest, TheTaskIsInItsCgroupWithItsLimits) {
  TaskSpec s = spec({"sh", "-c", "cat /proc/self/cgroup; echo done; exec sleep 60"});
  s.memory_limit = 96ull << 20;
  s.pids_max = 50;
  auto task = start(s);
  ASSERT_TRUE(task.has_value()) << task.error().to_string();
  for (int i = 0; i < 500 && output().find("done\n") == std::string::npos; ++i) ::usleep(10'000);
  const std::string membership = output();
  const Cgroup* cgroup = &task->cgroup();
  EXPECT_EQ(cgroup->processes().size(), 1u) << "the task's sleep";
  // Each line of /proc/self/cgroup for the tree's hierarchies ("0::PATH" on v2,
  // "N:memory:PATH" ... on v1) names the task's own cgroup.
  const std::string suffix = "/loom/" + level() + "/task";
  const std::vector<std::string> hierarchies =
      tree_->version() == CgroupVersion::kV2 ? std::vector<std::string>{"0::"}
                                             : std::vector<std::string>{":freezer:", ":pids:"};
  for (const std::string& prefix : hierarchies) {
    std::istringstream lines(membership);
    bool found = false;
    for (std::string line; std::getline(lines, line);) {
      if (line.find(prefix) != std::string::npos) found = line.ends_with(suffix);
      if (found) break;
    }
    EXPECT_TRUE(found) << prefix << " " << suffix << " in\n" << membership;
  }
  auto read = [](const std::filesystem::path& file) {
    std::ifstream in(file);
    std::string value;
    in >> value;
    return value;
  };
  if (enforces("memory")) {
    EXPECT_EQ(
        read(cgroup->dir("memory") /
             (tree_->version() == CgroupVersion::kV2 ? "memory.max" : "memory.limit_in_bytes")),
        std::to_string(96ull << 20));
  }
  if (enforces("pids")) {
    EXPECT_EQ(read(cgroup->dir("pids") / "pids.max"), "50");
  }
  ASSERT_TRUE(task->kill().has_value());
  EXPECT_TRUE(cgroup->processes().empty()) << "kill returns once the cgroup is empty";
  auto exit = task->wait();
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->signal, SIGKILL);
}

INSTANTIATE_TEST_SUITE_P(Cgroups, TaskTest, ::testing::Values(CgroupChoice::kV1, CgroupChoice::kV2),
                         [](const ::testing::TestParamInfo<CgroupChoice>& info) {
                           return info.param == CgroupChoice::kV1 ? "v1" : "v2";
                         });

TEST(CgroupChoice, AnUnknownValueNamesTheKey) {
  auto bad = parse_cgroup_choice("v3");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message(), "agent.cgroup: \"v3\" is none of auto, v1, v2");
}

// agent.cgroup's choice against what the node has: on a hybrid node (here) both; on a
// node with v2 alone (the cgroup2 label) v1 is refused, naming the key.
TEST(CgroupTree, AChoiceTheNodeCannotHonourIsRefusedNamingTheKey) {
  auto found = CgroupTree::find(CgroupChoice::kAuto);
  ASSERT_TRUE(found.has_value()) << found.error().to_string();
  auto v1 = CgroupTree::find(CgroupChoice::kV1);
  auto v2 = CgroupTree::find(CgroupChoice::kV2);
  if (found->layout() == "hybrid") {
    EXPECT_TRUE(v1.has_value());
    EXPECT_TRUE(v2.has_value());
    EXPECT_EQ(found->version(), CgroupVersion::kV1) << "auto: hybrid's v2 tree has no memory";
  } else if (found->layout() == "unified") {
    ASSERT_FALSE(v1.has_value());
    EXPECT_NE(v1.error().message().find("agent.cgroup is \"v1\""), std::string::npos)
        << v1.error().message();
    EXPECT_EQ(found->version(), CgroupVersion::kV2);
  } else {
    ASSERT_FALSE(v2.has_value());
    EXPECT_NE(v2.error().message().find("agent.cgroup is \"v2\""), std::string::npos);
  }
}

// What a v2 cgroup is given, file by file, on a directory shaped like a v2 mount: cpuset
// cannot be written live on either kernel here (this one keeps it in v1; the cgroup2
// label's has no cpuset), so its sequence is checked here.
TEST(CgroupTree, AV2TaskCgroupGetsItsControllersCpusMemoryNodeAndLimits) {
  const std::filesystem::path base = loom::testing::temp_path("cgroup2-mount");
  const std::filesystem::path level = base / "loom" / "n0", leaf = level / "job_7_rank_0";
  std::filesystem::create_directories(leaf);
  for (const auto& dir : {base, base / "loom", level})
    std::ofstream(dir / "cgroup.subtree_control");
  for (const char* file : {"cpuset.cpus", "cpuset.mems", "memory.max", "memory.swap.max",
                           "pids.max", "cgroup.procs"}) {
    std::ofstream(leaf / file);
  }
  const CgroupTree tree = CgroupTree::v2_at(base, {"cpuset", "memory", "pids"});
  CgroupLimits limits;
  limits.cpus = {2, 3, 5};
  limits.numa = 1;
  limits.memory_bytes = 64ull << 20;
  limits.pids_max = 100;
  auto cgroup = tree.create("n0/job_7_rank_0", limits);
  ASSERT_TRUE(cgroup.has_value()) << cgroup.error().to_string();
  auto read = [](const std::filesystem::path& file) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  for (const auto& dir : {base, base / "loom", level}) {
    EXPECT_EQ(read(dir / "cgroup.subtree_control"), "+cpuset +memory +pids ") << dir;
  }
  EXPECT_EQ(read(leaf / "cpuset.cpus"), "2-3,5");
  EXPECT_EQ(read(leaf / "cpuset.mems"), "1");
  EXPECT_EQ(read(leaf / "memory.max"), std::to_string(64ull << 20));
  EXPECT_EQ(read(leaf / "memory.swap.max"), "0") << "no swap unless agent.swap says";
  EXPECT_EQ(read(leaf / "pids.max"), "100");
  EXPECT_EQ(cgroup->join_files(), std::vector<std::string>{(leaf / "cgroup.procs").string()});
}

}  // namespace
}  // namespace loom::agent
