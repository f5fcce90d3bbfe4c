#include "loom/fabric/progress.hpp"

#include <rdma/fi_errno.h>

#include <array>

namespace loom::fabric {

ProgressThread::ProgressThread(std::shared_ptr<Endpoint> endpoint, ProgressOptions options)
    : endpoint_(std::move(endpoint)),
      options_(std::move(options)),
      holds_(options_.on_demand ? 0 : 1),
      thread_([this] { loop(); }) {}

ProgressThread::~ProgressThread() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void ProgressThread::hold(int delta) {
  {
    std::lock_guard lock(mutex_);
    holds_ += delta;
  }
  wake_.notify_all();
}

void ProgressThread::post(std::function<void()> call) {
  {
    std::lock_guard lock(mutex_);
    calls_.push_back(std::move(call));
  }
  wake_.notify_all();
}

void ProgressThread::loop() {
  using Clock = std::chrono::steady_clock;
  std::array<fi_cq_entry, 16> entries{};
  auto next_tick = Clock::now() + options_.tick;
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || holds_ > 0 || !calls_.empty(); });
    while (!calls_.empty()) {
      std::function<void()> call = std::move(calls_.front());
      calls_.pop_front();
      lock.unlock();
      call();
      lock.lock();
    }
    if (stop_) return;
    if (holds_ == 0) continue;
    lock.unlock();
    // A target posts nothing of its own: reading its queue only drives the provider.
    const ssize_t n = fi_cq_read(endpoint_->cq().get(), entries.data(), entries.size());
    if (n == -FI_EAVAIL) {
      fi_cq_err_entry err{};
      fi_cq_readerr(endpoint_->cq().get(), &err, 0);
    }
    if (n <= 0) std::this_thread::yield();
    if (options_.on_tick && Clock::now() >= next_tick) {
      options_.on_tick();
      next_tick = Clock::now() + options_.tick;
    }
    lock.lock();
  }
}

}  // namespace loom::fabric
