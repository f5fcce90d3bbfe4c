// The core and its state: ended jobs leaving memory, a state that cannot be written, and
// batches stored before they are acted on.
#include "core_fixture.hpp"
#include "file_size_limit.hpp"

namespace loom::controller {
namespace {

using std::chrono::seconds;

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
      JobManager::open(open_sqlite_store(dir_).value(), cluster_, {}, clock_.wall(), {},
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
  auto manager = JobManager::open(std::move(*store), cluster_, {}, clock_.wall());
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
