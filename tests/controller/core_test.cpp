// The controller's core on a fake clock: walltimes, heartbeats and the recovery window in
// milliseconds of real time, the agents' streams as channels that record what they are
// sent.
#include "loom/controller/core.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "file_size_limit.hpp"
#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"
#include "temp.hpp"

namespace loom::controller {
namespace {

using std::chrono::seconds;

// What the core sent one agent, and whether it dropped the stream.
class FakeChannel final : public AgentChannel {
 public:
  void send(const v1::ToAgent& message) override { sent.push_back(message); }
  void drop() override { dropped = true; }
  std::vector<v1::ToAgent> take() { return std::exchange(sent, {}); }

  std::vector<v1::ToAgent> sent;
  bool dropped = false;
};

const Caller kAlice{1001, "loom-alice", false, 1001};
const Caller kAdmin{0, "root", true, 0};
const Caller kBob{1002, "loom-bob", false, 1002};

class CoreTest : public ::testing::Test {
 protected:
  CoreTest() {
    config_.controller.kill_grace = seconds(30);
    config_.controller.heartbeat_interval = seconds(1);
    config_.controller.heartbeat_misses = 5;  // a window of 5 s
    config_.controller.requeue_after = seconds(10);
  }
  void SetUp() override { start(); }
  void TearDown() override {
    core_.reset();
    std::filesystem::remove_all(dir_);
  }
  // A controller (re)starting on the same state directory.
  void start() {
    core_.reset();
    cluster_ = sched::Cluster();
    auto store = open_sqlite_store(dir_);
    ASSERT_TRUE(store) << store.error().to_string();
    auto manager = JobManager::open(std::move(*store), cluster_, {});
    ASSERT_TRUE(manager) << manager.error().to_string();
    core_ = std::make_unique<Core>(cluster_, config_, clock_, std::move(*manager));
  }
  // n0's agent (or another node's) registers (4 cores), holding `running` (and what
  // `hello` says) from before.
  std::shared_ptr<FakeChannel> join(const std::vector<std::uint64_t>& running = {},
                                    v1::RegisterRequest hello = {},
                                    const std::string& name = "n0") {
    hello.set_name(name);
    hello.set_topology_json(
        hwtopo::to_json(hwtopo::load_synthetic("pack:1 numa:1 core:4 pu:1").value()).dump());
    for (std::uint64_t id : running) hello.add_running(id);
    auto channel = std::make_shared<FakeChannel>();
    auto node = core_->agent_joined(hello, channel);
    EXPECT_TRUE(node) << node.error().to_string();
    node_ = *node;
    EXPECT_TRUE(channel->take().front().has_registered());
    return channel;
  }
  JobId submit(std::int64_t walltime_s, std::uint32_t tasks = 1, bool requeue = false) {
    v1::SubmitRequest request;
    v1::JobSpec* s = request.mutable_spec();
    s->set_name("t");
    s->set_tasks(tasks);
    s->set_requeue(requeue);
    s->set_cpus_per_task(1);
    s->set_walltime_s(walltime_s);
    s->add_argv("/bin/true");
    auto ids = core_->submit(kAlice, request);
    EXPECT_TRUE(ids) << ids.error().to_string();
    return ids->front();
  }
  // A pass that stores what it does.
  void tick() {
    const Status status = core_->tick();
    ASSERT_TRUE(status) << status.error().to_string();
  }
  void report(const v1::FromAgent& message) { core_->agent_message(node_, message); }
  void started(JobId id) {
    v1::FromAgent message;
    message.mutable_started()->set_job(id.value());
    report(message);
  }
  void ended(JobId id, int exit_code, std::optional<int> signal = std::nullopt) {
    v1::FromAgent message;
    message.mutable_ended()->set_job(id.value());
    message.mutable_ended()->set_exit_code(exit_code);
    if (signal) message.mutable_ended()->set_signal(*signal);
    report(message);
  }
  JobRow row(JobId id) { return core_->jobs().show(kAdmin, id).value(); }
  // `left` from now: the job stands just before it and is lost just after.
  void expect_lost_after(seconds left, JobId id, const std::string& reason) {
    clock_.advance(left - seconds(1));
    tick();
    EXPECT_EQ(row(id).state, v1::RUNNING)
        << "lost before its deadline passed: " << row(id).reason.text();
    clock_.advance(seconds(2));
    tick();
    const JobRow lost = row(id);
    EXPECT_EQ(lost.state, v1::NODE_FAIL);
    EXPECT_EQ(lost.reason.text(), reason);
  }
  // A job launched on n0 and started there.
  JobId running(FakeChannel& agent, std::int64_t walltime_s = 600) {
    const JobId id = submit(walltime_s);
    tick();
    const auto sent = agent.take();
    EXPECT_EQ(sent.size(), 1u);
    EXPECT_TRUE(sent.at(0).has_launch());
    started(id);
    EXPECT_EQ(row(id).state, v1::RUNNING);
    return id;
  }

