// Accounts at submit: whom a job is charged to, who may charge what, the limits a job is
// refused by, and the one it waits for, shown as its reason.
#include "job_manager_fixture.hpp"
#include "loom/controller/reason.hpp"
#include "loom/sched/configured.hpp"

namespace loom::controller {
namespace {

using namespace loom::controller::testing;

constexpr std::uint64_t kMiB = 1ull << 20;

// Bob's primary group is Debian's `daemon` (gid 1), which `chemistry` admits.
const Caller kBobInDaemon{1002, "loom-bob", false, 1};
const Caller kCarol{1003, "loom-carol", false, 1003};

class JobAccountsTest : public JobManagerTest {
 protected:
  void SetUp() override {
    JobManagerTest::SetUp();
    configure();
  }
  // The accounts, as loomctld reads them at start and on SIGHUP.
  void configure() {
    Config::Account physics;
    physics.name = "physics";
    physics.users = {"loom-alice"};
    physics.limits.nvme = 10 * kMiB;
    physics.limits.walltime = std::chrono::hours(1);
    physics.limits.submitted_jobs = 5;
    physics.limits.cores = 4;
    Config::Account chemistry;
    chemistry.name = "chemistry";
    chemistry.shares = 3;
    chemistry.users = {"loom-alice"};
    chemistry.group = "daemon";
    manager_->set_policy(
        sched::scheduler_options(Config::Scheduler{}, {physics, chemistry}).value());
  }
  std::string refusal(const Caller& caller, const v1::JobSpec& s, std::uint32_t array = 0) {
    auto ids = manager_->submit(caller, s, array, at(0));
    EXPECT_FALSE(ids.has_value());
    return ids ? "" : ids.error().message();
  }
  static v1::JobSpec charged(const std::string& account, unsigned tasks = 1) {
    v1::JobSpec s = spec(tasks);
    s.set_account(account);
    return s;
  }
};

TEST_F(JobManagerTest, WithoutAccountsAJobsAccountIsALabel) {
  const JobId id = submit(
                       kAlice,
                       [] {
                         v1::JobSpec s = spec(1);
                         s.set_account("anything");
                         return s;
                       }(),
                       at(0))
                       .value();
  EXPECT_EQ(row(id).spec.account(), "anything");
}

TEST_F(JobAccountsTest, AJobWithoutAnAccountIsChargedToTheFirstItsUserIsIn) {
  EXPECT_EQ(row(submit(kAlice, spec(1), at(0)).value()).spec.account(), "physics");
  EXPECT_EQ(row(submit(kAlice, charged("chemistry"), at(0)).value()).spec.account(), "chemistry");
  EXPECT_EQ(row(submit(kBobInDaemon, spec(1), at(0)).value()).spec.account(), "chemistry")
      << "a member of its group";
  EXPECT_EQ(row(submit(kAdmin, charged("physics"), at(0)).value()).spec.account(), "physics")
      << "an admin charges any account";
  EXPECT_EQ(row(submit(kAdmin, spec(1), at(0)).value()).spec.account(), "") << "or none";
}

TEST_F(JobAccountsTest, AnUnknownAccountOrOneTheUserIsNotInIsRefusedNamingIt) {
  EXPECT_EQ(refusal(kAlice, charged("biology")), "--account biology: there is no such account");
  EXPECT_EQ(refusal(kBobInDaemon, charged("physics")), "--account physics: loom-bob is not in it");
  EXPECT_EQ(refusal(kCarol, spec(1)),
            "loom-carol is in no account, and every job is charged to one: an admin adds users "
            "to [[accounts]]");
}

TEST_F(JobAccountsTest, AJobItsAccountWouldNeverRunOrMayNotQueueIsRefusedNamingTheLimit) {
  EXPECT_EQ(refusal(kAlice, spec(1, 7200)),
            "account physics: --time 2:00:00 is longer than its max_walltime 1:00:00");
  EXPECT_EQ(refusal(kAlice, spec(5)),
            "account physics: the job's 5 cores are more than its max_cores 4");
  v1::JobSpec big = spec(1);
  big.set_bb_per_node(11 * kMiB);
  EXPECT_EQ(refusal(kAlice, big),
            "account physics: the job's 11 MiB of burst buffer is more than its max_nvme 10 MiB");
  ASSERT_TRUE(manager_->submit(kAlice, spec(1), 3, at(0)).has_value());
  EXPECT_EQ(refusal(kAlice, spec(1), 3),
            "account physics: 3 jobs more would pass its max_submitted_jobs 5 (3 pending, 0 "
            "running)");
  EXPECT_TRUE(submit(kAlice, spec(1), at(0)).has_value());
}

// A job past its account's NVMe limit is PENDING with the reason, and starts once the
// account's running job ends.
TEST_F(JobAccountsTest, AJobPastItsAccountsNvmeLimitWaitsSayingSoAndStartsOnceThereIsRoom) {
  v1::JobSpec slice = spec(1);
  slice.set_bb_per_node(6 * kMiB);
  const JobId first = submit(kAlice, slice, at(0)).value();
  const JobId second = submit(kAlice, slice, at(1)).value();
  ASSERT_EQ(manager_->schedule(at(2)).value().size(), 1u);
  ASSERT_EQ(row(first).state, v1::RUNNING);
  const JobRow waiting = row(second);
  EXPECT_EQ(waiting.state, v1::PENDING);
  EXPECT_EQ(waiting.reason.text(), "AccountLimit: NVMe 6 MiB of 10 MiB held");
  ASSERT_TRUE(manager_->finished(first, {}, at(3)).has_value());
  const auto launches = manager_->schedule(at(4)).value();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].id, second);
  EXPECT_EQ(row(second).reason.text(), "");
}

