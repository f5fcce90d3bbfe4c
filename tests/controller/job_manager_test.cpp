#include "loom/controller/job_manager.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"
#include "temp.hpp"

namespace loom::controller {
namespace {

sched::Time at(std::int64_t s) { return sched::Time(std::chrono::seconds(s)); }

Ending exited(int code) {
  Ending e;
  e.exit_code = code;
  return e;
}
Ending killed_by(int signal) {
  Ending e;
  e.exit_code = 128 + signal;
  e.signal = signal;
  return e;
}

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
    auto store = open_sqlite_store(dir_);
    ASSERT_TRUE(store.has_value()) << store.error().to_string();
    auto manager = JobManager::open(std::move(*store), cluster_, {}, [this] { ++changes_; });
    ASSERT_TRUE(manager.has_value()) << manager.error().to_string();
    manager_ = std::move(*manager);
    join("n0");
  }
  // n0's agent registers: 8 cores in 2 domains, a 100 MiB NVMe device on domain 1.
  void join(const std::string& name) {
    auto node = manager_->joined(
        name, hwtopo::to_json(hwtopo::load_synthetic("pack:1 numa:2 core:4 pu:1").value()),
        {{"/nvme-" + name, 1u, std::uint64_t{100} << 20}});
    ASSERT_TRUE(node.has_value()) << node.error().to_string();
  }
  JobRow row(JobId id) { return manager_->show(kAdmin, id).value(); }
  Result<JobId> submit(const Caller& caller, const v1::JobSpec& s, sched::Time now) {
    std::vector<JobId> ids = LOOM_TRY(manager_->submit(caller, s, 0, now));
    return ids.at(0);
  }

  std::filesystem::path dir_ = loom::testing::temp_path("state");
  sched::Cluster cluster_;
  std::unique_ptr<JobManager> manager_;
  int changes_ = 0;  // on_change calls
};

TEST_F(JobManagerTest, AJobGoesFromPendingToCompletedAndEveryStepIsStored) {
  auto id = submit(kAlice, spec(2), at(10));
  ASSERT_TRUE(id.has_value()) << id.error().to_string();
  EXPECT_EQ(row(*id).state, v1::PENDING);
  EXPECT_EQ(row(*id).spec.user(), "loom-alice") << "the user comes from the credential";
  auto launches = manager_->schedule(at(11));
  ASSERT_TRUE(launches.has_value());
  ASSERT_EQ(launches->size(), 1u);
  EXPECT_EQ((*launches)[0].uid, 1001u);
  EXPECT_EQ((*launches)[0].placement.nodes.at(0).ranks.size(), 2u);
  EXPECT_EQ(row(*id).state, v1::RUNNING);
  EXPECT_EQ(
      row(*id).placement,
      R"([{"bb_bytes":0,"exclusive":false,"node":"n0","nvme":null,"ranks":[{"cores":[0],"memory_bytes":0,"numa":0,"rank":0},{"cores":[1],"memory_bytes":0,"numa":0,"rank":1}]}])");
  ASSERT_TRUE(manager_->finished(*id, {}, at(20)).has_value());
  reopen();  // what is shown after a restart is what was stored
  const JobRow done = row(*id);
  EXPECT_EQ(done.state, v1::COMPLETED);
  EXPECT_EQ(done.exit_code, 0);
  EXPECT_EQ(done.start_time, 11);
  EXPECT_EQ(done.end_time, 20);
}

// As a Slurm job's time limit leaves its burst buffer's stage-in out: the walltime counts
// from when the ranks start, also for a controller that restarted since.
TEST_F(JobManagerTest, StageInIsNotChargedToTheWalltime) {
  v1::JobSpec s = spec(1, 600);
  s.set_bb_per_node(std::uint64_t{10} << 20);
  s.add_stage_in("storage:/in.h5");
  const JobId id = submit(kAlice, s, at(0)).value();
  ASSERT_EQ(manager_->schedule(at(1)).value().size(), 1u);
  ASSERT_EQ(row(id).state, v1::STAGING_IN);
  ASSERT_TRUE(manager_->started(id, "n0", {}).has_value());
  ASSERT_TRUE(manager_->ran(id, at(300)).has_value());  // five minutes of stage-in
  EXPECT_EQ(row(id).start_time, 300) << "it started when its ranks did";
  EXPECT_TRUE(manager_->past_walltime(at(601)).empty()) << "ten minutes from its allocation";
  reopen();
  manager_->heard(id, "n0");
  ASSERT_TRUE(manager_->adopt(id).has_value());
  EXPECT_TRUE(manager_->past_walltime(at(899)).empty());
  EXPECT_EQ(manager_->past_walltime(at(900)), std::vector<JobId>{id})
      << "ten minutes from its start";
}