  std::filesystem::path dir_ = loom::testing::temp_path("core-state");
  Config config_;
  ManualClock clock_{sched::Time(seconds(1'000'000))};
  sched::Cluster cluster_;
  std::unique_ptr<Core> core_;
  NodeId node_;
};

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

// controller.min_job_age: an ended job leaves memory (and `loom queue --all`) after it,
// and is still found, whole, in the store: by show, by cancel, as a dependency, and by a
// controller that restarts, which loads only the jobs ended since.
TEST_F(CoreTest, AnEndedJobLeavesMemoryAfterMinJobAgeAndIsStillFoundInTheStore) {
  auto agent = join();
  const JobId id = running(*agent);
  ended(id, 3);
  auto listed = [&] {
    const std::vector<JobRow> rows = core_->jobs().list(kAlice, /*include_ended=*/true);
    return std::ranges::any_of(rows, [&](const JobRow& r) { return r.id == id; });
  };
  clock_.advance(seconds(299));
  report({});
  tick();
  EXPECT_TRUE(listed()) << "ended less than min_job_age ago";
  clock_.advance(seconds(2));
  report({});
  tick();
  EXPECT_FALSE(listed()) << "ended more than min_job_age ago";
  auto expect_found = [&] {
    const Result<JobRow> old = core_->jobs().show(kAlice, id);
    ASSERT_TRUE(old) << old.error().to_string();
    EXPECT_EQ(old->state, v1::FAILED);
    EXPECT_EQ(old->exit_code, 3);
    EXPECT_EQ(old->spec.argv(0), "/bin/true");
    EXPECT_FALSE(core_->jobs().show(kBob, id)) << "another user's job, even from the store";
  };
  expect_found();
  const Status cancelled = core_->cancel(kAlice, id, std::nullopt);
  ASSERT_FALSE(cancelled);
  EXPECT_EQ(cancelled.error().message(),
            fmt::format("job {} has already ended (FAILED)", id.value()));
  v1::SubmitRequest dependent;
  dependent.mutable_spec()->set_tasks(1);
  dependent.mutable_spec()->add_argv("/bin/true");
  v1::Dependency* d = dependent.mutable_spec()->add_dependencies();
  d->set_job(id.value());
  d->set_kind(v1::Dependency::AFTER_ANY);
  dependent.mutable_spec()->set_cpus_per_task(1);
  dependent.mutable_spec()->set_walltime_s(60);
  const auto accepted = core_->submit(kAlice, dependent);
  EXPECT_TRUE(accepted) << "a dependency on a job that left memory: "
                        << (accepted ? "" : accepted.error().to_string());
  tick();

  // A restart loads what ended within min_job_age only; the rest is in the store.
  core_.reset();
  cluster_ = sched::Cluster();
  auto manager =
      JobManager::open(open_sqlite_store(dir_).value(), cluster_, {}, {},
                       (clock_.wall() - config_.controller.min_job_age).time_since_epoch().count());
  ASSERT_TRUE(manager) << manager.error().to_string();
  core_ = std::make_unique<Core>(cluster_, config_, clock_, std::move(*manager));
  EXPECT_FALSE(listed());
  expect_found();
}

// An array whose first element has left memory: its elements are still found and cancelled
// by index, and the whole array by its id.
TEST_F(CoreTest, AnArrayWhoseFirstElementLeftMemoryIsStillCancelledByElementAndWhole) {
  auto agent = join();
  v1::SubmitRequest request;
  request.set_array_size(3);
  request.mutable_spec()->set_tasks(1);
  request.mutable_spec()->set_cpus_per_task(1);
  request.mutable_spec()->set_walltime_s(600);
  request.mutable_spec()->add_argv("/bin/true");
  const std::vector<JobId> ids = core_->submit(kAlice, request).value();
  tick();
  EXPECT_EQ(agent->take().size(), 3u) << "three launches";
  for (JobId id : ids) started(id);
  ended(ids[0], 0);
  clock_.advance(seconds(301));
  report({});
  tick();
  ASSERT_TRUE(core_->jobs().show(kAlice, ids[0]));
  auto kills = [&] {
    std::vector<std::uint64_t> killed;
    for (const v1::ToAgent& sent : agent->take()) {
      if (sent.has_kill()) killed.push_back(sent.kill().job());
    }
    return killed;
  };
  // An element named by its index is found though the array's first element left memory.
  const Result<JobRow> third = core_->jobs().show(kAlice, ids[0], 3);
  ASSERT_TRUE(third) << third.error().to_string();
  EXPECT_EQ(third->id, ids[2]);
  EXPECT_EQ(third->state, v1::RUNNING);
  const Status second = core_->cancel(kAlice, ids[0], 2);
  ASSERT_TRUE(second) << second.error().to_string();
  EXPECT_EQ(kills(), std::vector<std::uint64_t>{ids[1].value()});
  ASSERT_TRUE(core_->cancel(kAlice, ids[0], std::nullopt));
  EXPECT_EQ(kills(), (std::vector<std::uint64_t>{ids[1].value(), ids[2].value()}));
  const Status again = core_->cancel(kAlice, ids[0], 1);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message(),
            fmt::format("job {} has already ended (COMPLETED)", ids[0].value()));
}

// A controller that starts on a state it cannot write (a full disk) answers reads and says
// why, refuses every change, starts nothing, and hears its agents without taking what they
// report (an end taken would be told Forget), until a probe succeeds. Then each agent
// registers again in full, and the jobs found running are given their agents' time again
// from that moment.
TEST_F(CoreTest, AStateThatCannotBeWrittenIsReadOnlyUntilItCanBe) {
  auto agent = join();
  const JobId was_running = running(*agent);
  const JobId pending = submit(600, 4);  // more than n0 has free
  core_.reset();
  auto store = open_sqlite_store(dir_);
  ASSERT_TRUE(store);
  cluster_ = sched::Cluster();
  auto manager = JobManager::open(std::move(*store), cluster_, {});
  ASSERT_TRUE(manager);
  std::shared_ptr<FakeChannel> heard;
  {
    const loom::testing::FileSizeLimit full(0);
    core_ = std::make_unique<Core>(cluster_, config_, clock_, std::move(*manager));
    ASSERT_TRUE(core_->read_only());
    EXPECT_NE(core_->read_only()->find("the controller cannot write its state since"),
              std::string::npos)
        << *core_->read_only();
    EXPECT_NE(core_->read_only()->find(dir_.string()), std::string::npos) << "where";
    EXPECT_EQ(core_->nodes().read_only(), *core_->read_only());
    EXPECT_EQ(row(pending).state, v1::PENDING) << "reads are answered";

    v1::SubmitRequest request;
    request.mutable_spec()->set_tasks(1);
    request.mutable_spec()->add_argv("/bin/true");
    const auto submitted = core_->submit(kAlice, request);
    ASSERT_FALSE(submitted);
    EXPECT_EQ(submitted.error().code(), ErrorCode::kUnavailable);
    EXPECT_NE(submitted.error().message().find("no change is taken until it can"),
              std::string::npos)
        << submitted.error().message();
    EXPECT_FALSE(core_->cancel(kAlice, pending, std::nullopt));
    EXPECT_FALSE(core_->drain(kAdmin, "n0", "disk"));

    v1::RegisterRequest hello;
    hello.set_name("n9");
    EXPECT_FALSE(core_->agent_joined(hello, std::make_shared<FakeChannel>()))
        << "a node the state does not hold would be stored";
    hello.set_name("n0");
    hello.add_running(was_running.value());
    heard = std::make_shared<FakeChannel>();
    auto node = core_->agent_joined(hello, heard);
    ASSERT_TRUE(node) << node.error().to_string();
    node_ = *node;
    EXPECT_TRUE(heard->take().at(0).has_registered());
    v1::FromAgent beat;
    beat.mutable_heartbeat();
    report(beat);
    EXPECT_TRUE(heard->take().at(0).has_heartbeat()) << "answered: the agent does not fence";
    ended(was_running, 0);
    EXPECT_TRUE(heard->take().empty()) << "no Forget: the end could not be stored";
    EXPECT_EQ(row(was_running).state, v1::RUNNING);
    clock_.advance(seconds(20));  // past requeue_after
    tick();
    EXPECT_EQ(row(was_running).state, v1::RUNNING) << "nothing is given up while read-only";
    EXPECT_EQ(row(pending).state, v1::PENDING);
  }
  tick();
  EXPECT_FALSE(core_->read_only()) << "the probe passed";
  EXPECT_TRUE(core_->nodes().read_only().empty());
  EXPECT_TRUE(heard->dropped) << "to register again in full";
  core_->agent_left(node_, heard.get());
  clock_.advance(seconds(6));  // past the heartbeat window, not requeue_after, since then
  tick();
  EXPECT_EQ(row(was_running).state, v1::RUNNING) << "its agent has requeue_after from now";
  v1::RegisterRequest again;
  v1::JobEnded* e = again.add_ended();
  e->set_job(was_running.value());
  e->set_exit_code(0);
  join({}, again);
  EXPECT_EQ(row(was_running).state, v1::COMPLETED) << "its end, reported again, is stored";
  EXPECT_TRUE(core_->cancel(kAlice, pending, std::nullopt)) << "changes are taken";
}

TEST_F(CoreTest, ABatchSendsNothingUntilItIsStored) {
  auto agent = join();
  ASSERT_TRUE(core_->begin());
  const JobId id = submit(600);
  tick();
  EXPECT_EQ(row(id).state, v1::RUNNING);
  EXPECT_TRUE(agent->sent.empty()) << "a launch went out before the pass was stored";
  ASSERT_TRUE(core_->commit());
  const auto sent = agent->take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].launch().job(), id.value());
}

TEST_F(CoreTest, AStreamReplacedByANewerRegistrationLeavesTheNodeUp) {
  auto first = join();
  auto second = join();
  EXPECT_TRUE(first->dropped) << "the older stream is dropped";
  core_->agent_left(node_, first.get());  // its end comes after the new hello
  EXPECT_EQ(cluster_.state(node_), sched::NodeState::kUp);
  const JobId id = submit(600);
  tick();
  EXPECT_EQ(row(id).state, v1::RUNNING);
  EXPECT_TRUE(first->take().empty());
  EXPECT_EQ(second->take().size(), 1u) << "the launch goes to the live stream";
}

}  // namespace
}  // namespace loom::controller