// A persistent buffer is charged to its owner's account as a job is (-A, or their first):
// its bytes count toward max_nvme, so that a buffer past it is refused and a job past it
// waits, until the buffer is destroyed. The charge outlives a restart.
TEST_F(JobAccountsTest, APersistentBufferCountsTowardItsAccountsNvmeLimit) {
  join("n0");
  const BufferRow scratch =
      manager_->create_buffer(kAlice, {"scratch", 6 * kMiB, "", ""}, at(0)).value();
  EXPECT_EQ(scratch.account, "physics");
  EXPECT_EQ(manager_->create_buffer(kAlice, {"more", 6 * kMiB, "", ""}, at(0)).error().message(),
            "account physics: --size 6 MiB would pass its max_nvme 10 MiB (6 MiB held)");
  EXPECT_EQ(
      manager_->create_buffer(kAlice, {"more", 6 * kMiB, "", "chemistry"}, at(0)).value().account,
      "chemistry")
      << "chemistry has no NVMe limit";
  EXPECT_EQ(
      manager_->create_buffer(kBobInDaemon, {"mine", kMiB, "", "physics"}, at(0)).error().message(),
      "--account physics: loom-bob is not in it");

  reopen(at(1));
  configure();
  join("n0");
  v1::JobSpec slice = spec(1);
  slice.set_bb_per_node(6 * kMiB);
  const JobId job = submit(kAlice, slice, at(2)).value();
  EXPECT_TRUE(manager_->schedule(at(3)).value().empty());
  EXPECT_EQ(row(job).reason.text(), "AccountLimit: NVMe 6 MiB of 10 MiB held");
  ASSERT_TRUE(manager_->destroy_buffer(kAlice, "", "scratch", at(4)).has_value());
  EXPECT_EQ(manager_->schedule(at(5)).value().size(), 1u) << "the buffer's bytes are back";
}