TEST_F(JobManagerTest, AStagedJobStagesInRunsStagesOutAndKeepsItsStaging) {
  v1::JobSpec s = spec(1);
  s.set_bb_per_node(std::uint64_t{10} << 20);
  s.add_stage_in("storage:/in.h5");
  s.add_stage_out("out.h5:storage:/results/");
  const JobId id = submit(kAlice, s, at(0)).value();
  auto launches = manager_->schedule(at(1));
  ASSERT_TRUE(launches.has_value());
  ASSERT_EQ(launches->size(), 1u);
  EXPECT_EQ((*launches)[0].placement.nodes[0].nvme, 0u);
  EXPECT_EQ((*launches)[0].placement.nodes[0].bb_bytes, std::uint64_t{10} << 20);
  EXPECT_EQ(cluster_.free(NodeId(0)).nvme[0], std::uint64_t{90} << 20)
      << "the slice's bytes are held";
  EXPECT_EQ(row(id).state, v1::STAGING_IN);
  v1::StagingReport report;
  v1::StagingFile* f = report.add_files();
  f->set_direction("in");
  f->set_source("storage:/in.h5");
  f->set_state("done");
  ASSERT_TRUE(manager_->staged(id, "n0", report).has_value());
  ASSERT_TRUE(manager_->started(id, "n0", {}).has_value());
  ASSERT_TRUE(manager_->ran(id, at(2)).has_value());
  EXPECT_EQ(row(id).state, v1::RUNNING);
  report.set_out(true);
  ASSERT_TRUE(manager_->staged(id, "n0", report).has_value());
  EXPECT_EQ(row(id).state, v1::STAGING_OUT);
  EXPECT_TRUE(manager_->past_walltime(at(100000)).empty())
      << "stage-out is not cut short by the walltime";
  Ending failed;
  failed.failure = {v1::REASON_STAGE_OUT_FAILED,
                    "out.h5 from n0's slice to storage:/results: no space"};
  ASSERT_TRUE(manager_->finished(id, failed, at(5)).has_value());
  EXPECT_EQ(cluster_.free(NodeId(0)).nvme[0], std::uint64_t{100} << 20);
  reopen();
  EXPECT_EQ(row(id).state, v1::FAILED);
  EXPECT_EQ(row(id).reason.text(),
            "StageOutFailed: out.h5 from n0's slice to storage:/results: no space")
      << "a staging failure is the reason as the agent gave it";
  EXPECT_EQ(row(id).reason.code, v1::REASON_STAGE_OUT_FAILED);
  ASSERT_EQ(row(id).staging.files_size(), 1) << "the staging is stored with the end";
  EXPECT_EQ(row(id).staging.files(0).source(), "storage:/in.h5");
}

