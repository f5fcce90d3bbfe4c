#include "loom/controller/job_manager.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "loom/hwtopo/load.hpp"
#include "temp.hpp"

namespace loom::controller {
namespace {

sched::Time at(std::int64_t s) { return sched::Time(std::chrono::seconds(s)); }

const Caller kAlice{1001, "loom-alice", false};
const Caller kBob{1002, "loom-bob", false};
const Caller kAdmin{0, "root", true};

v1::JobSpec spec(unsigned tasks, std::int64_t walltime_s = 600) {
  v1::JobSpec s;
  s.set_name("t");
  s.set_tasks(tasks);
  s.set_cpus_per_task(1);
  s.set_walltime_s(walltime_s);
  s.add_argv("/bin/true");
  return s;
}

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }
  void TearDown() override {
    manager_.reset();
    std::filesystem::remove_all(dir_);
  }
  // A controller (re)starting on the same state directory, with one node of 8 cores.
  void reopen() {
    manager_.reset();
    cluster_ = sched::Cluster();
    auto topology = std::make_shared<const hwtopo::Topology>(hwtopo::load_synthetic("pack:1 numa:2 core:4 pu:1").value());
    cluster_.add_node({"n0", topology, {}});
    auto store = open_sqlite_store(dir_);
    ASSERT_TRUE(store.has_value()) << store.error().to_string();
    auto manager = JobManager::open(std::move(*store), cluster_, {}, at(0));
    ASSERT_TRUE(manager.has_value()) << manager.error().to_string();
    manager_ = std::move(*manager);
  }
  JobRow row(JobId id) { return manager_->show(kAdmin, id).value(); }

  std::filesystem::path dir_ = loom::testing::temp_path("state");
  sched::Cluster cluster_;
  std::unique_ptr<JobManager> manager_;
};

TEST_F(JobManagerTest, AJobGoesFromPendingToCompletedAndEveryStepIsStored) {
  auto id = manager_->submit(kAlice, spec(2), at(10));
  ASSERT_TRUE(id.has_value()) << id.error().to_string();
  EXPECT_EQ(row(*id).state, v1::PENDING);
  EXPECT_EQ(row(*id).spec.user(), "loom-alice") << "the user comes from the credential";
  auto launches = manager_->schedule(at(11));
  ASSERT_TRUE(launches.has_value());
  ASSERT_EQ(launches->size(), 1u);
  EXPECT_EQ((*launches)[0].uid, 1001u);
  EXPECT_EQ((*launches)[0].placement.nodes.at(0).ranks.size(), 2u);
  EXPECT_EQ(row(*id).state, v1::RUNNING);
  EXPECT_EQ(row(*id).placement,
            R"([{"bb_bytes":0,"exclusive":false,"node":"n0","nvme":null,"ranks":[{"cores":[0],"memory_bytes":0,"numa":0,"rank":0},{"cores":[1],"memory_bytes":0,"numa":0,"rank":1}]}])");
  ASSERT_TRUE(manager_->finished(*id, 0, std::nullopt, at(20)).has_value());
  reopen();  // what is shown after a restart is what was stored
  const JobRow done = row(*id);
  EXPECT_EQ(done.state, v1::COMPLETED);
  EXPECT_EQ(done.exit_code, 0);
  EXPECT_EQ(done.start_time, 11);
  EXPECT_EQ(done.end_time, 20);
}

TEST_F(JobManagerTest, UsersSeeAndCancelOnlyTheirOwnJobs) {
  const JobId alices = manager_->submit(kAlice, spec(1), at(0)).value();
  const JobId bobs = manager_->submit(kBob, spec(1), at(0)).value();
  ASSERT_EQ(manager_->list(kAlice).size(), 1u);
  EXPECT_EQ(manager_->list(kAlice)[0].id, alices);
  EXPECT_EQ(manager_->list(kAdmin).size(), 2u);
  auto hidden = manager_->show(kAlice, bobs);
  ASSERT_FALSE(hidden.has_value());
  EXPECT_EQ(hidden.error().message(), fmt::format("job {} does not exist", bobs.value())) << "invisible, not forbidden";
  std::vector<JobId> kill;
  EXPECT_FALSE(manager_->cancel(kAlice, bobs, at(1), kill).has_value());
  EXPECT_EQ(row(bobs).state, v1::PENDING);
  ASSERT_TRUE(manager_->cancel(kAdmin, bobs, at(1), kill).has_value());
  EXPECT_EQ(row(bobs).state, v1::CANCELLED);
  EXPECT_EQ(row(bobs).reason, "cancelled by root");
  EXPECT_TRUE(kill.empty()) << "a pending job has nothing to kill";
}

