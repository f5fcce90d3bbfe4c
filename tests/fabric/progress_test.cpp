// The thread that owns a target endpoint, as a storage agent runs it: it runs the domain's
// other uses as calls, polls only while held, and ticks while it polls.
#include "loom/fabric/progress.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "fabric_fixture.hpp"
#include "loom/fabric/engine.hpp"

namespace loom::fabric {
namespace {

using namespace loom::fabric::testing;

class Progress : public ::testing::TestWithParam<std::string> {};

TEST_P(Progress, OnDemandItRunsCallsOnItsThreadAndLetsAPeerWriteWhileHeld) {
  auto initiator = open_endpoint(GetParam());
  auto target = open_endpoint(GetParam());
  ASSERT_TRUE(initiator && target);
  const fi_addr_t address = (*initiator)->av().insert((*target)->name()).value();

  int ticks = 0;
  std::mutex mutex;
  std::condition_variable ticked;
  ProgressThread progress(*target,
                          {.on_demand = true, .tick = std::chrono::milliseconds(1), .on_tick = [&] {
                             std::lock_guard lock(mutex);
                             ++ticks;
                             ticked.notify_all();
                           }});
  const std::thread::id thread = progress.run([] { return std::this_thread::get_id(); });
  EXPECT_NE(thread, std::this_thread::get_id());
  ASSERT_TRUE(progress.run([&] { return (*target)->av().insert((*initiator)->name()); }));

  const std::size_t bytes = std::size_t{4} << 20;
  std::vector<std::byte> local = pattern(bytes, 7);
  std::vector<std::byte> remote(bytes);
  auto local_mr =
      MemoryRegion::register_memory(**initiator, local.data(), bytes, FI_READ | FI_WRITE).value();
  // Registered on the thread that owns the target's domain, as the storage agent does.
  auto remote_mr =
      progress
          .run([&] {
            return MemoryRegion::register_memory(**target, remote.data(), bytes, FI_REMOTE_WRITE);
          })
          .value();
  progress.hold(+1);
  TransferEngine engine(*initiator, {.window = 4, .max_operation = std::size_t{1} << 20});
  ASSERT_TRUE(engine.write(*local_mr, 0, address, remote_mr->remote(), 0, bytes).has_value());
  EXPECT_EQ(std::memcmp(remote.data(), local.data(), bytes), 0);
  {
    std::unique_lock lock(mutex);
    EXPECT_TRUE(ticked.wait_for(lock, std::chrono::seconds(30), [&] { return ticks > 0; }))
        << "it ticks while it polls";
  }
  progress.hold(-1);
  progress.run([&] { remote_mr.reset(); });
}

INSTANTIATE_TEST_SUITE_P(Providers, Progress, ::testing::Values("tcp;ofi_rxm", "shm"),
                         [](const auto& info) {
                           return info.param == "shm" ? std::string("shm") : std::string("tcp_rxm");
                         });

}  // namespace
}  // namespace loom::fabric
