// Preemption in the scheduler: QOS tiers above the queue order, the fewest running jobs of a
// lower QOS stopped to let an urgent job start, and SRTF's preemption of longer jobs.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "clusters.hpp"
#include "loom/hwtopo/load.hpp"
#include "loom/sched/scheduler.hpp"

namespace loom::sched {
namespace {

using testing::at;
using testing::uniform_cluster;

JobSpec job(unsigned tasks, std::string qos = "", std::int64_t walltime = 1000) {
  JobSpec spec;
  spec.tasks = tasks;
  spec.walltime = std::chrono::seconds(walltime);
  spec.user = "alice";
  spec.qos = std::move(qos);
  return spec;
}

SchedulerOptions with_debug_qos(bool requeue = true) {
  SchedulerOptions options(make_fcfs_order(), make_easy_backfill());
  Config::Qos debug;
  debug.name = "debug";
  debug.priority = 100;
  debug.preempt = {"normal"};
  debug.requeue = requeue;
  options.qos = {debug};
  return options;
}

// A debug job waiting behind normal ones goes first; on a full cluster it preempts the
// fewest normal jobs whose room it needs, the youngest first, and waits for them only.
TEST(Qos, AnUrgentJobPreemptsTheFewestYoungestLowerJobsItNeedsAndStartsWhenTheyEnd) {
  Cluster cluster = uniform_cluster(2, 4);
  Scheduler s(cluster, with_debug_qos());
  ASSERT_TRUE(s.submit(JobId(1), job(4), at(0)));  // n0, the oldest
  ASSERT_EQ(s.schedule(at(0)).started.size(), 1u);
  ASSERT_TRUE(s.submit(JobId(2), job(2), at(1)));
  ASSERT_TRUE(s.submit(JobId(3), job(2), at(1)));
  ASSERT_EQ(s.schedule(at(1)).started.size(), 2u);  // n1, the youngest
  ASSERT_TRUE(s.submit(JobId(4), job(1), at(2)));   // a normal job, queued first
  ASSERT_TRUE(s.submit(JobId(5), job(4, "debug"), at(3)));

  PassResult pass = s.schedule(at(3));
  EXPECT_TRUE(pass.started.empty());
  ASSERT_EQ(pass.preempted.size(), 2u) << "the two young jobs free a node; the old one is spared";
  EXPECT_EQ(pass.preempted[0].victim, JobId(2));
  EXPECT_EQ(pass.preempted[1].victim, JobId(3));
  EXPECT_EQ(pass.preempted[0].by, JobId(5));
  EXPECT_TRUE(pass.preempted[0].requeue);
  EXPECT_TRUE(s.schedule(at(4)).preempted.empty()) << "it preempts once, then waits";

  s.requeue(JobId(2), at(1));
  EXPECT_TRUE(s.schedule(at(5)).started.empty()) << "job 3 still holds half its room";
  s.requeue(JobId(3), at(1));
  pass = s.schedule(at(6));
  ASSERT_FALSE(pass.started.empty());
  EXPECT_EQ(pass.started[0].id, JobId(5)) << "the debug job first, on the room freed for it";
  EXPECT_EQ(cluster.name(pass.started[0].placement.nodes.at(0).node), "n1");
}

// A requeued job with a slice starts again on the nodes it ran on, where its slices may be
// kept, when they hold it: here an empty n1 rather than the empty n0 a new job would take.
TEST(Qos, ARequeuedJobWithASliceStartsAgainOnItsNodesWhenTheyHoldIt) {
  Cluster cluster = uniform_cluster(2, 4, std::uint64_t{1} << 30);
  Scheduler s(cluster, with_debug_qos());
  JobSpec sliced = job(4);
  sliced.bb_per_node = Bytes(std::uint64_t{1} << 20);
  ASSERT_TRUE(s.submit(JobId(1), job(4), at(0)));
  ASSERT_TRUE(s.submit(JobId(2), sliced, at(0)));
  ASSERT_EQ(s.schedule(at(0)).started.size(), 2u);
  ASSERT_EQ(cluster.name(s.placement(JobId(2))->nodes.at(0).node), "n1");
  ASSERT_TRUE(s.submit(JobId(3), job(4, "debug"), at(1)));
  ASSERT_EQ(s.schedule(at(1)).preempted.size(), 1u);
  s.requeue(JobId(2), at(0));
  ASSERT_EQ(s.schedule(at(2)).started.at(0).id, JobId(3));
  s.finished(JobId(1), JobEnd::kCompleted, at(3));
  s.finished(JobId(3), JobEnd::kCompleted, at(3));
  Request fresh = make_request(sliced);
  ASSERT_EQ(cluster.name(cluster.place(fresh)->nodes.at(0).node), "n0") << "a new job's choice";

  const PassResult pass = s.schedule(at(4));
  ASSERT_EQ(pass.started.size(), 1u);
  EXPECT_EQ(cluster.name(pass.started[0].placement.nodes.at(0).node), "n1");
  fresh.prefer = {NodeId(1)};
  EXPECT_EQ(cluster.name(cluster.place(fresh)->nodes.at(0).node), "n0")
      << "n1 is full: the placer chooses as it would";
}

// Only the QOS it lists: a debug job may not preempt another debug job.
TEST(Qos, NothingIsPreemptedThatTheQosDoesNotList) {
  Cluster cluster = uniform_cluster(1, 4);
  Scheduler s(cluster, with_debug_qos(false));
  ASSERT_TRUE(s.submit(JobId(1), job(4, "debug"), at(0)));
  ASSERT_EQ(s.schedule(at(0)).started.size(), 1u);
  ASSERT_TRUE(s.submit(JobId(2), job(4, "debug"), at(1)));
  EXPECT_TRUE(s.schedule(at(1)).preempted.empty());
  ASSERT_TRUE(s.submit(JobId(3), job(1), at(2)));
  EXPECT_TRUE(s.schedule(at(2)).preempted.empty()) << "normal preempts nothing";
}

// SRTF: a short job that cannot start requeues the running job with the most walltime left,
// and only jobs with more left than it asks for.
TEST(Srtf, AShortJobPreemptsTheRunningJobWithTheMostWalltimeLeft) {
  Cluster cluster = uniform_cluster(2, 4);
  Scheduler s(cluster, SchedulerOptions(make_srtf_order(), make_easy_backfill()));
  ASSERT_TRUE(s.submit(JobId(1), job(4, "", 1000), at(0)));  // ends at 1000
  ASSERT_TRUE(s.submit(JobId(2), job(4, "", 600), at(0)));   // ends at 600
  ASSERT_EQ(s.schedule(at(0)).started.size(), 2u);

  ASSERT_TRUE(s.submit(JobId(3), job(4, "", 500), at(200)));
  PassResult pass = s.schedule(at(200));
  EXPECT_TRUE(pass.started.empty());
  ASSERT_EQ(pass.preempted.size(), 1u);
  EXPECT_EQ(pass.preempted[0].victim, JobId(1)) << "800 s left, against job 2's 400 s";
  EXPECT_EQ(pass.preempted[0].by, JobId(3));
  EXPECT_TRUE(pass.preempted[0].requeue);

  s.requeue(JobId(1), at(0));
  pass = s.schedule(at(200));
  ASSERT_EQ(pass.started.size(), 1u);
  EXPECT_EQ(pass.started[0].id, JobId(3));
  EXPECT_TRUE(pass.preempted.empty()) << "job 1, pending again, waits its turn";

  // At 550 job 2 has 50 s left and job 3 150 s: a job of 200 s waits rather than preempting.
  ASSERT_TRUE(s.submit(JobId(4), job(4, "", 200), at(550)));
  EXPECT_TRUE(s.schedule(at(550)).preempted.empty());
  s.finished(JobId(2), JobEnd::kCompleted, at(600));
  pass = s.schedule(at(600));
  ASSERT_EQ(pass.started.size(), 1u);
  EXPECT_EQ(pass.started[0].id, JobId(4)) << "shortest first: job 4 before job 1";
}

// A QOS above the short job's keeps its running jobs from SRTF's preemption.
TEST(Srtf, AJobOfAHigherQosIsNotPreemptedByAShorterOne) {
  Cluster cluster = uniform_cluster(1, 4);
  SchedulerOptions options(make_srtf_order(), make_easy_backfill());
  Config::Qos high;
  high.name = "high";
  high.priority = 10;
  options.qos = {high};
  Scheduler s(cluster, std::move(options));
  ASSERT_TRUE(s.submit(JobId(1), job(4, "high", 1000), at(0)));
  ASSERT_EQ(s.schedule(at(0)).started.size(), 1u);
  ASSERT_TRUE(s.submit(JobId(2), job(4, "", 10), at(1)));
  EXPECT_TRUE(s.schedule(at(1)).preempted.empty());
}

}  // namespace
}  // namespace loom::sched
