// The controller core's inbox with real threads: calls from many threads run one at a time
// on the core's thread and are answered once stored; a waiter answers when what it waits for
// changes. Under the tsan preset (scripts/lint.sh) it is the inbox's race check.
#include "inbox.hpp"

#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"
#include "temp.hpp"

namespace loom::controller {
namespace {

const Caller kAlice{1001, "loom-alice", false, 1001};

class SystemClockForTest final : public Clock {
 public:
  sched::Time wall() const override {
    return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
  }
  Steady steady() const override { return std::chrono::steady_clock::now(); }
};

class NullChannel final : public AgentChannel {
 public:
  void send(const v1::ToAgent&) override {}
  void drop() override {}
};

class InboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = open_sqlite_store(dir_);
    ASSERT_TRUE(store) << store.error().to_string();
    auto manager = JobManager::open(std::move(*store), cluster_, {}, clock_.wall(),
                                    [this] { inbox_.changed(); });
    ASSERT_TRUE(manager) << manager.error().to_string();
    core_ = std::make_unique<Core>(cluster_, config_, clock_, std::move(*manager),
                                   [this] { inbox_.changed(); });
    // One node, so that jobs are taken; joined before the core's thread starts.
    v1::RegisterRequest hello;
    hello.set_name("n0");
    hello.set_topology_json(
        hwtopo::to_json(hwtopo::load_synthetic("pack:1 numa:1 core:4 pu:1").value()).dump());
    ASSERT_TRUE(core_->agent_joined(hello, std::make_shared<NullChannel>()));
    runner_ = std::thread([this] {
      inbox_.run(*core_, [](const Error& e, bool) { ADD_FAILURE() << e.to_string(); });
    });
  }
  void TearDown() override {
    inbox_.stop_waiting();
    inbox_.stop();
    runner_.join();
    core_.reset();
    std::filesystem::remove_all(dir_);
  }
  static v1::SubmitRequest request() {
    v1::SubmitRequest r;
    r.mutable_spec()->set_tasks(1);
    r.mutable_spec()->set_cpus_per_task(1);
    r.mutable_spec()->set_walltime_s(60);
    r.mutable_spec()->add_argv("/bin/true");
    return r;
  }

  std::filesystem::path dir_ = loom::testing::temp_path("inbox");
  sched::Cluster cluster_;
  Config config_;
  SystemClockForTest clock_;
  std::unique_ptr<Core> core_;
  Inbox inbox_;
  std::thread runner_;
};

TEST_F(InboxTest, CallsFromManyThreadsAreEachAnsweredOnceStored) {
  constexpr int kThreads = 4, kEach = 50;
  std::vector<std::vector<JobId>> ids(kThreads);
  std::vector<std::thread> callers;
  callers.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto submitted = inbox_.call([](Core& core) { return core.submit(kAlice, request()); });
        ASSERT_TRUE(submitted) << submitted.error().to_string();
        ids[t].push_back(submitted->front());
      }
    });
  }
  for (std::thread& t : callers) t.join();
  std::set<JobId> all;
  for (const auto& mine : ids) all.insert(mine.begin(), mine.end());
  EXPECT_EQ(all.size(), std::size_t{kThreads} * kEach) << "every call got its own job";
  const std::size_t listed =
      inbox_.call([](Core& core) { return core.jobs().list(kAlice, true).size(); });
  EXPECT_EQ(listed, all.size());
}

TEST_F(InboxTest, AWaiterAnswersWhenWhatItWaitsForChanges) {
  std::promise<std::size_t> answered;
  auto answer = answered.get_future();
  inbox_.wait([&answered](Core& core, bool stopping) {
    const std::size_t jobs = core.jobs().list(kAlice, true).size();
    if (jobs == 0 && !stopping) return false;  // nothing yet: it waits, holding no thread
    answered.set_value(jobs);
    return true;
  });
  EXPECT_EQ(answer.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  ASSERT_TRUE(inbox_.call([](Core& core) { return core.submit(kAlice, request()); }));
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "the waiter was not run again after the change";
  EXPECT_EQ(answer.get(), 1u);
}

}  // namespace
}  // namespace loom::controller
