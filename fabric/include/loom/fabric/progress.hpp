// Drives a target endpoint's progress on a thread of its own. Under FI_PROGRESS_MANUAL
// (tcp;ofi_rxm, shm) a peer's fi_write or fi_read into this endpoint's memory advances only
// while someone polls this endpoint's completion queue; a storage agent exporting data, or
// a benchmark server, runs one of these for as long as its regions are exposed.
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "loom/fabric/fabric.hpp"

namespace loom::fabric {

class ProgressThread {
 public:
  // The endpoint's domain must be used by no other thread meanwhile (FI_THREAD_DOMAIN).
  explicit ProgressThread(std::shared_ptr<Endpoint> endpoint);
  ~ProgressThread();  // stops and joins
  ProgressThread(const ProgressThread&) = delete;
  ProgressThread& operator=(const ProgressThread&) = delete;

 private:
  std::shared_ptr<Endpoint> endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace loom::fabric
