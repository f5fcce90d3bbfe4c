// The launch plan: what each task of a job gets on a node, from the launch alone.
#include "loom/launch/plan.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>

namespace loom::launch {
namespace {

const NodeFacts kNode{"node1",          "host-b",          "node1",           "/opt/loom/bin",
                      "198.18.0.16/28", "198.18.0.1:7070", "/etc/loom/ca.pem"};

// A job of `tasks` ranks over nodes of `per_node` ranks each, as the controller sends it to
// the node at `index`, two cores and 1 GiB a rank.
v1::Launch job(unsigned tasks, unsigned per_node, unsigned index) {
  v1::Launch l;
  l.set_job(42);
  l.set_uid(1001);
  l.set_node_index(index);
  v1::JobSpec* spec = l.mutable_spec();
  spec->set_tasks(tasks);
  spec->add_argv("./app");
  spec->add_argv("--steps=3");
  spec->set_stdout_path("out_%j_%N_%t.txt");
  spec->set_stderr_path("err_%j.txt");
  spec->set_chdir("/home/alice");
  (*spec->mutable_environment())["OMP_NUM_THREADS"] = "2";
  for (unsigned n = 0; n < tasks / per_node; ++n) {
    v1::JobNode* node = l.add_nodes();
    node->set_name(fmt::format("node{}", n));
    node->set_ranks(per_node);
  }
  for (unsigned r = index * per_node; r < (index + 1) * per_node; ++r) {
    v1::Rank* rank = l.add_ranks();
    rank->set_rank(r);
    rank->set_memory_bytes(std::uint64_t{1} << 30);
  }
  return l;
}

std::vector<RankBinding> bound(const v1::Launch& l) {
  std::vector<RankBinding> b;
  b.reserve(static_cast<std::size_t>(l.ranks_size()));
  for (unsigned i = 0; i < static_cast<unsigned>(l.ranks_size()); ++i)
    b.push_back({l.ranks(static_cast<int>(i)).rank(), {2 * i, 2 * i + 1}, i % 2});
  return b;
}

TEST(LaunchPlan, EachRankIsATaskBoundAsPlacedWithItsOwnCgroupEnvironmentAndFiles) {
  const v1::Launch l = job(4, 2, 1);
  const auto plan = plan_launch(l, bound(l), {{"LOOM_BB_DIR", "/bb/job_42"}}, kNode);
  ASSERT_TRUE(plan) << plan.error().to_string();
  EXPECT_FALSE(plan->daemon);
  ASSERT_EQ(plan->tasks.size(), 2u);
  const TaskPlan& t = plan->tasks[1];
  EXPECT_EQ(t.rank, 3u);
  EXPECT_EQ(t.cgroup_name, "node1/job_42/rank_3");
  EXPECT_EQ(t.argv, (std::vector<std::string>{"./app", "--steps=3"}));
  EXPECT_EQ(t.binding, (RankBinding{3, {2, 3}, 1}));
  EXPECT_EQ(t.memory_limit, std::uint64_t{1} << 30);
  EXPECT_EQ(t.stdout_path, "out_42_node1_3.txt");
  EXPECT_EQ(t.stderr_path, "err_42.txt");
  EXPECT_EQ(t.chdir, "/home/alice");
  EXPECT_EQ(t.uid, 1001u);
  EXPECT_EQ(t.umask, 022u);
  const std::map<std::string, std::string> expected{
      {"OMP_NUM_THREADS", "2"},  {"LOOM_BB_DIR", "/bb/job_42"}, {"LOOM_JOB_ID", "42"},
      {"LOOM_RANK", "3"},        {"LOOM_NTASKS", "4"},          {"LOOM_NODELIST", "node0,node1"},
      {"LOOM_RANK_CORES", "2,3"}};
  EXPECT_EQ(t.environment, expected);
}

TEST(LaunchPlan, TheUserCannotOverrideWhatLoomSetsButTheStorageMayAddToIt) {
  v1::Launch l = job(1, 1, 0);
  (*l.mutable_spec()->mutable_environment())["LOOM_RANK"] = "7";
  (*l.mutable_spec()->mutable_environment())["LOOM_BB_DIR"] = "/etc";
  l.mutable_spec()->set_umask(0077);
  l.set_array_job(40);
  l.set_array_index(2);
  const auto plan = plan_launch(l, bound(l), {{"LOOM_BB_DIR", "/bb/job_42"}}, kNode);
  ASSERT_TRUE(plan) << plan.error().to_string();
  const TaskPlan& t = plan->tasks.at(0);
  EXPECT_EQ(t.environment.at("LOOM_RANK"), "0");
  EXPECT_EQ(t.environment.at("LOOM_BB_DIR"), "/bb/job_42");
  EXPECT_EQ(t.environment.at("LOOM_ARRAY_JOB_ID"), "40");
  EXPECT_EQ(t.environment.at("LOOM_ARRAY_INDEX"), "2");
  EXPECT_EQ(t.umask, 0077u);
}

TEST(LaunchPlan, AScriptRunsUnderTheShell) {
  v1::Launch l = job(1, 1, 0);
  l.mutable_spec()->clear_argv();
  l.mutable_spec()->set_script("echo hi\n");
  const auto plan = plan_launch(l, bound(l), {}, kNode);
  ASSERT_TRUE(plan) << plan.error().to_string();
  EXPECT_EQ(plan->tasks.at(0).argv, (std::vector<std::string>{"/bin/sh", "-c", "echo hi\n"}));
}

TEST(LaunchPlan, AnMpiJobsFirstNodeRunsMpirunOverAllItsRanksInOneCgroup) {
  v1::Launch l = job(4, 2, 0);
  l.mutable_spec()->set_mpi(true);
  const auto plan = plan_launch(l, bound(l), {}, kNode);
  ASSERT_TRUE(plan) << plan.error().to_string();
  ASSERT_EQ(plan->tasks.size(), 1u);
  const TaskPlan& t = plan->tasks[0];
  EXPECT_EQ(t.cgroup_name, "node1/job_42/rank_0");
  // This machine's hostname first (Open MPI's local host), the job's other nodes by name.
  const MpiPlan mpi{{{"host-b", 2}, {"node1", 2}},
                    "/opt/loom/bin/loom-rank",
                    "/opt/loom/bin/loom-rsh",
                    "198.18.0.16/28",
                    {"./app", "--steps=3"}};
  EXPECT_EQ(t.argv, mpirun_argv(mpi));
  EXPECT_EQ(t.binding, (RankBinding{0, {0, 1, 2, 3}, std::nullopt}));  // two NUMA nodes
  EXPECT_EQ(t.memory_limit, std::uint64_t{2} << 30);
  EXPECT_EQ(t.environment.at("LOOM_RANK_BINDING"), "0=0,1@0;1=2,3@1");
  EXPECT_EQ(t.environment.at("LOOM_CONTROLLER"), "198.18.0.1:7070");
  EXPECT_EQ(t.environment.at("LOOM_TLS_CA"), "/etc/loom/ca.pem");  // loom-rsh checks the controller
  EXPECT_FALSE(t.environment.contains("LOOM_RANK"));               // each rank's, from loom-rank
  EXPECT_FALSE(t.environment.contains("OMPI_MCA_mpi_yield_when_idle"));
  // %t names a file per rank: loom-rank opens it, from the pattern with %j and %N filled.
  EXPECT_EQ(t.environment.at("LOOM_RANK_OUTPUT"), "out_42_node1_%t.txt");
}

TEST(LaunchPlan, AnMpiJobsOtherNodesWaitForOpenMpisDaemon) {
  v1::Launch l = job(4, 2, 1);
  l.mutable_spec()->set_mpi(true);
  const auto plan = plan_launch(l, bound(l), {}, kNode);
  ASSERT_TRUE(plan) << plan.error().to_string();
  EXPECT_TRUE(plan->tasks.empty());
  ASSERT_TRUE(plan->daemon);
  EXPECT_TRUE(plan->daemon->argv.empty());
  EXPECT_EQ(plan->daemon->environment.at("LOOM_RANK_BINDING"), "2=0,1@0;3=2,3@1");
}

TEST(LaunchPlan, RanksSharingPusYieldInsteadOfSpinning) {
  v1::Launch l = job(2, 2, 0);
  l.mutable_spec()->set_mpi(true);
  const auto plan = plan_launch(l, {{0, {0}, 0}, {1, {0}, 0}}, {}, kNode);
  ASSERT_TRUE(plan) << plan.error().to_string();
  EXPECT_EQ(plan->tasks.at(0).environment.at("OMPI_MCA_mpi_yield_when_idle"), "1");
  EXPECT_EQ(plan->tasks.at(0).binding, (RankBinding{0, {0}, 0}));
  EXPECT_FALSE(plan->tasks.at(0).argv.empty());
  // One node: no rsh agent, no network to pin.
  const auto& argv = plan->tasks.at(0).argv;
  EXPECT_EQ(std::ranges::find(argv, "plm_rsh_agent"), argv.end());
}

TEST(LaunchPlan, APmixJobsRanksAreTasksBoundAsPlacedAndServedByItsPmixServer) {
  v1::Launch l = job(4, 4, 0);
  l.mutable_spec()->set_mpi(true);
  l.mutable_spec()->set_mpi_launch(v1::MPI_LAUNCH_PMIX);
  const auto plan =
      plan_launch(l, bound(l), {{"OMPI_MCA_orte_tmpdir_base", "/dev/shm/loom/job_42"}}, kNode);
  ASSERT_TRUE(plan) << plan.error().to_string();
  ASSERT_EQ(plan->tasks.size(), 4u);
  for (unsigned r = 0; r < 4; ++r) {
    const TaskPlan& t = plan->tasks[r];
    EXPECT_EQ(t.argv, (std::vector<std::string>{"./app", "--steps=3"}));  // no wrapper
    EXPECT_EQ(t.cgroup_name, fmt::format("node1/job_42/rank_{}", r));
    EXPECT_EQ(t.binding, (RankBinding{r, {2 * r, 2 * r + 1}, r % 2}));
    EXPECT_EQ(t.environment.at("LOOM_RANK"), std::to_string(r));
    EXPECT_EQ(t.environment.at("OMPI_MCA_schizo"), "^orte");
    EXPECT_EQ(t.stdout_path, fmt::format("out_42_node1_{}.txt", r));
  }
  ASSERT_TRUE(plan->pmix_server);
  const TaskPlan& server = *plan->pmix_server;
  EXPECT_EQ(server.argv, (std::vector<std::string>{"/opt/loom/bin/loom-pmix"}));
  EXPECT_EQ(server.cgroup_name, "node1/job_42/pmix");
  EXPECT_EQ(server.uid, 1001u);  // the job's user: ranks never talk to root
  EXPECT_EQ(server.binding, (RankBinding{0, {0, 1, 2, 3, 4, 5, 6, 7}, std::nullopt}));
  EXPECT_EQ(server.stdout_path, "err_42.txt");
  const v1::PmixJob& job = plan->pmix_job;
  EXPECT_EQ(job.nspace(), "loom.42");
  ASSERT_EQ(job.nodes_size(), 1);
  EXPECT_EQ(job.nodes(0).name(), "node0");
  EXPECT_EQ(job.nodes(0).ranks(), 4u);
  EXPECT_EQ(job.tmpdir(), "/dev/shm/loom/job_42/pmix.node1");  // this node's own
  ASSERT_EQ(job.local_size(), 4);
  EXPECT_EQ(job.local(3).rank(), 3u);
  EXPECT_EQ(std::vector<unsigned>(job.local(3).cpus().begin(), job.local(3).cpus().end()),
            (std::vector<unsigned>{6, 7}));
}

TEST(LaunchPlan, AnMpiJobStoredWithoutALaunchModeRunsMpirunAsItDidThen) {
  v1::Launch l = job(2, 2, 0);
  l.mutable_spec()->set_mpi(true);
  ASSERT_EQ(l.spec().mpi_launch(), v1::MPI_LAUNCH_DEFAULT);
  EXPECT_EQ(mpi_launch(l.spec()), v1::MPI_LAUNCH_MPIRUN);
  const auto plan = plan_launch(l, bound(l), {}, kNode);
  ASSERT_TRUE(plan) << plan.error().to_string();
  EXPECT_FALSE(plan->pmix_server);
  EXPECT_EQ(plan->tasks.at(0).argv.at(0), "mpirun");
  l.mutable_spec()->set_mpi(false);
  EXPECT_EQ(mpi_launch(l.spec()), std::nullopt);
}

TEST(LaunchPlan, ABindingPerRankIsRequired) {
  const v1::Launch l = job(4, 2, 0);
  const auto plan = plan_launch(l, {{0, {0}, 0}}, {}, kNode);
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().message(), "1 bindings for 2 ranks");
}

}  // namespace
}  // namespace loom::launch
