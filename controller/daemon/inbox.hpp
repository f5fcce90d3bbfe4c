// The controller core's thread: gRPC's threads hand the core events (a call's work, an
// agent's message) and the core runs them one at a time, in the order they came; after
// each batch of events, a scheduling pass when one of them asked for it, and one at least
// every Core::tick_interval() (walltimes, heartbeats). Nothing holds a lock while the core
// works or while anything is written to the network.
//
// Group commit: a batch (its events, its pass, its waiters) is stored as one transaction,
// one fsync, however many events it holds; what it sends the agents and what it answers
// the calls go out only once it is stored. Under load a batch is what came while the last
// one was being stored, so the fsyncs per event fall as the load rises.
//
// Calls that wait for something the core will see (Watch, Exec for an Open MPI daemon's
// life, CreateBuffer for a node's mkfs) park no thread: each leaves a waiter, which the
// core's thread runs after each batch in which something changed and after each pass,
// until the waiter has answered its call.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <list>
#include <mutex>
#include <type_traits>
#include <vector>

#include "loom/controller/core.hpp"

namespace loom::controller {

class Inbox {
 public:
  // Returns true once it has answered its call. With `stopping` (once, as the daemon
  // stops) it must answer.
  using Waiter = std::move_only_function<bool(Core&, bool stopping)>;

  // Runs `event` on the core's thread, later.
  void post(std::move_only_function<void(Core&)> event);
  // Runs `event` on the core's thread and returns what it returned.
  template <class F>
  std::invoke_result_t<F&, Core&> call(F event) {
    using R = std::invoke_result_t<F&, Core&>;
    std::promise<R> promise;
    auto result = promise.get_future();
    post([this, event = std::move(event), promise = std::move(promise)](Core& core) mutable {
      if constexpr (std::is_void_v<R>) {
        event(core);
        after_commit([promise = std::move(promise)]() mutable { promise.set_value(); });
      } else {
        after_commit([promise = std::move(promise), value = event(core)]() mutable {
          promise.set_value(std::move(value));
        });
      }
    });
    return result.get();
  }
  // On the core's thread: `reply` runs once the batch being run is stored (a waiter's
  // answer to its call).
  void after_commit(std::move_only_function<void()> reply) { replies_.push_back(std::move(reply)); }
  // Runs `waiter` on the core's thread at once, and again after changes and passes until
  // it returns true.
  void wait(Waiter waiter);
  // Something a waiter may look at changed (the core's and the job manager's observer;
  // called on the core's thread).
  void changed() { changed_ = true; }

  // Runs events, passes and waiters until stop(). A pass that cannot be stored goes to
  // `failed` (not fatal), once, and no pass runs after it; events still do, so that the
  // calls in flight are answered while the daemon stops. A batch that cannot be stored goes
  // to `failed` (fatal) and run() returns: nothing of it may be answered, and the state
  // in memory is ahead of the store's, so the process must end there.
  void run(Core& core, const std::function<void(const Error&, bool fatal)>& failed);
  // Every waiter answers its call (the controller is stopping); before the gRPC server
  // shuts down, which waits for every call's answer.
  void stop_waiting();
  // Once nothing posts any more (the gRPC server has shut down).
  void stop();

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::move_only_function<void(Core&)>> events_;
  bool stopping_ = false;
  // The core thread's own.
  std::list<Waiter> waiters_;
  bool changed_ = false;
  bool waiting_stopped_ = false;
  std::vector<std::move_only_function<void()>> replies_;  // the batch's, once stored
};

}  // namespace loom::controller