TEST_F(JobManagerTest, PersistentBuffersAreTheirOwnersHeldAndBindTheirJobsToTheirNode) {
  join("n1");
  auto made =
      manager_->create_buffer(kAlice, "scratch", std::uint64_t{60} << 20, "n1", 1001, at(0));
  ASSERT_TRUE(made.has_value()) << made.error().to_string();
  EXPECT_EQ(made->node, "n1");
  EXPECT_EQ(made->nvme, "/nvme-n1");
  EXPECT_EQ(cluster_.free(NodeId(1)).nvme[0], std::uint64_t{40} << 20);
  EXPECT_EQ(manager_->create_buffer(kBob, "scratch", 1 << 20, "", 1002, at(0)).error().code(),
            ErrorCode::kAlreadyExists);
  EXPECT_EQ(manager_->create_buffer(kBob, "big", std::uint64_t{200} << 20, "", 1002, at(0))
                .error()
                .code(),
            ErrorCode::kResourceExhausted);
  EXPECT_EQ(manager_->create_buffer(kBob, "../x", 1 << 20, "", 1002, at(0)).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(manager_->buffers(kBob).size(), 0u);
  EXPECT_EQ(manager_->buffers(kAdmin).size(), 1u);

  v1::JobSpec s = spec(1);
  s.set_bb_persistent("scratch");
  EXPECT_FALSE(submit(kBob, s, at(1)).has_value()) << "another user's buffer";
  const JobId id = submit(kAlice, s, at(1)).value();
  auto launches = manager_->schedule(at(2));
  ASSERT_EQ(launches->size(), 1u);
  EXPECT_EQ(cluster_.name((*launches)[0].placement.nodes[0].node), "n1")
      << "on the buffer's node, though n0 is emptier";
  EXPECT_EQ(manager_->destroy_buffer(kAlice, "scratch", at(3)).error().code(),
            ErrorCode::kFailedPrecondition)
      << "in use";
  ASSERT_TRUE(manager_->finished(id, {}, at(3)).has_value());

  reopen();  // stored, and held again before its node returns
  join("n1");
  EXPECT_EQ(cluster_.free(NodeId(1)).nvme[0], std::uint64_t{40} << 20);
  EXPECT_EQ(manager_->destroy_buffer(kBob, "scratch", at(3)).error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(manager_->destroy_buffer(kAlice, "scratch", at(3)).has_value());
  EXPECT_EQ(cluster_.free(NodeId(1)).nvme[0], std::uint64_t{100} << 20);
  EXPECT_FALSE(submit(kAlice, s, at(4)).has_value()) << "the buffer is gone";
}

// A pending job of loom-bob's was bound to loom-alice's buffer made later under the same
// name (issue 19): a job's buffer ends with it.
TEST_F(JobManagerTest, APendingJobsBufferDestroyedEndsItAndANewOneOfTheNameIsNotItsOwn) {
  ASSERT_TRUE(manager_->create_buffer(kBob, "scratch", 1 << 20, "n0", 1002, at(0)).has_value());
  const JobId whole = submit(kAlice, spec(8), at(0)).value();  // n0 is full meanwhile
  ASSERT_EQ(manager_->schedule(at(0)).value().size(), 1u);
  v1::JobSpec s = spec(1);
  s.set_bb_persistent("scratch");
  const JobId bobs = submit(kBob, s, at(1)).value();
  ASSERT_EQ(manager_->schedule(at(1)).value().size(), 0u);
  EXPECT_EQ(row(bobs).state, v1::PENDING);
  ASSERT_TRUE(manager_->destroy_buffer(kBob, "scratch", at(2)).has_value());
  EXPECT_EQ(row(bobs).state, v1::CANCELLED);
  EXPECT_EQ(row(bobs).reason.text(), "BufferDestroyed: --bb-persistent scratch was destroyed");
  ASSERT_TRUE(manager_->create_buffer(kAlice, "scratch", 1 << 20, "n0", 1001, at(3)).has_value());
  ASSERT_TRUE(manager_->finished(whole, {}, at(4)).has_value());
  EXPECT_TRUE(manager_->schedule(at(5)).value().empty()) << "bob's job does not start on it";
  reopen();  // and the controller starts again with both stored
  EXPECT_EQ(row(bobs).state, v1::CANCELLED);
}

TEST_F(JobManagerTest, UsersSeeAndCancelOnlyTheirOwnJobs) {
  const JobId alices = submit(kAlice, spec(1), at(0)).value();
  const JobId bobs = submit(kBob, spec(1), at(0)).value();
  ASSERT_EQ(manager_->list(kAlice, true).size(), 1u);
  EXPECT_EQ(manager_->list(kAlice, true)[0].id, alices);
  EXPECT_EQ(manager_->list(kAdmin, true).size(), 2u);
  auto hidden = manager_->show(kAlice, bobs);
  ASSERT_FALSE(hidden.has_value());
  EXPECT_EQ(hidden.error().message(), fmt::format("job {} does not exist", bobs.value()))
      << "invisible, not forbidden";
  std::vector<JobId> kill;
  EXPECT_FALSE(manager_->cancel(kAlice, bobs, std::nullopt, at(1), kill).has_value());
  EXPECT_EQ(row(bobs).state, v1::PENDING);
  ASSERT_TRUE(manager_->cancel(kAdmin, bobs, std::nullopt, at(1), kill).has_value());
  EXPECT_EQ(row(bobs).state, v1::CANCELLED);
  EXPECT_EQ(row(bobs).reason.text(), "cancelled by root");
  EXPECT_TRUE(kill.empty()) << "a pending job has nothing to kill";
}

TEST_F(JobManagerTest, CancellingARunningJobKillsItThenEndsItCancelled) {
  const JobId id = submit(kAlice, spec(1), at(0)).value();
  ASSERT_TRUE(manager_->schedule(at(0)).has_value());
  std::vector<JobId> kill;
  ASSERT_TRUE(manager_->cancel(kAlice, id, std::nullopt, at(5), kill).has_value());
  EXPECT_EQ(kill, std::vector<JobId>{id});
  EXPECT_EQ(row(id).state, v1::RUNNING) << "until its processes are gone";
  ASSERT_TRUE(manager_->finished(id, killed_by(9), at(6)).has_value());
  EXPECT_EQ(row(id).state, v1::CANCELLED);
  EXPECT_EQ(row(id).signal, 9);
  auto again = manager_->cancel(kAlice, id, std::nullopt, at(7), kill);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().message(),
            fmt::format("job {} has already ended (CANCELLED)", id.value()));
}

TEST_F(JobManagerTest, AJobThatCouldNotStartSaysWhy) {
  const JobId id = submit(kAlice, spec(1), at(0)).value();
  ASSERT_TRUE(manager_->schedule(at(0)).has_value());
  Ending e = exited(127);
  e.failure = {v1::REASON_LAUNCH_FAILED, "on n0: cannot run nosuch: No such file or directory"};
  ASSERT_TRUE(manager_->finished(id, e, at(1)).has_value());
  EXPECT_EQ(row(id).state, v1::FAILED);
  EXPECT_EQ(row(id).reason.text(),
            "LaunchFailed: on n0: cannot run nosuch: No such file or directory");
}

TEST_F(JobManagerTest, AJobPastItsWalltimeEndsTimeout) {
  const JobId id = submit(kAlice, spec(1, 60), at(0)).value();
  ASSERT_TRUE(manager_->schedule(at(0)).has_value());
  EXPECT_TRUE(manager_->past_walltime(at(59)).empty());
  EXPECT_EQ(manager_->past_walltime(at(60)), std::vector<JobId>{id});
  EXPECT_TRUE(manager_->past_walltime(at(61)).empty()) << "reported once";
  ASSERT_TRUE(manager_->finished(id, killed_by(15), at(62)).has_value());
  EXPECT_EQ(row(id).state, v1::TIMEOUT);
  EXPECT_EQ(row(id).reason.text(), "TimeLimit");
}

TEST_F(JobManagerTest, AFailedDependencyCancelsItsDependentEvenAcrossARestart) {
  const JobId first = submit(kAlice, spec(1), at(0)).value();
  ASSERT_TRUE(manager_->schedule(at(0)).has_value());
  ASSERT_TRUE(manager_->finished(first, exited(2), at(5)).has_value());
  EXPECT_EQ(row(first).state, v1::FAILED);
  EXPECT_EQ(row(first).reason.text(), "NonZeroExitCode");
  v1::JobSpec dependent = spec(1);
  auto* dep = dependent.add_dependencies();
  dep->set_kind(v1::Dependency::AFTER_OK);
  dep->set_job(first.value());
  const JobId second = submit(kAlice, dependent, at(6)).value();
  reopen();  // the dependency's end must be known to the new scheduler
  ASSERT_TRUE(manager_->schedule(at(7)).has_value());
  EXPECT_EQ(row(second).state, v1::CANCELLED);
  EXPECT_EQ(row(second).reason.text(), "DependencyNeverSatisfied");
}

TEST_F(JobManagerTest, PendingJobsAreQueuedAgainAfterARestart) {
  const JobId big = submit(kAlice, spec(8), at(0)).value();
  const JobId next = submit(kAlice, spec(8), at(1)).value();
  ASSERT_EQ(manager_->schedule(at(1)).value().size(), 1u);
  ASSERT_TRUE(manager_->finished(big, {}, at(2)).has_value());
  reopen();
  auto launches = manager_->schedule(at(3));
  ASSERT_TRUE(launches.has_value());
  ASSERT_EQ(launches->size(), 1u);
  EXPECT_EQ((*launches)[0].id, next);
}

TEST_F(JobManagerTest, BadJobsAreRefusedBeforeAnythingIsStored) {
  v1::JobSpec no_command = spec(1);
  no_command.clear_argv();
  EXPECT_EQ(submit(kAlice, no_command, at(0)).error().message(),
            "nothing to run: the job has no command");
  v1::JobSpec empty_command = spec(1);
  empty_command.set_argv(0, "");
  EXPECT_EQ(submit(kAlice, empty_command, at(0)).error().message(),
            "nothing to run: the command is \"\"");
  EXPECT_EQ(submit(kAlice, spec(9), at(0)).error().message(),
            "ntasks 9 of 1 cores exceeds what the whole cluster holds (8 tasks)");
  v1::JobSpec on_bobs = spec(1);
  const JobId bobs = submit(kBob, spec(1), at(0)).value();
  auto* dep = on_bobs.add_dependencies();
  dep->set_job(bobs.value());
  EXPECT_EQ(submit(kAlice, on_bobs, at(0)).error().message(),
            fmt::format("--dependency names job {}, which does not exist", bobs.value()));
  EXPECT_EQ(manager_->list(kAdmin, true).size(), 1u) << "only Bob's job was stored";
}

TEST_F(JobManagerTest, AnArrayIsNJobsWithIndexesCancelledTogetherByItsId) {
  const int before = changes_;
  const std::vector<JobId> ids = manager_->submit(kAlice, spec(4), 3, at(0)).value();
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_GT(changes_, before) << "watchers hear of a submission";
  const JobRow second = manager_->show(kAlice, ids[0], 2).value();
  EXPECT_EQ(second.id, ids[1]);
  EXPECT_EQ(second.array_job, ids[0]);
  EXPECT_EQ(second.array_index, 2u);
  EXPECT_EQ(manager_->show(kAlice, ids[0], 4).error().message(),
            fmt::format("job {}_4 does not exist", ids[0].value()));
  EXPECT_FALSE(manager_->show(kBob, ids[0], 1).has_value()) << "another user's array is invisible";

  auto launches = manager_->schedule(at(1)).value();
  ASSERT_EQ(launches.size(), 2u) << "two 4-task elements fill the 8 cores";
  EXPECT_EQ(launches[1].array_job, ids[0]);
  EXPECT_EQ(launches[1].array_index, 2u);
  std::vector<JobId> kill;
  ASSERT_TRUE(manager_->cancel(kAlice, ids[0], std::nullopt, at(2), kill).has_value());
  EXPECT_EQ(kill, (std::vector<JobId>{ids[0], ids[1]})) << "the running elements are killed";
  EXPECT_EQ(row(ids[2]).state, v1::CANCELLED) << "the pending one ends at once";
  for (JobId id : kill) ASSERT_TRUE(manager_->finished(id, killed_by(15), at(3)).has_value());
  EXPECT_EQ(row(ids[0]).state, v1::CANCELLED);
  EXPECT_TRUE(manager_->list(kAlice, false).empty()) << "ended jobs are listed only on request";
  EXPECT_EQ(manager_->list(kAlice, true).size(), 3u);
  reopen();
  EXPECT_EQ(manager_->show(kAlice, ids[0], 3).value().id, ids[2]) << "the array survives a restart";
}

// The CLI stops at 100,000; a request made without it was accepted, and root's `loom queue
// --all` then failed with "Received message larger than max" (issue 19).
TEST_F(JobManagerTest, AnArrayPastTheLimitIsRefusedWhoeverSendsIt) {
  auto refused = manager_->submit(kAlice, spec(1), sched::kMaxArraySize + 1, at(0));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(refused.error().message(), "array_size 100001: an array holds at most 100000 jobs");
  EXPECT_TRUE(manager_->list(kAdmin, true).empty()) << "nothing was stored";
}

TEST_F(JobManagerTest, RepeatedFieldsPastTheirBoundsAreRefusedNamingTheField) {
  v1::JobSpec words = spec(1);
  for (int i = 0; i < 4096; ++i) words.add_argv("x");  // 4097 with the command
  auto refused = submit(kAlice, words, at(0));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().message(), "argv: 4097 words, at most 4096");
  v1::JobSpec env = spec(1);
  for (int i = 0; i < 4097; ++i) (*env.mutable_environment())[fmt::format("V{}", i)] = "1";
  refused = submit(kAlice, env, at(0));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().message(), "environment: 4097 variables, at most 4096");
  EXPECT_TRUE(manager_->list(kAdmin, true).empty()) << "nothing was stored";
  words.mutable_argv()->RemoveLast();
  EXPECT_TRUE(submit(kAlice, words, at(0)).has_value()) << "4096 words are fine";
}

