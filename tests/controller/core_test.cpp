// The controller's core on a fake clock: walltimes, heartbeats and the recovery window in
// milliseconds of real time, the agents' streams as channels that record what they are
// sent.
#include "core_fixture.hpp"

namespace loom::controller {
namespace {

using std::chrono::seconds;

TEST_F(CoreTest, AJobPastItsWalltimeIsKilledOnceWithTheGraceAndEndsTimeout) {
  auto agent = join();
  const JobId id = running(*agent, 60);
  clock_.advance(seconds(59));
  report({});  // heartbeats
  tick();
  EXPECT_TRUE(agent->take().empty()) << "killed before its walltime";
  clock_.advance(seconds(2));
  report({});
  tick();
  auto sent = agent->take();
  ASSERT_EQ(sent.size(), 1u);
  ASSERT_TRUE(sent[0].has_kill());
  EXPECT_EQ(sent[0].kill().job(), id.value());
  // SIGTERM, then SIGKILL after the grace: the agent's, told the grace here.
  EXPECT_EQ(sent[0].kill().grace_s(), 30u);
  clock_.advance(seconds(1));
  report({});
  tick();
  EXPECT_TRUE(agent->take().empty()) << "a job being killed is not killed again each pass";
  ended(id, 128 + 15, 15);
  EXPECT_EQ(row(id).state, v1::TIMEOUT);
  sent = agent->take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(sent[0].has_forget()) << "the node's end is acknowledged once stored";
}

TEST_F(CoreTest, TheControllerAnswersEveryHeartbeat) {
  auto agent = join();
  v1::FromAgent beat;
  beat.mutable_heartbeat();
  report(beat);
  const auto sent = agent->take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(sent[0].has_heartbeat()) << "the agent's fence counts from what it hears";
}

// Silent for the heartbeat window, the node is DOWN and its job unreachable, not final;
// only after controller.requeue_after from its last word is the job given up.
TEST_F(CoreTest, ASilentAgentsJobIsUnreachableUntilRequeueAfterAndThenFails) {
  auto agent = join();
  const JobId id = running(*agent);
  for (int i = 0; i < 10; ++i) {  // heartbeats keep it
    clock_.advance(seconds(1));
    report({});
    tick();
  }
  EXPECT_FALSE(agent->dropped);
  clock_.advance(seconds(6));  // last heard 6 s ago
  tick();
  ASSERT_TRUE(agent->dropped) << "silent for longer than 5 heartbeats";
  core_->agent_left(node_, agent.get());
  EXPECT_EQ(cluster_.state(node_), sched::NodeState::kDown);
  const JobRow unreachable = row(id);
  EXPECT_EQ(unreachable.state, v1::RUNNING);
  EXPECT_EQ(unreachable.reason.code, v1::REASON_NODE_UNREACHABLE);
  EXPECT_TRUE(unreachable.reason.text().starts_with("NodeUnreachable: n0 silent since "))
      << unreachable.reason.text();
  expect_lost_after(seconds(4), id,
                    "NodeFail: n0 was unreachable for longer than controller.requeue_after (0:10)");
}

// An agent that heard no controller for agent.fence_after killed its --requeue job: the
// job goes back to the queue at once, and the agent may forget it.
TEST_F(CoreTest, AJobItsAgentFencedIsRequeuedAtOnce) {
  auto agent = join();
  const JobId id = submit(600, 1, /*requeue=*/true);
  tick();
  ASSERT_TRUE(agent->take().at(0).has_launch());
  started(id);
  v1::FromAgent message;
  v1::JobEnded* e = message.mutable_ended();
  e->set_job(id.value());
  e->set_exit_code(128 + 9);
  e->set_signal(9);
  e->set_reason(v1::REASON_NODE_FAIL);
  e->set_error("fenced");
  report(message);
  const JobRow requeued = row(id);
  EXPECT_EQ(requeued.state, v1::PENDING);
  EXPECT_EQ(requeued.reason.text(), "requeued: NodeFail: n0 fenced it: fenced");
  bool forgotten = false;
  for (const v1::ToAgent& sent : agent->take()) forgotten = forgotten || sent.has_forget();
  EXPECT_TRUE(forgotten);
  tick();
  EXPECT_EQ(row(id).state, v1::RUNNING) << "it runs again";
}

TEST_F(CoreTest, AnAgentBackWithinTheWindowKeepsItsJobs) {
  auto agent = join();
  const JobId id = running(*agent);
  core_->agent_left(node_, agent.get());
  clock_.advance(seconds(4));
  auto again = join({id.value()});
  clock_.advance(seconds(10));
  report({});
  tick();
  EXPECT_EQ(row(id).state, v1::RUNNING);
  EXPECT_TRUE(again->take().empty()) << "nothing killed";
}

TEST_F(CoreTest, AfterARestartWhatTheNodeReportsIsTakenBackAndWhatItNeverHadRunsAgain) {
  auto agent = join();
  const JobId kept = running(*agent);
  const JobId done = running(*agent);
  const JobId unheard = running(*agent);
  start();  // the controller restarts: all three are unknown
  EXPECT_EQ(core_->jobs().unknown().size(), 3u);
  EXPECT_EQ(core_->tick_interval(), std::chrono::milliseconds(200));
  const JobId queued = submit(600);
  v1::RegisterRequest hello;
  v1::JobEnded* e = hello.add_ended();
  e->set_job(done.value());
  e->set_exit_code(0);
  auto back = join({kept.value()}, hello);
  EXPECT_TRUE(core_->jobs().unknown().empty());
  EXPECT_EQ(row(kept).state, v1::RUNNING) << "adopted, its cores held again";
  EXPECT_EQ(row(done).state, v1::COMPLETED) << "its end, reported on return, is stored";
  // No node knew it: its launch was lost with the controller, so it never ran.
  EXPECT_EQ(row(unheard).state, v1::PENDING);
  tick();
  EXPECT_EQ(row(queued).state, v1::RUNNING) << "scheduling resumes once every job is found";
  EXPECT_EQ(row(unheard).state, v1::RUNNING);
}

// A node that does not come back after a restart holds passes for the heartbeat window
// (its agent may be re-registering); after it, the other nodes take work again, and the
// node's job is given up only after controller.requeue_after.
TEST_F(CoreTest, AfterARestartAJobWhoseNodeStaysAwayIsLostAfterRequeueAfter) {
  auto agent = join();
  const JobId id = running(*agent);
  start();
  join({}, {}, "n1");
  const JobId queued = submit(600);
  tick();
  EXPECT_EQ(row(queued).state, v1::PENDING) << "nothing new starts while agents re-register";
  clock_.advance(seconds(6));
  tick();
  EXPECT_EQ(row(queued).state, v1::RUNNING) << "n1 takes work once the window passed";
  EXPECT_EQ(row(id).reason.text(), "StateUnknown: waiting for n0 to re-register");
  expect_lost_after(seconds(4), id,
                    "NodeFail: n0 did not re-register after the controller restarted");
}

// A job over two nodes, one back after the restart and one not: the cores it holds on the
// node that is back are not held again until it is adopted, so nothing new starts.
TEST_F(CoreTest, AfterARestartAJobReportedByOnlySomeOfItsNodesHoldsPasses) {
  auto n0 = join();
  auto n1 = join({}, {}, "n1");
  const JobId wide = submit(600, 8);  // 4 cores on each
  tick();
  ASSERT_EQ(core_->jobs().nodes_of(wide).size(), 2u);
  start();
  join({wide.value()}, {}, "n0");
  clock_.advance(seconds(6));
  const JobId queued = submit(600);
  tick();
  EXPECT_EQ(row(queued).state, v1::PENDING) << "its cores on n0 may still be the wide job's";
}

// A preempted, requeued job's slices are kept on its node, which is told so with the kill:
// an agent that re-registers keeps them, they go once the job starts on another node, and
// a restarted controller, which cannot tell them from an older run's, has them dropped.
TEST_F(CoreTest, APreemptedJobsSliceIsKeptForItsNextStartAndDroppedWhenItStartsElsewhere) {
  Config::Qos debug;
  debug.name = "debug";
  debug.priority = 100;
  debug.preempt = {"normal"};
  qos_ = {debug};
  start();
  auto launched = [](const std::vector<v1::ToAgent>& sent) {
    return std::ranges::any_of(sent, [](const v1::ToAgent& m) { return m.has_launch(); });
  };
  auto dropped = [](const std::vector<v1::ToAgent>& sent) {
    std::vector<std::uint64_t> jobs;
    for (const v1::ToAgent& m : sent) {
      if (m.has_drop_slice()) jobs.push_back(m.drop_slice().job());
    }
    return jobs;
  };
  auto n0 = join();
  const NodeId node0 = node_;
  const JobId victim = submit(600, 4);
  tick();
  ASSERT_TRUE(n0->take().at(0).has_launch());
  started(victim);
  auto n1 = join({}, {}, "n1");
  const JobId filler = submit(600, 4);
  tick();
  ASSERT_TRUE(n1->take().at(0).has_launch());
  started(filler);

  v1::SubmitRequest urgent;
  *urgent.mutable_spec() = row(victim).spec;
  urgent.mutable_spec()->set_qos("debug");
  const auto urgent_id = core_->submit(kBob, urgent);
  ASSERT_TRUE(urgent_id);
  tick();
  auto sent = n0->take();
  ASSERT_EQ(sent.size(), 1u);
  ASSERT_TRUE(sent[0].has_kill());
  EXPECT_TRUE(sent[0].kill().keep_slice()) << "requeued: its slice stays";
  node_ = node0;
  ended(victim, 143, 15);
  EXPECT_EQ(row(victim).state, v1::PENDING);
  tick();
  ASSERT_TRUE(launched(n0->take())) << "the debug job";

  core_->agent_left(node0, n0.get());
  v1::RegisterRequest hello;
  hello.add_kept_slices(victim.value());
  hello.add_kept_slices(filler.value());  // not one it kept there: an older run's
  n0 = join({urgent_id->front().value()}, hello);
  EXPECT_EQ(dropped(n0->take()), std::vector<std::uint64_t>{filler.value()});

  node_ = cluster_.find("n1").value();
  ended(filler, 0);
  tick();
  EXPECT_TRUE(launched(n1->take())) << "the victim, on n1";
  EXPECT_EQ(dropped(n0->take()), std::vector<std::uint64_t>{victim.value()})
      << "its slice on n0 will not be used";

  start();
  n0 = join({urgent_id->front().value()}, hello);
  EXPECT_EQ(dropped(n0->take()), (std::vector<std::uint64_t>{victim.value(), filler.value()}))
      << "a restarted controller drops what it did not keep";
}

}  // namespace
}  // namespace loom::controller

