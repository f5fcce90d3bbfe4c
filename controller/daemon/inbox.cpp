#include "inbox.hpp"

namespace loom::controller {

void Inbox::post(std::move_only_function<void(Core&)> event) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
  }
  wake_.notify_one();
}

void Inbox::wait(Waiter waiter) {
  post([this, waiter = std::move(waiter)](Core& core) mutable {
    if (!waiter(core, waiting_stopped_)) waiters_.push_back(std::move(waiter));
  });
}

void Inbox::stop_waiting() {
  call([this](Core& core) {
    waiting_stopped_ = true;  // and a call that comes later is answered at once
    for (Waiter& waiter : waiters_) waiter(core, true);
    waiters_.clear();
  });
}

void Inbox::run(Core& core, const std::function<void(const Error&, bool fatal)>& failed) {
  using Clock = std::chrono::steady_clock;
  bool passes = true;
  Clock::time_point next_pass = Clock::now();
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // A batch at a time: a stream of events cannot hold passes off for longer than one.
    std::deque<std::move_only_function<void(Core&)>> batch;
    batch.swap(events_);
    lock.unlock();
    if (Status begun = core.begin(); !begun) {
      failed(begun.error(), true);
      return;
    }
    for (auto& event : batch) event(core);
    bool ticked = false;
    if (passes && (core.wants_pass() || Clock::now() >= next_pass)) {
      if (Status status = core.tick(); !status) {
        passes = false;
        failed(status.error(), false);
      }
      next_pass = Clock::now() + core.tick_interval();
      ticked = true;
    }
    // Waiters look again when something changed, and at each pass (their deadlines, their
    // callers gone).
    if (std::exchange(changed_, false) || ticked) {
      std::erase_if(waiters_, [&core](Waiter& waiter) { return waiter(core, false); });
    }
    if (Status stored = core.commit(); !stored) {
      failed(stored.error(), true);
      return;
    }
    for (auto& reply : std::exchange(replies_, {})) reply();
    lock.lock();
    const auto woken = [this] { return stopping_ || !events_.empty(); };
    if (passes) {
      wake_.wait_until(lock, next_pass, woken);
    } else {
      wake_.wait(lock, woken);
    }
  }
}

void Inbox::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
}

}  // namespace loom::controller
