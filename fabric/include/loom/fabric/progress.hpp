// The one thread that owns a target endpoint and drives its progress. Under
// FI_PROGRESS_MANUAL (tcp;ofi_rxm, shm) a peer's fi_write or fi_read into this endpoint's
// memory advances only while someone polls this endpoint's completion queue; a storage
// agent exporting data, or a benchmark server, runs one of these for as long as its regions
// are exposed. Under FI_THREAD_DOMAIN nothing else may use the domain meanwhile, so every
// other use of it (inserting addresses, registering and closing regions) is a call this
// thread runs (`run`).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>

#include "loom/fabric/fabric.hpp"

namespace loom::fabric {

struct ProgressOptions {
  // Poll only while held (hold(+1) ... hold(-1)), and sleep otherwise until a call or a
  // hold: a storage agent with no lease out spends no CPU. Else it polls from start to end.
  bool on_demand = false;
  // Run on the thread every `tick` while it polls (a storage agent takes back expired
  // leases there, so that their keys die on time).
  std::chrono::milliseconds tick{0};
  std::function<void()> on_tick;
};

class ProgressThread {
 public:
  explicit ProgressThread(std::shared_ptr<Endpoint> endpoint, ProgressOptions options = {});
  ~ProgressThread();  // runs the calls already posted, stops and joins
  ProgressThread(const ProgressThread&) = delete;
  ProgressThread& operator=(const ProgressThread&) = delete;

  // Runs `call` on the thread, between polls, and returns what it returns. Not from the
  // thread itself (a call or on_tick), which would wait on itself.
  template <typename F>
  std::invoke_result_t<F> run(F call) {
    std::packaged_task<std::invoke_result_t<F>()> task(std::move(call));
    auto result = task.get_future();
    post([&task] { task(); });
    return result.get();
  }

  // Asks for polling (+1) or gives that up (-1); counted. Any thread, the thread included.
  void hold(int delta);

 private:
  void post(std::function<void()> call);
  void loop();

  std::shared_ptr<Endpoint> endpoint_;
  ProgressOptions options_;
  std::mutex mutex_;  // guards the three below
  std::condition_variable wake_;
  std::deque<std::function<void()>> calls_;
  int holds_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace loom::fabric