namespace loom::controller {
namespace {

// mpi.default decides at submit how an MPI job without --mpi=MODE starts; what is stored
// is the mode, so a later change of the key leaves the job as it was.
TEST_F(CoreTest, AnMpiJobWithoutAModeGetsTheSitesDefaultAndAModeWithoutMpiIsRefused) {
  const auto submitted = [this](bool mpi, v1::MpiLaunch mode) {
    v1::SubmitRequest request;
    v1::JobSpec* s = request.mutable_spec();
    s->set_tasks(1);
    s->set_cpus_per_task(1);
    s->set_walltime_s(60);
    s->add_argv("/bin/true");
    s->set_mpi(mpi);
    s->set_mpi_launch(mode);
    return core_->submit(kAlice, request);
  };
  auto stored = [&](bool mpi, v1::MpiLaunch mode) {
    auto ids = submitted(mpi, mode);
    EXPECT_TRUE(ids) << ids.error().to_string();
    return ids ? row(ids->front()).spec.mpi_launch() : v1::MpiLaunch(-1);
  };
  join();
  EXPECT_EQ(stored(true, v1::MPI_LAUNCH_DEFAULT), v1::MPI_LAUNCH_MPIRUN);
  config_.mpi.launch = "pmix";
  start();
  join();
  EXPECT_EQ(stored(true, v1::MPI_LAUNCH_DEFAULT), v1::MPI_LAUNCH_PMIX);
  EXPECT_EQ(stored(true, v1::MPI_LAUNCH_MPIRUN), v1::MPI_LAUNCH_MPIRUN);
  EXPECT_EQ(stored(false, v1::MPI_LAUNCH_DEFAULT), v1::MPI_LAUNCH_DEFAULT);
  const auto refused = submitted(false, v1::MPI_LAUNCH_PMIX);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message(), "mpi_launch 1: --mpi takes pmix or mpirun, for an MPI job");
  EXPECT_FALSE(submitted(true, static_cast<v1::MpiLaunch>(9)));
}

}  // namespace
}  // namespace loom::controller