TEST_F(JobManagerTest, CancellingARunningJobKillsItThenEndsItCancelled) {
  const JobId id = manager_->submit(kAlice, spec(1), at(0)).value();
  ASSERT_TRUE(manager_->schedule(at(0)).has_value());
  std::vector<JobId> kill;
  ASSERT_TRUE(manager_->cancel(kAlice, id, at(5), kill).has_value());
  EXPECT_EQ(kill, std::vector<JobId>{id});
  EXPECT_EQ(row(id).state, v1::RUNNING) << "until its processes are gone";
  ASSERT_TRUE(manager_->finished(id, 128 + 9, 9, at(6)).has_value());
  EXPECT_EQ(row(id).state, v1::CANCELLED);
  EXPECT_EQ(row(id).signal, 9);
  auto again = manager_->cancel(kAlice, id, at(7), kill);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().message(), fmt::format("job {} has already ended (CANCELLED)", id.value()));
}

TEST_F(JobManagerTest, AJobPastItsWalltimeEndsTimeout) {
  const JobId id = manager_->submit(kAlice, spec(1, 60), at(0)).value();
  ASSERT_TRUE(manager_->schedule(at(0)).has_value());
  EXPECT_TRUE(manager_->past_walltime(at(59)).empty());
  EXPECT_EQ(manager_->past_walltime(at(60)), std::vector<JobId>{id});
  EXPECT_TRUE(manager_->past_walltime(at(61)).empty()) << "reported once";
  ASSERT_TRUE(manager_->finished(id, 128 + 15, 15, at(62)).has_value());
  EXPECT_EQ(row(id).state, v1::TIMEOUT);
  EXPECT_EQ(row(id).reason, "TimeLimit");
}

TEST_F(JobManagerTest, AFailedDependencyCancelsItsDependentEvenAcrossARestart) {
  const JobId first = manager_->submit(kAlice, spec(1), at(0)).value();
  ASSERT_TRUE(manager_->schedule(at(0)).has_value());
  ASSERT_TRUE(manager_->finished(first, 2, std::nullopt, at(5)).has_value());
  EXPECT_EQ(row(first).state, v1::FAILED);
  EXPECT_EQ(row(first).reason, "NonZeroExitCode");
  v1::JobSpec dependent = spec(1);
  auto* dep = dependent.add_dependencies();
  dep->set_kind(v1::Dependency::AFTER_OK);
  dep->set_job(first.value());
  const JobId second = manager_->submit(kAlice, dependent, at(6)).value();
  reopen();  // the dependency's end must be known to the new scheduler
  ASSERT_TRUE(manager_->schedule(at(7)).has_value());
  EXPECT_EQ(row(second).state, v1::CANCELLED);
  EXPECT_EQ(row(second).reason, "DependencyNeverSatisfied");
}

TEST_F(JobManagerTest, PendingJobsAreQueuedAgainAfterARestart) {
  const JobId big = manager_->submit(kAlice, spec(8), at(0)).value();
  const JobId next = manager_->submit(kAlice, spec(8), at(1)).value();
  ASSERT_EQ(manager_->schedule(at(1)).value().size(), 1u);
  ASSERT_TRUE(manager_->finished(big, 0, std::nullopt, at(2)).has_value());
  reopen();
  auto launches = manager_->schedule(at(3));
  ASSERT_TRUE(launches.has_value());
  ASSERT_EQ(launches->size(), 1u);
  EXPECT_EQ((*launches)[0].id, next);
}

TEST_F(JobManagerTest, BadJobsAreRefusedBeforeAnythingIsStored) {
  v1::JobSpec no_command = spec(1);
  no_command.clear_argv();
  EXPECT_EQ(manager_->submit(kAlice, no_command, at(0)).error().message(), "nothing to run: the job has no command");
  EXPECT_EQ(manager_->submit(kAlice, spec(9), at(0)).error().message(),
            "ntasks 9 of 1 cores exceeds what the whole cluster holds (8 tasks)");
  v1::JobSpec on_bobs = spec(1);
  const JobId bobs = manager_->submit(kBob, spec(1), at(0)).value();
  auto* dep = on_bobs.add_dependencies();
  dep->set_job(bobs.value());
  EXPECT_EQ(manager_->submit(kAlice, on_bobs, at(0)).error().message(),
            fmt::format("--dependency names job {}, which does not exist", bobs.value()));
  EXPECT_EQ(manager_->list(kAdmin).size(), 1u) << "only Bob's job was stored";
}

}  // namespace
}  // namespace loom::controller
