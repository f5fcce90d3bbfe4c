// QOS in the job manager: who may use one, and a preempted job's life: killed, PENDING
// again with its id and the reason, and run later.
#include "job_manager_fixture.hpp"
#include "loom/sched/configured.hpp"

namespace loom::controller {
namespace {

using namespace loom::controller::testing;

class JobQosTest : public JobManagerTest {
 protected:
  void SetUp() override {
    JobManagerTest::SetUp();
    Config::Qos debug;
    debug.name = "debug";
    debug.priority = 10;
    debug.users = {"loom-bob"};
    debug.preempt = {"normal"};
    manager_->set_policy(sched::scheduler_options(Config::Scheduler{}, {}, {debug}).value());
  }
  static v1::JobSpec with_qos(unsigned tasks, const std::string& qos) {
    v1::JobSpec s = spec(tasks);
    s.set_qos(qos);
    return s;
  }
};

TEST_F(JobQosTest, OnlyAConfiguredQosItsUsersMayUseIsTaken) {
  EXPECT_EQ(manager_->submit(kAlice, with_qos(1, "urgent"), 0, at(0)).error().message(),
            "--qos urgent: there is no such QOS");
  EXPECT_EQ(manager_->submit(kAlice, with_qos(1, "debug"), 0, at(0)).error().message(),
            "--qos debug: loom-alice may not use it");
  EXPECT_TRUE(submit(kBob, with_qos(1, "debug"), at(0)).has_value());
  EXPECT_TRUE(submit(kAdmin, with_qos(1, "debug"), at(0)).has_value());
  EXPECT_TRUE(submit(kAlice, with_qos(1, "normal"), at(0)).has_value());
}

TEST_F(JobQosTest, APreemptedJobIsKilledRequeuedWithItsIdAndTheReasonAndRunsLater) {
  const JobId normal = submit(kAlice, spec(8), at(0)).value();
  ASSERT_EQ(manager_->schedule(at(1)).value().size(), 1u);
  const JobId urgent = submit(kBob, with_qos(8, "debug"), at(2)).value();
  EXPECT_TRUE(manager_->schedule(at(3)).value().empty());
  EXPECT_EQ(manager_->take_preempted(), (std::vector<sched::Preemption>{{normal, urgent, true}}))
      << "the caller kills it, and keeps its slices";
  EXPECT_TRUE(manager_->take_preempted().empty());
  EXPECT_TRUE(manager_->being_killed(normal));

  ASSERT_TRUE(manager_->finished(normal, killed_by(15), at(4)).has_value());
  const JobRow requeued = row(normal);
  EXPECT_EQ(requeued.state, v1::PENDING);
  EXPECT_EQ(requeued.reason.text(), fmt::format("Preempted by job {}", urgent.value()));
  EXPECT_EQ(requeued.placement.nodes_size(), 0);

  auto launches = manager_->schedule(at(5)).value();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].id, urgent);
  ASSERT_TRUE(manager_->finished(urgent, {}, at(6)).has_value());
  launches = manager_->schedule(at(7)).value();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].id, normal) << "the same job, run again";
  ASSERT_TRUE(manager_->finished(normal, {}, at(8)).has_value());
  reopen();
  EXPECT_EQ(row(normal).state, v1::COMPLETED);
}

// A controller that stops while a preempted job is being killed requeues it all the same,
// whether its node reports it ended or is lost; and a running job being cancelled ends
// CANCELLED, not requeued, when its node is lost.
// Its owner cancels a job being preempted: it ends CANCELLED, not requeued.
TEST_F(JobQosTest, ACancelWinsOverAPreemptionsRequeue) {
  const JobId normal = submit(kAlice, spec(8), at(0)).value();
  ASSERT_EQ(manager_->schedule(at(1)).value().size(), 1u);
  const JobId urgent = submit(kBob, with_qos(8, "debug"), at(2)).value();
  ASSERT_TRUE(manager_->schedule(at(3)).value().empty());
  ASSERT_EQ(manager_->take_preempted(), (std::vector<sched::Preemption>{{normal, urgent, true}}));
  std::vector<JobId> kill;
  ASSERT_TRUE(manager_->cancel(kAlice, normal, std::nullopt, at(3), kill).has_value());
  ASSERT_TRUE(manager_->finished(normal, killed_by(15), at(4)).has_value());
  EXPECT_EQ(row(normal).state, v1::CANCELLED);
}

TEST_F(JobQosTest, AJobBeingPreemptedOrCancelledEndsSoAfterARestart) {
  join("n0");
  const JobId normal = submit(kAlice, spec(4), at(0)).value();
  ASSERT_EQ(manager_->schedule(at(0)).value().size(), 1u);
  const JobId other = submit(kAlice, spec(4), at(1)).value();
  ASSERT_EQ(manager_->schedule(at(1)).value().size(), 1u);
  const JobId urgent = submit(kBob, with_qos(4, "debug"), at(2)).value();
  ASSERT_TRUE(manager_->schedule(at(3)).value().empty());
  ASSERT_EQ(manager_->take_preempted(), (std::vector<sched::Preemption>{{other, urgent, true}}))
      << "the youngest";
  std::vector<JobId> kill;
  ASSERT_TRUE(manager_->cancel(kAlice, normal, std::nullopt, at(3), kill).has_value());

  reopen(at(4));
  EXPECT_TRUE(manager_->being_killed(other)) << "the core sends the kill again once found";
  EXPECT_TRUE(manager_->being_killed(normal));
  manager_->heard(other, "n0");
  ASSERT_TRUE(manager_->adopt(other).has_value());
  ASSERT_TRUE(manager_->finished(other, killed_by(15), at(5)).has_value());
  EXPECT_EQ(row(other).state, v1::PENDING);
  EXPECT_EQ(row(other).reason.text(), fmt::format("Preempted by job {}", urgent.value()));
  EXPECT_FALSE(row(other).killing) << "requeued: the next run is not being killed";
  ASSERT_TRUE(manager_->lost(normal, {v1::REASON_NODE_FAIL, "n0 is gone"}, at(6)).has_value());
  EXPECT_EQ(row(normal).state, v1::CANCELLED);
  EXPECT_EQ(row(normal).reason.text(), "cancelled by loom-alice");
}

}  // namespace
}  // namespace loom::controller
