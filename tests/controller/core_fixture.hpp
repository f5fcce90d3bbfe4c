// CoreTest: the controller's core on a fake clock, over a real SQLite store in a temporary
// directory; the agents' streams as channels that record what they are sent.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "loom/controller/core.hpp"
#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"
#include "temp.hpp"

namespace loom::controller {

// What the core sent one agent, and whether it dropped the stream.
class FakeChannel final : public AgentChannel {
 public:
  void send(const v1::ToAgent& message) override { sent.push_back(message); }
  void drop() override { dropped = true; }
  std::vector<v1::ToAgent> take() { return std::exchange(sent, {}); }

  std::vector<v1::ToAgent> sent;
  bool dropped = false;
};

inline const Caller kAlice{1001, "loom-alice", false, 1001};
inline const Caller kAdmin{0, "root", true, 0};
inline const Caller kBob{1002, "loom-bob", false, 1002};

class CoreTest : public ::testing::Test {
 protected:
  CoreTest() {
    config_.controller.kill_grace = std::chrono::seconds(30);
    config_.controller.heartbeat_interval = std::chrono::seconds(1);
    config_.controller.heartbeat_misses = 5;  // a window of 5 s
    config_.controller.requeue_after = std::chrono::seconds(10);
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
    sched::SchedulerOptions options;
    options.qos = qos_;
    auto manager = JobManager::open(std::move(*store), cluster_, std::move(options), clock_.wall());
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
    // What the registration sent besides Registered (a reconciliation's) stays to be taken.
    EXPECT_EQ(std::erase_if(channel->sent, [](const v1::ToAgent& m) { return m.has_registered(); }),
              1u);
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
  void expect_lost_after(std::chrono::seconds left, JobId id, const std::string& reason) {
    clock_.advance(left - std::chrono::seconds(1));
    tick();
    EXPECT_EQ(row(id).state, v1::RUNNING)
        << "lost before its deadline passed: " << row(id).reason.text();
    clock_.advance(std::chrono::seconds(2));
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
  ManualClock clock_{sched::Time(std::chrono::seconds(1'000'000))};
  sched::Cluster cluster_;
  std::unique_ptr<Core> core_;
  NodeId node_;
  std::vector<Config::Qos> qos_;  // the scheduler's, from the next start()
};

}  // namespace loom::controller