TEST_F(JobManagerTest, AListingComesAPageAtATimeInIdOrder) {
  const std::vector<JobId> ids = manager_->submit(kAlice, spec(1), 5, at(0)).value();
  (void)submit(kBob, spec(1), at(0)).value();
  std::vector<JobId> seen;
  for (JobId after(0);;) {
    const std::vector<JobRow> page = manager_->list(kAlice, true, after, 2);
    if (page.empty()) break;
    EXPECT_LE(page.size(), 2u);
    for (const JobRow& r : page) seen.push_back(r.id);
    after = page.back().id;
  }
  EXPECT_EQ(seen, ids) << "alice's five, each once, in order; none of bob's";
}

TEST_F(JobManagerTest, AUmaskIsCheckedAndStoredWithTheJob) {
  v1::JobSpec s = spec(1);
  s.set_umask(01022);
  auto refused = submit(kAlice, s, at(0));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().message(), "umask 1022: a umask is at most 0777");
  s.set_umask(077);
  const JobId id = submit(kAlice, s, at(0)).value();
  reopen();
  EXPECT_EQ(row(id).spec.umask(), 077u);
}

TEST_F(JobManagerTest, TheBindingAnAgentAppliedIsShownBesideThePlacement) {
  const JobId id = submit(kAlice, spec(2), at(0)).value();
  ASSERT_EQ(manager_->schedule(at(0)).value().size(), 1u);
  const std::vector<RankBound> bound = {{0, {4}, {1}}, {1, {5}, {1}}};
  ASSERT_TRUE(manager_->started(id, "n0", bound).has_value());
  EXPECT_NE(row(id).placement.find(R"("bound_cpus":[4])"), std::string::npos) << "shown at once";
  ASSERT_TRUE(manager_->finished(id, {}, at(5)).has_value());
  reopen();  // and stored with the job's end
  EXPECT_EQ(
      row(id).placement,
      R"([{"bb_bytes":0,"exclusive":false,"node":"n0","nvme":null,"ranks":[)"
      R"({"bound_cpus":[4],"bound_numa":[1],"cores":[0],"memory_bytes":0,"numa":0,"rank":0},)"
      R"({"bound_cpus":[5],"bound_numa":[1],"cores":[1],"memory_bytes":0,"numa":0,"rank":1}]}])");
}

