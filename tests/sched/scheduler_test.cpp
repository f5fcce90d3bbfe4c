#include "loom/sched/scheduler.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "clusters.hpp"
#include "loom/hwtopo/load.hpp"
#include "loom/sched/backfill.hpp"

namespace loom::sched {
namespace {

using testing::at;
using testing::uniform_cluster;

JobSpec job(unsigned tasks, std::int64_t walltime_s, std::string account = "a") {
  JobSpec spec;
  spec.tasks = tasks;
  spec.walltime = std::chrono::seconds(walltime_s);
  spec.account = std::move(account);
  spec.user = "alice";
  return spec;
}

std::vector<std::uint64_t> ids(const PassResult& pass) {
  std::vector<std::uint64_t> out;
  out.reserve(pass.started.size());
  for (const Started& s : pass.started) out.push_back(s.id.value());
  return out;
}

TEST(Scheduler, StartsWhatFitsInOrder) {
  Cluster cluster = uniform_cluster(2, 4);
  Scheduler s(cluster, {});
  ASSERT_TRUE(s.submit(JobId(1), job(4, 100), at(0)).has_value());
  ASSERT_TRUE(s.submit(JobId(2), job(4, 100), at(0)).has_value());
  ASSERT_TRUE(s.submit(JobId(3), job(1, 100), at(0)).has_value());
  auto pass = s.schedule(at(0));
  EXPECT_EQ(ids(pass), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(s.pending_count(), 1u);
  EXPECT_EQ(pass.started[0].deadline, at(100));
}

TEST(Scheduler, StrictFcfsLetsNothingPassABlockedJob) {
  Cluster cluster = uniform_cluster(1, 4);
  Scheduler s(cluster, {make_fcfs_order(), make_no_backfill()});
  ASSERT_TRUE(s.submit(JobId(1), job(3, 100), at(0)).has_value());
  ASSERT_TRUE(s.submit(JobId(2), job(4, 100), at(1)).has_value());
  ASSERT_TRUE(s.submit(JobId(3), job(1, 10), at(2)).has_value());
  EXPECT_EQ(ids(s.schedule(at(2))), (std::vector<std::uint64_t>{1}));
}

TEST(Scheduler, EasyBackfillsWhatEndsBeforeTheHeadsReservation) {
  Cluster cluster = uniform_cluster(1, 4);
  Scheduler s(cluster, {make_fcfs_order(), make_easy_backfill()});
  ASSERT_TRUE(s.submit(JobId(1), job(3, 100), at(0)).has_value());
  EXPECT_EQ(ids(s.schedule(at(0))), (std::vector<std::uint64_t>{1}));
  ASSERT_TRUE(s.submit(JobId(2), job(4, 100), at(1)).has_value());  // head: waits for job 1
  ASSERT_TRUE(s.submit(JobId(3), job(1, 200), at(2)).has_value());  // would delay the head
  ASSERT_TRUE(s.submit(JobId(4), job(1, 98), at(2)).has_value());   // ends at 100: fits
  auto pass = s.schedule(at(2));
  EXPECT_EQ(ids(pass), (std::vector<std::uint64_t>{4}));
  ASSERT_EQ(pass.reservations.size(), 1u);
  EXPECT_EQ(pass.reservations[0], (Reservation{JobId(2), at(100)}));
}

// Slurm's bf_max_job_test: with a depth of 1, conservative backfill plans the first blocked
// job only, and nothing behind the second may start this pass.
TEST(Scheduler, ConservativeBackfillPlansNoDeeperThanItsDepth) {
  for (std::size_t depth : {0u, 1u}) {
    Cluster cluster = uniform_cluster(1, 4);
    Scheduler s(cluster, {make_fcfs_order(), make_conservative_backfill(depth)});
    ASSERT_TRUE(s.submit(JobId(1), job(3, 100), at(0)).has_value());
    EXPECT_EQ(ids(s.schedule(at(0))), (std::vector<std::uint64_t>{1}));
    ASSERT_TRUE(s.submit(JobId(2), job(4, 100), at(1)).has_value());  // at 100
    ASSERT_TRUE(s.submit(JobId(3), job(4, 100), at(1)).has_value());  // at 200, unless too deep
    ASSERT_TRUE(s.submit(JobId(4), job(1, 50), at(2)).has_value());   // ends before 100
    auto pass = s.schedule(at(2));
    if (depth == 0) {
      EXPECT_EQ(ids(pass), (std::vector<std::uint64_t>{4}));
      EXPECT_EQ(pass.reservations,
                (std::vector<Reservation>{{JobId(2), at(100)}, {JobId(3), at(200)}}));
    } else {
      EXPECT_TRUE(ids(pass).empty()) << "job 4 waits behind the unplanned job 3";
      EXPECT_EQ(pass.reservations, (std::vector<Reservation>{{JobId(2), at(100)}}));
    }
  }
}

TEST(Scheduler, EasyBackfillsLongJobsOnWhatTheHeadDoesNotNeed) {
  Cluster cluster = uniform_cluster(2, 4);
  Scheduler s(cluster, {make_fcfs_order(), make_easy_backfill()});
  ASSERT_TRUE(s.submit(JobId(1), job(6, 100), at(0)).has_value());
  EXPECT_EQ(ids(s.schedule(at(0))), (std::vector<std::uint64_t>{1}));  // 4 on n0, 2 on n1
  ASSERT_TRUE(s.submit(JobId(2), job(6, 100), at(1)).has_value());     // head at t=100
  ASSERT_TRUE(s.submit(JobId(3), job(2, 1000), at(2)).has_value());    // the 2 spare cores
  ASSERT_TRUE(s.submit(JobId(4), job(1, 1000), at(3)).has_value());    // nothing spare left
  auto pass = s.schedule(at(3));
  // At t=100 the head needs 6 of 8 cores: job 3 may keep 2, job 4 may not take a third.
  EXPECT_EQ(ids(pass), (std::vector<std::uint64_t>{3}));
}

TEST(Scheduler, WalltimeRunsOutAsAnEvent) {
  Cluster cluster = uniform_cluster(1, 4);
  Scheduler s(cluster, {});
  ASSERT_TRUE(s.submit(JobId(1), job(1, 60), at(0)).has_value());
  ASSERT_TRUE(s.submit(JobId(2), job(1, 90), at(0)).has_value());
  s.schedule(at(0));
  EXPECT_EQ(s.next_deadline(), at(60));
  EXPECT_TRUE(s.past_walltime(at(59)).empty());
  EXPECT_EQ(s.past_walltime(at(60)), (std::vector<JobId>{JobId(1)}));
  s.finished(JobId(1), JobEnd::kTimeout, at(61));
  EXPECT_EQ(s.past_walltime(at(100)), (std::vector<JobId>{JobId(2)}));
}

TEST(Scheduler, DependenciesOrderJobsAndAFailedAfterOkNeverRuns) {
  Cluster cluster = uniform_cluster(1, 4);
  Scheduler s(cluster, {});
  ASSERT_TRUE(s.submit(JobId(1), job(1, 60), at(0)).has_value());
  JobSpec after_ok = job(1, 60);
  after_ok.dependencies = {{DependencyKind::kAfterOk, JobId(1)}};
  JobSpec after_any = job(1, 60);
  after_any.dependencies = {{DependencyKind::kAfterAny, JobId(1)}};
  ASSERT_TRUE(s.submit(JobId(2), after_ok, at(0)).has_value());
  ASSERT_TRUE(s.submit(JobId(3), after_any, at(0)).has_value());
  EXPECT_EQ(ids(s.schedule(at(0))), (std::vector<std::uint64_t>{1}));
  s.finished(JobId(1), JobEnd::kFailed, at(10));
  auto pass = s.schedule(at(10));
  EXPECT_EQ(ids(pass), (std::vector<std::uint64_t>{3}));
  EXPECT_EQ(pass.never_satisfiable, (std::vector<JobId>{JobId(2)}));
  EXPECT_EQ(s.pending_count(), 0u);
}

TEST(Scheduler, SubmitRefusesBadJobsNamingTheField) {
  Cluster cluster = uniform_cluster(1, 4);
  Scheduler s(cluster, {});
  auto message = [&](JobId id, JobSpec spec) {
    auto status = s.submit(id, std::move(spec), at(0));
    EXPECT_FALSE(status.has_value());
    return status ? std::string() : status.error().message();
  };
  EXPECT_EQ(message(JobId(1), job(0, 60)), "--ntasks must be at least 1");
  EXPECT_EQ(message(JobId(1), job(1, 0)), "--time must be a positive walltime");
  EXPECT_EQ(message(JobId(1), job(5, 60)),
            "ntasks 5 of 1 cores exceeds what the whole cluster holds (4 tasks)");
  JobSpec dependent = job(1, 60);
  dependent.dependencies = {{DependencyKind::kAfterOk, JobId(99)}};
  EXPECT_EQ(message(JobId(1), dependent), "--dependency names job 99, which does not exist");
  ASSERT_TRUE(s.submit(JobId(1), job(1, 60), at(0)).has_value());
  EXPECT_EQ(message(JobId(1), job(1, 60)), "job 1 already exists");
}

TEST(Scheduler, CancelledPendingJobsCountAsEnded) {
  Cluster cluster = uniform_cluster(1, 1);
  Scheduler s(cluster, {});
  ASSERT_TRUE(s.submit(JobId(1), job(1, 60), at(0)).has_value());
  ASSERT_TRUE(s.submit(JobId(2), job(1, 60), at(0)).has_value());
  JobSpec after_any = job(1, 60);
  after_any.dependencies = {{DependencyKind::kAfterAny, JobId(2)}};
  ASSERT_TRUE(s.submit(JobId(3), after_any, at(0)).has_value());
  s.schedule(at(0));
  ASSERT_TRUE(s.cancel_pending(JobId(2)).has_value());
  EXPECT_FALSE(s.cancel_pending(JobId(2)).has_value());
  s.finished(JobId(1), JobEnd::kCompleted, at(5));
  EXPECT_EQ(ids(s.schedule(at(5))), (std::vector<std::uint64_t>{3}));
}

TEST(Orders, ShortestJobFirstAndMultifactor) {
  Cluster cluster = uniform_cluster(1, 1);
  {
    Scheduler s(cluster, {make_sjf_order(), make_no_backfill()});
    ASSERT_TRUE(s.submit(JobId(1), job(1, 300), at(0)).has_value());
    ASSERT_TRUE(s.submit(JobId(2), job(1, 100), at(1)).has_value());
    EXPECT_EQ(ids(s.schedule(at(1))), (std::vector<std::uint64_t>{2}));
    s.finished(JobId(2), JobEnd::kCompleted, at(2));
  }
  {
    Scheduler s(cluster, {make_multifactor_order(), make_no_backfill()});
    JobSpec urgent = job(1, 300);
    urgent.priority = 5000;
    ASSERT_TRUE(s.submit(JobId(1), job(1, 300), at(0)).has_value());
    ASSERT_TRUE(s.submit(JobId(2), urgent, at(1)).has_value());
    EXPECT_EQ(ids(s.schedule(at(1))), (std::vector<std::uint64_t>{2}));
  }
}

// Two accounts weighted 1 and 2, each with more work than the cluster holds: as jobs end
// and the queue refills, the cores they hold approach 1:2 (Mesos' DRF sorter tests check
// the same convergence).
TEST(FairShare, SharesConvergeToTheWeights) {
  Cluster cluster = uniform_cluster(12, 1);
  Scheduler s(cluster, {make_fair_share_order(), make_easy_backfill()});
  s.fair_share().set_weight("small", 1);
  s.fair_share().set_weight("large", 2);
  std::uint64_t next_id = 1;
  for (int i = 0; i < 200; ++i) {  // more than the 60 refills below can drain
    ASSERT_TRUE(s.submit(JobId(next_id++), job(1, 100, "small"), at(0)).has_value());
    ASSERT_TRUE(s.submit(JobId(next_id++), job(1, 100, "large"), at(0)).has_value());
  }
  std::vector<std::pair<std::int64_t, JobId>> ends;
  for (const Started& st : s.schedule(at(0)).started) ends.emplace_back(10 + st.id.value(), st.id);
  // Jobs end one at a time; each pass refills the free core.
  for (std::int64_t t = 1; t <= 60; ++t) {
    std::ranges::sort(ends);
    auto [end, id] = ends.front();
    ends.erase(ends.begin());
    s.finished(id, JobEnd::kCompleted, at(end));
    for (const Started& st : s.schedule(at(end)).started) ends.emplace_back(end + 7 + t % 5, st.id);
  }
  const double small = static_cast<double>(s.fair_share().allocation("small").cores);
  const double large = static_cast<double>(s.fair_share().allocation("large").cores);
  EXPECT_EQ(small + large, 12);
  EXPECT_EQ(large, 2 * small);
  EXPECT_NEAR(s.fair_share().weighted_share("small"), s.fair_share().weighted_share("large"), 1e-9);
}

TEST(FairShare, DominantShareIsTheLargestResourceShare) {
  FairShare fs;
  fs.set_total({100, 1000, 0});
  fs.allocated("a", {10, 500, 0});  // 10% of cores, 50% of memory
  fs.allocated("b", {30, 100, 0});
  EXPECT_DOUBLE_EQ(fs.dominant_share("a"), 0.5);
  EXPECT_DOUBLE_EQ(fs.dominant_share("b"), 0.3);
  EXPECT_EQ(fs.sort(), (std::vector<std::string>{"b", "a"}));
  fs.unallocated("a", {10, 500, 0});
  EXPECT_EQ(fs.sort().front(), "a");
}

}  // namespace
}  // namespace loom::sched

namespace loom::sched {
namespace {

// A restarted controller takes back what its agents report running, walltime and all.
TEST(Scheduler, AnAdoptedJobHoldsItsCoresAndKeepsItsDeadline) {
  Cluster cluster = uniform_cluster(1, 4);
  Scheduler first(cluster, {});
  ASSERT_TRUE(first.submit(JobId(1), job(2, 100), at(0)).has_value());
  const Placement placement = first.schedule(at(10)).started.at(0).placement;

  Cluster again = uniform_cluster(1, 4);
  Scheduler s(again, {});
  ASSERT_TRUE(s.adopt(JobId(1), job(2, 100), placement, at(10)).has_value());
  EXPECT_EQ(again.free(NodeId(0)).domains[0].cores, 2u);
  EXPECT_EQ(s.next_deadline(), at(110))
      << "the walltime runs from the job's start, not the restart";
  const auto twice = s.adopt(JobId(2), job(2, 100), placement, at(10));
  ASSERT_FALSE(twice.has_value());
  EXPECT_EQ(twice.error().message(), "job 2's core 0 on n0 is held already");
  EXPECT_EQ(s.adopt(JobId(1), job(2, 100), placement, at(10)).error().message(),
            "job 1 is known already");
  ASSERT_TRUE(s.submit(JobId(3), job(4, 100), at(20)).has_value());
  EXPECT_TRUE(s.schedule(at(20)).started.empty()) << "the adopted job's cores are not given twice";
}

TEST(Scheduler, ARequeuedJobGivesBackItsCoresAndRunsAgain) {
  Cluster cluster = uniform_cluster(1, 4);
  Scheduler s(cluster, {});
  ASSERT_TRUE(s.submit(JobId(1), job(4, 100), at(0)).has_value());
  ASSERT_EQ(s.schedule(at(0)).started.size(), 1u);
  s.requeue(JobId(1), at(0));
  EXPECT_EQ(cluster.free(NodeId(0)).domains[0].cores, 4u);
  EXPECT_EQ(s.running_count(), 0u);
  EXPECT_EQ(ids(s.schedule(at(5))), (std::vector<std::uint64_t>{1}));
}

}  // namespace
}  // namespace loom::sched
