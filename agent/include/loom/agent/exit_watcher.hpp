// One thread that waits for many processes to exit, each through its pidfd, and calls back
// for each: the agent watches every task's keeper without a thread per job.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "loom/common/error.hpp"
#include "loom/common/unique_fd.hpp"

namespace loom::agent {

class ExitWatcher {
 public:
  static Result<std::unique_ptr<ExitWatcher>> open();
  ExitWatcher(const ExitWatcher&) = delete;
  ExitWatcher& operator=(const ExitWatcher&) = delete;
  ~ExitWatcher() { stop(); }

  // Calls `exited` once the process of `pidfd` has exited, on the watcher's thread: it
  // must not block (it posts the work that follows).
  void watch(UniqueFd pidfd, std::function<void()> exited);
  // Joins the thread; what has not exited yet is no longer watched, and never called back.
  void stop();

 private:
  ExitWatcher(UniqueFd epoll, UniqueFd wake);
  void serve();

  UniqueFd epoll_, wake_;  // wake_: an eventfd, written by stop()
  std::mutex mutex_;       // guards watched_
  std::map<int, std::pair<UniqueFd, std::function<void()>>> watched_;  // by pidfd
  std::thread thread_;
};

}  // namespace loom::agent
