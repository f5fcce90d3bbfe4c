// The agent's bounded pool and its exit watcher: what replaced a thread per job.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <future>

#include "loom/agent/exit_watcher.hpp"
#include "loom/agent/nvme.hpp"
#include "loom/agent/work_pool.hpp"

namespace loom::agent {
namespace {

TEST(WorkPool, RunsEverythingPostedBeforeStopAndNothingAfter) {
  std::atomic<int> ran{0};
  WorkPool pool(2);
  for (int i = 0; i < 100; ++i) pool.post([&] { ran.fetch_add(1); });
  pool.stop();
  EXPECT_EQ(ran.load(), 100);
  pool.post([&] { ran.fetch_add(1); });
  EXPECT_EQ(ran.load(), 100);
}

TEST(WorkPool, NeverRunsMoreThanItsThreadsAtOnce) {
  std::atomic<int> running{0}, most{0};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  WorkPool pool(3);
  std::atomic<int> started{0};
  for (int i = 0; i < 6; ++i) {
    pool.post([&] {
      const int now = running.fetch_add(1) + 1;
      for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
      }
      started.fetch_add(1);
      released.wait();
      running.fetch_sub(1);
    });
  }
  while (started.load() < 3) std::this_thread::yield();
  EXPECT_EQ(started.load(), 3) << "three threads, all blocked: the rest wait their turn";
  release.set_value();
  pool.stop();
  EXPECT_EQ(started.load(), 6);
  EXPECT_EQ(most.load(), 3);
}

pid_t spawn_waiting_child(int& gate) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[1]);
    char c;
    (void)!::read(fds[0], &c, 1);  // until the parent closes its end
    ::_exit(0);
  }
  ::close(fds[0]);
  gate = fds[1];
  return pid;
}

TEST(ExitWatcher, CallsBackOnceEachProcessExitsAndNotBefore) {
  auto watcher = ExitWatcher::open();
  ASSERT_TRUE(watcher) << watcher.error().to_string();
  int gate_a = -1, gate_b = -1;
  const pid_t a = spawn_waiting_child(gate_a), b = spawn_waiting_child(gate_b);
  std::promise<pid_t> first, second;
  (*watcher)->watch(UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, a, 0))),
                    [&] { first.set_value(a); });
  (*watcher)->watch(UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, b, 0))),
                    [&] { second.set_value(b); });
  auto b_exited = second.get_future();
  ::close(gate_b);
  EXPECT_EQ(b_exited.get(), b);
  auto a_exited = first.get_future();
  EXPECT_EQ(a_exited.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  ::close(gate_a);
  EXPECT_EQ(a_exited.get(), a);
  (*watcher)->stop();
  ::waitpid(a, nullptr, 0);
  ::waitpid(b, nullptr, 0);
}

TEST(ExitWatcher, StopsWhileProcessesStillRunAndNeverCallsThem) {
  auto watcher = ExitWatcher::open();
  ASSERT_TRUE(watcher) << watcher.error().to_string();
  int gate = -1;
  const pid_t a = spawn_waiting_child(gate);
  bool called = false;
  (*watcher)->watch(UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, a, 0))),
                    [&] { called = true; });
  (*watcher)->stop();
  ::close(gate);
  ::waitpid(a, nullptr, 0);
  EXPECT_FALSE(called);
}

TEST(Nvme, ADeviceIsPathEqualsSizeAndANumaNodeMayFollow) {
  auto d = parse_nvme("/var/lib/loom/nvme0=400G:1");
  ASSERT_TRUE(d) << d.error().to_string();
  EXPECT_EQ(d->path, "/var/lib/loom/nvme0");
  EXPECT_EQ(d->capacity, 400ull << 30);
  EXPECT_EQ(d->numa, 1u);
  d = parse_nvme("/nvme=8G");
  ASSERT_TRUE(d) << d.error().to_string();
  EXPECT_FALSE(d->numa);
  EXPECT_EQ(parse_nvme("/nvme").error().message(), "expected PATH=SIZE[:NUMA]");
  EXPECT_EQ(parse_nvme("/nvme=8G:x").error().message(), "the NUMA node after ':' must be a number");
  EXPECT_EQ(parse_nvme("/nvme=8G:").error().message(), "the NUMA node after ':' must be a number");
  EXPECT_FALSE(parse_nvme("/nvme=lots"));
}

}  // namespace
}  // namespace loom::agent