// Usage outlives a restart: the account that used the node before it goes after the one
// that did not, under fair share, as it would have without the restart.
TEST_F(JobAccountsTest, FairShareUsageOutlivesARestart) {
  auto fair_share = [] {
    Config::Scheduler scheduler;
    scheduler.order = "fairshare";
    scheduler.fair_share_half_life = std::chrono::minutes(1);
    Config::Account physics, chemistry;
    physics.name = "physics";
    physics.users = {"loom-alice"};
    chemistry.name = "chemistry";
    chemistry.group = "daemon";
    return sched::scheduler_options(scheduler, {physics, chemistry}).value();
  };
  manager_->set_policy(fair_share());
  const JobId used = submit(kAlice, spec(8), at(0)).value();
  ASSERT_EQ(manager_->schedule(at(0)).value().size(), 1u);
  ASSERT_TRUE(manager_->finished(used, {}, at(60)).has_value());
  ASSERT_TRUE(manager_->schedule(at(61)).has_value());
  reopen(at(62));
  manager_->set_policy(fair_share());
  const JobId alices = submit(kAlice, spec(8), at(63)).value();  // first come
  const JobId bobs = submit(kBobInDaemon, spec(8), at(64)).value();
  const auto launches = manager_->schedule(at(65)).value();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].id, bobs) << "job " << alices.value() << "'s account used the node lately";
}

// loom acct's record: from the store, a user's own jobs, by time, account and state, a
// page at a time.
TEST_F(JobAccountsTest, TheRecordHasEveryJobOfTheWindowAUsersOwnAndPagesThrough) {
  const JobId early = submit(kAlice, spec(1), at(0)).value();
  ASSERT_EQ(manager_->schedule(at(1)).value().size(), 1u);
  ASSERT_TRUE(manager_->finished(early, {}, at(10)).has_value());
  const JobId physics = submit(kAlice, spec(1), at(20)).value();
  const JobId chemistry = submit(kAlice, charged("chemistry"), at(21)).value();
  const JobId bobs = submit(kBobInDaemon, spec(1), at(22)).value();
  ASSERT_EQ(manager_->schedule(at(23)).value().size(), 3u);
  ASSERT_TRUE(manager_->finished(physics, exited(1), at(30)).has_value());

  auto ids = [](const AcctPage& page) {
    std::vector<JobId> out;
    for (const JobRow& row : page.jobs) out.push_back(row.id);
    return out;
  };
  AcctQuery window;
  window.since = 15;  // `early` ended before
  EXPECT_EQ(ids(manager_->accounting(kAlice, window).value()),
            (std::vector<JobId>{physics, chemistry}));
  EXPECT_EQ(ids(manager_->accounting(kAdmin, window).value()),
            (std::vector<JobId>{physics, chemistry, bobs}));
  AcctQuery of_account = window;
  of_account.account = "chemistry";
  EXPECT_EQ(ids(manager_->accounting(kAdmin, of_account).value()),
            (std::vector<JobId>{chemistry, bobs}));
  AcctQuery failed = window;
  failed.state = v1::FAILED;
  const AcctPage failures = manager_->accounting(kAdmin, failed).value();
  ASSERT_EQ(ids(failures), std::vector<JobId>{physics});
  EXPECT_EQ(failures.jobs[0].start_time, 23);
  EXPECT_EQ(failures.jobs[0].end_time, 30);
  AcctQuery all;
  all.limit = 2;
  const AcctPage first = manager_->accounting(kAdmin, all).value();
  EXPECT_EQ(ids(first), (std::vector<JobId>{early, physics}));
  all.after = first.next_after;
  const AcctPage second = manager_->accounting(kAdmin, all).value();
  EXPECT_EQ(ids(second), (std::vector<JobId>{chemistry, bobs}));
  all.after = second.next_after;
  EXPECT_TRUE(manager_->accounting(kAdmin, all).value().jobs.empty());
  AcctQuery others;
  others.user = "loom-bob";
  EXPECT_EQ(manager_->accounting(kAlice, others).error().message(),
            "--user loom-bob: only admins see other users' jobs");
}

}  // namespace
}  // namespace loom::controller
