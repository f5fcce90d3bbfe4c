// A fixed number of threads running posted work in order: an agent with hundreds of jobs
// has this many threads doing their blocking work (staging, teardown), not one per job.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace loom::agent {

class WorkPool {
 public:
  explicit WorkPool(std::size_t threads);
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;
  ~WorkPool() { stop(); }

  // Queued behind what is queued already; run by the first free thread.
  void post(std::function<void()> work);
  // Runs what is queued, then joins the threads; post() after it runs nothing. Work that
  // must not start once its owner stops checks the owner's flag.
  void stop();

 private:
  void serve();

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace loom::agent
