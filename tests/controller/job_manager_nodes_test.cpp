// The job manager and the nodes: persistent buffers, bindings, drains, and jobs whose node
// is unknown or lost.
#include "job_manager_fixture.hpp"

namespace loom::controller {
namespace {

using namespace loom::controller::testing;

TEST_F(JobManagerTest, PersistentBuffersAreTheirOwnersHeldAndBindTheirJobsToTheirNode) {
  join("n1");
  auto made =
      manager_->create_buffer(kAlice, {"scratch", std::uint64_t{60} << 20, "n1", ""}, at(0));
  ASSERT_TRUE(made.has_value()) << made.error().to_string();
  EXPECT_EQ(made->node, "n1");
  EXPECT_EQ(made->nvme, "/nvme-n1");
  EXPECT_EQ(cluster_.free(NodeId(1)).nvme[0], std::uint64_t{40} << 20);
  EXPECT_EQ(made->slice, "1001@scratch");
  EXPECT_EQ(manager_->create_buffer(kAlice, {"scratch", 1 << 20, "", ""}, at(0)).error().message(),
            "you have a burst buffer named scratch already");
  EXPECT_EQ(manager_->create_buffer(kBob, {"big", std::uint64_t{200} << 20, "", ""}, at(0))
                .error()
                .code(),
            ErrorCode::kResourceExhausted);
  EXPECT_EQ(manager_->create_buffer(kBob, {"../x", 1 << 20, "", ""}, at(0)).error().code(),
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
  EXPECT_EQ(manager_->destroy_buffer(kAlice, "", "scratch", at(3)).error().code(),
            ErrorCode::kFailedPrecondition)
      << "in use";
  ASSERT_TRUE(manager_->finished(id, {}, at(3)).has_value());

  reopen();  // stored, and held again before its node returns
  join("n1");
  EXPECT_EQ(cluster_.free(NodeId(1)).nvme[0], std::uint64_t{40} << 20);
  EXPECT_EQ(manager_->destroy_buffer(kBob, "", "scratch", at(3)).error().code(),
            ErrorCode::kNotFound);
  ASSERT_TRUE(manager_->destroy_buffer(kAlice, "", "scratch", at(3)).has_value());
  EXPECT_EQ(cluster_.free(NodeId(1)).nvme[0], std::uint64_t{100} << 20);
  EXPECT_FALSE(submit(kAlice, s, at(4)).has_value()) << "the buffer is gone";
}

// A pending job of loom-bob's was bound to loom-alice's buffer made later under the same
// name (issue 19): each user names their own buffers, and a job's buffer is its user's.
TEST_F(JobManagerTest, EachUserNamesTheirOwnBuffersAndAJobHasOnlyItsUsers) {
  const BufferRow bobs =
      manager_->create_buffer(kBob, {"scratch", 1 << 20, "n0", ""}, at(0)).value();
  auto alices = manager_->create_buffer(kAlice, {"scratch", 1 << 20, "n0", ""}, at(0));
  ASSERT_TRUE(alices.has_value()) << "loom-bob's name is none of her business: "
                                  << alices.error().to_string();
  EXPECT_NE(alices->slice, bobs.slice) << "one device holds both";
  ASSERT_EQ(manager_->buffers(kBob).size(), 1u);
  EXPECT_EQ(manager_->buffers(kBob)[0].user, "loom-bob");
  EXPECT_EQ(manager_->buffers(kAdmin).size(), 2u);

  const JobId whole = submit(kAlice, spec(8), at(0)).value();  // n0 is full meanwhile
  ASSERT_EQ(manager_->schedule(at(0)).value().size(), 1u);
  v1::JobSpec s = spec(1);
  s.set_bb_persistent("scratch");
  const JobId bob_job = submit(kBob, s, at(1)).value();
  const JobId alice_job = submit(kAlice, s, at(1)).value();
  ASSERT_TRUE(manager_->destroy_buffer(kBob, "", "scratch", at(2)).has_value());
  EXPECT_EQ(row(bob_job).state, v1::CANCELLED);
  EXPECT_EQ(row(bob_job).reason.text(), "BufferDestroyed: --bb-persistent scratch was destroyed");
  EXPECT_EQ(row(alice_job).state, v1::PENDING) << "her buffer is another";
  ASSERT_NE(manager_->buffer(kAlice.uid, "scratch"), nullptr);
  EXPECT_EQ(manager_->buffer(kBob.uid, "scratch"), nullptr);
  ASSERT_TRUE(manager_->finished(whole, {}, at(4)).has_value());
  const auto launches = manager_->schedule(at(5)).value();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].id, alice_job);
  reopen();  // and the controller starts again with both stored
  EXPECT_EQ(row(bob_job).state, v1::CANCELLED);
}

TEST_F(JobManagerTest, AnAdminNamesTheOwnerOfTheBufferToDestroy) {
  ASSERT_TRUE(manager_->create_buffer(kAlice, {"scratch", 1 << 20, "n0", ""}, at(0)));
  EXPECT_EQ(manager_->destroy_buffer(kAdmin, "", "scratch", at(1)).error().message(),
            "there is no burst buffer scratch of yours (held by: --user loom-alice)");
  EXPECT_EQ(manager_->destroy_buffer(kBob, "", "scratch", at(1)).error().message(),
            "there is no burst buffer scratch of yours")
      << "a user learns nothing of others' buffers";
  EXPECT_EQ(manager_->destroy_buffer(kBob, "loom-alice", "scratch", at(1)).error().message(),
            "only an administrator may destroy another user's burst buffer "
            "(loom-bob is not one)");
  EXPECT_EQ(manager_->destroy_buffer(kAdmin, "loom-bob", "scratch", at(1)).error().code(),
            ErrorCode::kNotFound);
  const auto destroyed = manager_->destroy_buffer(kAdmin, "loom-alice", "scratch", at(1));
  ASSERT_TRUE(destroyed.has_value()) << destroyed.error().to_string();
  EXPECT_EQ(destroyed->user, "loom-alice");
  EXPECT_TRUE(manager_->buffers(kAdmin).empty());
}

// A state from before buffers were their owners' can hold a pending job bound to a name
// only another user has: the controller cancels it at start rather than bind it, or fail.
TEST_F(JobManagerTest, AStoredJobBoundToAnotherUsersBufferIsCancelledAtStart) {
  manager_.reset();
  {
    auto store = open_sqlite_store(dir_).value();
    v1::JobSpec s = spec(1);
    s.set_bb_persistent("scratch");
    const NewJob bobs{"loom-bob", kBob.uid, 0, s};
    ASSERT_TRUE(store->insert_jobs(std::span(&bobs, 1), false).has_value());
    ASSERT_TRUE(store
                    ->save_buffer({"scratch", "scratch", "loom-alice", kAlice.uid, 1001, "n0",
                                   "/nvme-n0", 1 << 20, 0, ""})
                    .has_value());
  }
  reopen(at(7));
  const JobRow bobs = manager_->list(kBob, true).at(0);
  EXPECT_EQ(bobs.state, v1::CANCELLED);
  EXPECT_EQ(bobs.reason.text(),
            "BufferDestroyed: --bb-persistent scratch: loom-bob has no burst buffer of that name");
  EXPECT_EQ(bobs.end_time, 7);
  EXPECT_TRUE(manager_->schedule(at(8)).value().empty());
}

TEST_F(JobManagerTest, TheBindingAnAgentAppliedIsShownBesideThePlacement) {
  const JobId id = submit(kAlice, spec(2), at(0)).value();
  ASSERT_EQ(manager_->schedule(at(0)).value().size(), 1u);
  v1::JobStarted report = start_of(id);
  for (unsigned rank : {0u, 1u}) {
    v1::RankBinding& bound = *report.add_ranks();
    bound.set_rank(rank);
    bound.add_cpus(4 + rank);
    bound.add_numa(1);
  }
  ASSERT_TRUE(manager_->started("n0", report).has_value());
  auto bound_cpu = [&](int rank) {
    const v1::PlacedRank placed = row(id).placement.nodes(0).ranks(rank);
    return placed.has_bound() ? std::optional(placed.bound().cpus(0)) : std::nullopt;
  };
  EXPECT_EQ(bound_cpu(1), 5u) << "shown at once";
  ASSERT_TRUE(manager_->finished(id, {}, at(5)).has_value());
  reopen();  // and stored with the job's end
  EXPECT_EQ(bound_cpu(0), 4u);
  EXPECT_EQ(bound_cpu(1), 5u);
  EXPECT_EQ(row(id).placement.nodes(0).ranks(1).bound().numa(0), 1u);
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
