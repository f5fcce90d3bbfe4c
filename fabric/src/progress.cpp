#include "loom/fabric/progress.hpp"

#include <rdma/fi_errno.h>

#include <array>

namespace loom::fabric {

ProgressThread::ProgressThread(std::shared_ptr<Endpoint> endpoint)
    : endpoint_(std::move(endpoint)) {
  thread_ = std::thread([this] {
    std::array<fi_cq_entry, 16> entries{};
    while (!stop_.load(std::memory_order_relaxed)) {
      // A target posts nothing of its own: reading its queue only drives the provider.
      const ssize_t n = fi_cq_read(endpoint_->cq().get(), entries.data(), entries.size());
      if (n == -FI_EAVAIL) {
        fi_cq_err_entry err{};
        fi_cq_readerr(endpoint_->cq().get(), &err, 0);
      }
      if (n <= 0) std::this_thread::yield();
    }
  });
}

ProgressThread::~ProgressThread() {
  stop_.store(true);
  thread_.join();
}

}  // namespace loom::fabric