TEST_F(JobManagerTest, ADrainedNodeTakesNothingNewAndStaysDrainedAcrossARestart) {
  const NodeId n0 = *cluster_.find("n0");
  EXPECT_EQ(manager_->drain(kAlice, "n0", "maintenance").error().message(),
            "only an administrator may drain a node (loom-alice is not one)");
  EXPECT_EQ(manager_->drain(kAdmin, "n9", "maintenance").error().message(), "there is no node n9");
  EXPECT_EQ(manager_->drain(kAdmin, "n0", "").error().message(),
            "--reason is required: say why the node is drained");
  ASSERT_TRUE(manager_->drain(kAdmin, "n0", "new DIMM").has_value());
  EXPECT_EQ(cluster_.state(n0), sched::NodeState::kDrain);
  const JobId id = submit(kAlice, spec(1), at(0)).value();
  EXPECT_TRUE(manager_->schedule(at(1)).value().empty());

  reopen();  // a new cluster: the node joins again, and its drain is remembered
  EXPECT_EQ(cluster_.state(*cluster_.find("n0")), sched::NodeState::kDrain);
  EXPECT_EQ(manager_->drain_reason("n0"), "new DIMM");
  EXPECT_TRUE(manager_->schedule(at(2)).value().empty());
  EXPECT_EQ(manager_->resume(kBob, "n0").error().message(),
            "only an administrator may resume a node (loom-bob is not one)");
  ASSERT_TRUE(manager_->resume(kAdmin, "n0").has_value());
  EXPECT_EQ(manager_->resume(kAdmin, "n0").error().message(), "node n0 is not drained");
  auto launches = manager_->schedule(at(3)).value();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].id, id);
}

