// The job manager: a job's life from submission to its end, who may see and cancel what,
// and what is refused.
#include "job_manager_fixture.hpp"
#include "loom/burstbuffer/staging_spec.hpp"
#include "loom/sched/configured.hpp"

namespace loom::controller {
namespace {

using namespace loom::controller::testing;

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
  const v1::Placement placed = row(*id).placement;
  ASSERT_EQ(placed.nodes_size(), 1);
  EXPECT_EQ(placed.nodes(0).node(), "n0");
  ASSERT_EQ(placed.nodes(0).ranks_size(), 2);
  EXPECT_EQ(placed.nodes(0).ranks(1).rank(), 1u);
  EXPECT_EQ(std::vector<unsigned>(placed.nodes(0).ranks(1).cores().begin(),
                                  placed.nodes(0).ranks(1).cores().end()),
            std::vector<unsigned>{1});
  EXPECT_FALSE(placed.nodes(0).ranks(1).has_bound()) << "no agent has reported it yet";
  ASSERT_TRUE(manager_->finished(*id, {}, at(20)).has_value());
  reopen();  // what is shown after a restart is what was stored
  const JobRow done = row(*id);
  EXPECT_EQ(done.state, v1::COMPLETED);
  EXPECT_EQ(done.exit_code, 0);
  EXPECT_EQ(done.start_time, 11);
  EXPECT_EQ(done.end_time, 20);
  EXPECT_EQ(done.placement.SerializeAsString(), placed.SerializeAsString());
}

// As a Slurm job's time limit leaves its burst buffer's stage-in out: the walltime counts
// from when the ranks start, also for a controller that restarted since.
TEST_F(JobManagerTest, StageInIsNotChargedToTheWalltime) {
  v1::JobSpec s = spec(1, 600);
  s.set_bb_per_node(std::uint64_t{10} << 20);
  s.add_stage_in_files()->CopyFrom(burstbuffer::parse_stage_in("storage:/in.h5").value());
  const JobId id = submit(kAlice, s, at(0)).value();
  ASSERT_EQ(manager_->schedule(at(1)).value().size(), 1u);
  ASSERT_EQ(row(id).state, v1::STAGING_IN);
  ASSERT_TRUE(manager_->started("n0", start_of(id)).has_value());
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

// Staged as a Loom 0.1 client asks: by text, which the controller reads into the typed
// fields that agents use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
TEST_F(JobManagerTest, AStagedJobStagesInRunsStagesOutAndKeepsItsStaging) {
  v1::JobSpec s = spec(1);
  s.set_bb_per_node(std::uint64_t{10} << 20);
  s.add_stage_in("storage:/in.h5");
  s.add_stage_out("out.h5:storage:/results/");
  const JobId id = submit(kAlice, s, at(0)).value();
  auto launches = manager_->schedule(at(1));
  ASSERT_TRUE(launches.has_value());
  ASSERT_EQ(launches->size(), 1u);
  EXPECT_EQ((*launches)[0].spec.stage_in_size(), 0);
  ASSERT_EQ((*launches)[0].spec.stage_in_files_size(), 1);
  EXPECT_EQ((*launches)[0].spec.stage_in_files(0).path(), "/in.h5");
  ASSERT_EQ((*launches)[0].spec.stage_out_files_size(), 1);
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
  ASSERT_TRUE(manager_->started("n0", start_of(id)).has_value());
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
#pragma GCC diagnostic pop

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

// loomctld's SIGHUP: the configured order from the next pass on, with every job as it was.
TEST_F(JobManagerTest, ANewPolicyOrdersTheNextPass) {
  const JobId whole = submit(kAlice, spec(8), at(0)).value();
  ASSERT_EQ(manager_->schedule(at(0)).value().size(), 1u);
  const JobId longer = submit(kAlice, spec(8, 3600), at(1)).value();
  const JobId shorter = submit(kBob, spec(8, 60), at(2)).value();
  Config::Scheduler sjf;
  sjf.order = "sjf";
  sjf.backfill = "none";
  const int changes = changes_;
  manager_->set_policy(sched::scheduler_options(sjf).value());
  EXPECT_GT(changes_, changes) << "a pass is asked for";
  ASSERT_TRUE(manager_->finished(whole, {}, at(3)).has_value());
  const auto launches = manager_->schedule(at(4)).value();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].id, shorter) << "first come would have started job " << longer.value();
  EXPECT_EQ(row(longer).state, v1::PENDING);
}

}  // namespace
}  // namespace loom::controller
