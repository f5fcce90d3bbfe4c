// Accounts in the scheduler: fair share by shares, now and decayed over the past, and the
// limits that hold an account's jobs back without holding back anybody else's.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>

#include "clusters.hpp"
#include "loom/hwtopo/load.hpp"
#include "loom/sched/scheduler.hpp"

namespace loom::sched {
namespace {

using testing::at;
using testing::uniform_cluster;

JobSpec job(std::string account, unsigned tasks = 1, std::uint64_t bb = 0) {
  JobSpec spec;
  spec.tasks = tasks;
  spec.walltime = std::chrono::seconds(100);
  spec.account = std::move(account);
  spec.user = "alice";
  spec.bb_per_node = Bytes(bb);
  return spec;
}

Config::Account account(std::string name, std::uint64_t shares, Config::AccountLimits limits = {}) {
  Config::Account out;
  out.name = std::move(name);
  out.shares = shares;
  out.limits = limits;
  return out;
}

SchedulerOptions with_accounts(std::vector<Config::Account> accounts) {
  SchedulerOptions options(make_fair_share_order(), make_easy_backfill());
  options.accounts = std::move(accounts);
  options.fair_share_half_life = std::chrono::seconds(60);
  return options;
}

std::map<std::string, int> started_by_account(const PassResult& pass,
                                              const std::map<JobId, std::string>& accounts) {
  std::map<std::string, int> out;
  for (const Started& s : pass.started) ++out[accounts.at(s.id)];
  return out;
}

// An account's past use fades by half each half-life: it held the whole cluster for one
// half-life (average 1/2), then nothing for another (1/4).
TEST(FairShare, PastUseDecaysByHalfEachHalfLife) {
  FairShare fs;
  fs.set_half_life(std::chrono::seconds(60));
  fs.set_total({4, 0, 0});
  fs.advance(at(0));
  fs.allocated("a", {4, 0, 0});
  fs.advance(at(60));
  EXPECT_NEAR(fs.average("a"), 0.5, 1e-12);
  EXPECT_NEAR(fs.weighted_share("a"), (1 + 0.5) / 2, 1e-12) << "now and the past, halved";
  fs.unallocated("a", {4, 0, 0});
  fs.advance(at(120));
  EXPECT_NEAR(fs.average("a"), 0.25, 1e-12);
  fs.advance(at(90));  // a time gone by changes nothing
  EXPECT_NEAR(fs.average("a"), 0.25, 1e-12);
}

// One pass over an empty cluster shares its cores as the shares say (1:3), rather than
// giving them all to whichever account was lowest when it began.
TEST(FairShare, OnePassSharesTheFreeCoresByTheAccountsShares) {
  Cluster cluster = uniform_cluster(1, 16);
  Scheduler s(cluster, with_accounts({account("small", 1), account("large", 3)}));
  std::map<JobId, std::string> accounts;
  for (std::uint64_t i = 1; i <= 40; ++i) {
    const std::string name = i % 2 == 0 ? "small" : "large";
    accounts.emplace(JobId(i), name);
    ASSERT_TRUE(s.submit(JobId(i), job(name), at(0)).has_value());
  }
  EXPECT_EQ(started_by_account(s.schedule(at(0)), accounts),
            (std::map<std::string, int>{{"large", 12}, {"small", 4}}));
  EXPECT_EQ(s.jobs_of("small").running, 4u);
  EXPECT_EQ(s.jobs_of("small").pending, 16u);
}

// Of two accounts holding nothing now, the one that held the cluster lately goes second.
TEST(FairShare, AnAccountThatUsedTheClusterLatelyGoesAfterOneThatDidNot) {
  Cluster cluster = uniform_cluster(1, 4);
  Scheduler s(cluster, with_accounts({account("busy", 1), account("idle", 1)}));
  ASSERT_TRUE(s.submit(JobId(1), job("busy", 4), at(0)).has_value());
  ASSERT_EQ(s.schedule(at(0)).started.size(), 1u);
  s.finished(JobId(1), JobEnd::kCompleted, at(60));
  ASSERT_TRUE(s.submit(JobId(2), job("busy", 4), at(60)).has_value());  // first in FCFS
  ASSERT_TRUE(s.submit(JobId(3), job("idle", 4), at(61)).has_value());
  const PassResult pass = s.schedule(at(61));
  ASSERT_EQ(pass.started.size(), 1u);
  EXPECT_EQ(pass.started[0].id, JobId(3));
  EXPECT_GT(s.fair_share().average("busy"), 0.4);
}

// A job past its account's NVMe limit waits with the reason, lets the jobs behind it
// (another account's) start, and starts once its account's running job frees the room.
TEST(AccountLimits, AJobPastItsAccountsLimitWaitsWithoutHoldingBackOthers) {
  constexpr std::uint64_t kGiB = 1ull << 30;
  Cluster cluster = uniform_cluster(1, 8, 100 * kGiB);
  Config::AccountLimits limits;
  limits.nvme = 4 * kGiB;
  SchedulerOptions options(make_fcfs_order(), make_easy_backfill());
  options.accounts = {account("physics", 1, limits), account("chemistry", 1)};
  Scheduler s(cluster, std::move(options));
  ASSERT_TRUE(s.submit(JobId(1), job("physics", 1, 3 * kGiB), at(0)).has_value());
  ASSERT_TRUE(s.submit(JobId(2), job("physics", 1, 2 * kGiB), at(1)).has_value());
  ASSERT_TRUE(s.submit(JobId(3), job("chemistry", 1, 10 * kGiB), at(2)).has_value());
  PassResult pass = s.schedule(at(2));
  ASSERT_EQ(pass.started.size(), 2u);
  EXPECT_EQ(pass.started[0].id, JobId(1));
  EXPECT_EQ(pass.started[1].id, JobId(3)) << "the held-back job blocks nobody";
  EXPECT_EQ(s.held_back(JobId(2)), "NVMe 3 GiB of 4 GiB held");
  EXPECT_EQ(s.held_back(JobId(3)), std::nullopt);

  s.finished(JobId(1), JobEnd::kCompleted, at(10));
  pass = s.schedule(at(10));
  ASSERT_EQ(pass.started.size(), 1u);
  EXPECT_EQ(pass.started[0].id, JobId(2));
  EXPECT_EQ(s.held_back(JobId(2)), std::nullopt);
}

TEST(AccountLimits, RunningJobsAndCoresAreLimitedToo) {
  Cluster cluster = uniform_cluster(1, 8);
  Config::AccountLimits limits;
  limits.running_jobs = 2;
  limits.cores = 5;
  SchedulerOptions options(make_fcfs_order(), make_easy_backfill());
  options.accounts = {account("a", 1, limits)};
  Scheduler s(cluster, std::move(options));
  for (std::uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(s.submit(JobId(i), job("a"), at(0)));
  ASSERT_TRUE(s.submit(JobId(4), job("a", 4), at(0)));
  EXPECT_EQ(s.schedule(at(0)).started.size(), 2u);
  EXPECT_EQ(s.held_back(JobId(3)), "running jobs 2 of 2");
  // A SIGHUP's policy: more jobs, but cores are still limited.
  limits.running_jobs = 10;
  SchedulerOptions wider(make_fcfs_order(), make_easy_backfill());
  wider.accounts = {account("a", 1, limits)};
  s.set_policy(std::move(wider));
  EXPECT_EQ(s.schedule(at(1)).started.size(), 1u);
  EXPECT_EQ(s.held_back(JobId(4)), "cores 3 of 5 held");
  EXPECT_EQ(s.jobs_of("a").running, 3u);
  EXPECT_EQ(s.jobs_of("a").pending, 1u);
}

}  // namespace
}  // namespace loom::sched