// A controller restarting with a job running: unknown (never lost) until its node reports
// it, then held again with its walltime intact.
TEST_F(JobManagerTest, ARunningJobIsUnknownAfterARestartUntilItsNodeReportsIt) {
  const JobId id = submit(kAlice, spec(8, 100), at(0)).value();
  ASSERT_EQ(manager_->schedule(at(10)).value().size(), 1u);
  v1::JobSpec dependent = spec(1);
  dependent.add_dependencies()->set_job(id.value());
  dependent.mutable_dependencies(0)->set_kind(v1::Dependency::AFTER_ANY);
  const JobId waits = submit(kAlice, dependent, at(11)).value();
  reopen();  // the dependent is queued again, waiting on a job whose state is unknown
  EXPECT_EQ(row(waits).state, v1::PENDING);
  ASSERT_EQ(manager_->unknown().size(), 1u);
  EXPECT_EQ(row(id).state, v1::RUNNING);
  EXPECT_EQ(row(id).reason.text(), "StateUnknown: waiting for n0 to re-register");
  const JobId next = submit(kAlice, spec(1), at(20)).value();
  manager_->heard(id, "n0");
  auto placement = manager_->adopt(id);
  ASSERT_TRUE(placement.has_value()) << placement.error().to_string();
  EXPECT_EQ(placement->nodes.at(0).ranks.size(), 8u);
  EXPECT_TRUE(manager_->unknown().empty());
  EXPECT_EQ(row(id).reason.text(), "");
  EXPECT_TRUE(manager_->schedule(at(21)).value().empty()) << "the adopted job holds every core";
  EXPECT_TRUE(manager_->past_walltime(at(109)).empty());
  EXPECT_EQ(manager_->past_walltime(at(110)), std::vector<JobId>{id})
      << "its walltime runs from its start";
  ASSERT_TRUE(manager_->finished(id, {}, at(111)).has_value());
  const auto launches = manager_->schedule(at(112)).value();
  ASSERT_EQ(launches.size(), 2u);
  EXPECT_EQ(launches[0].id, waits);
  EXPECT_EQ(launches[1].id, next);
}

TEST_F(JobManagerTest, AJobWhoseNodeNeverReturnsEndsNodeFailOrIsRequeued) {
  const JobId plain = submit(kAlice, spec(4), at(0)).value();
  v1::JobSpec again = spec(4);
  again.set_requeue(true);
  const JobId requeued = submit(kAlice, again, at(0)).value();
  ASSERT_EQ(manager_->schedule(at(1)).value().size(), 2u);
  reopen();
  ASSERT_TRUE(
      manager_->lost(plain, {v1::REASON_NODE_FAIL, "n0 did not re-register"}, at(30)).has_value());
  ASSERT_TRUE(manager_->lost(requeued, {v1::REASON_NODE_FAIL, "n0 did not re-register"}, at(30))
                  .has_value());
  EXPECT_EQ(row(plain).state, v1::NODE_FAIL);
  EXPECT_EQ(row(plain).reason.text(), "NodeFail: n0 did not re-register");
  EXPECT_EQ(row(requeued).state, v1::PENDING);
  EXPECT_EQ(row(requeued).reason.text(), "requeued: NodeFail: n0 did not re-register");
  auto launches = manager_->schedule(at(31)).value();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].id, requeued) << "it runs again, once";
  // A running job losing its node while the controller runs: the same, resources given back.
  ASSERT_TRUE(manager_->lost(requeued, {v1::REASON_NODE_FAIL, "n0 was down"}, at(40)).has_value());
  EXPECT_EQ(manager_->schedule(at(41)).value().size(), 1u);
}

}  // namespace
}  // namespace loom::controller
