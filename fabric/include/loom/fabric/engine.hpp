// The RMA transfer engine: moves bytes between a registered local region and a peer's
// region with fi_write / fi_read, split to the provider's limits, a window of operations in
// flight, completions reaped explicitly on this thread.
//
// Zero copy: the engine never touches payload; every operation it posts reads or writes
// the caller's registered memory in place (on_post lets a caller see each one).
// One engine per endpoint, used by one thread at a time; cancel() may come from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/fabric/fabric.hpp"

namespace loom::fabric {

struct EngineOptions {
  std::size_t window = 16;  // operations in flight at most
  std::size_t max_operation = std::size_t{4}
                              << 20;  // bytes per operation (the provider may lower it)
  // No completion for this long while operations are in flight: the peer is gone.
  std::chrono::milliseconds timeout{10'000};
};

struct PostedOperation {
  bool write;
  const std::byte* local;        // where in the caller's memory
  std::uint64_t remote_address;  // as passed to the provider
  std::uint64_t key;
  std::size_t length;
};

class TransferEngine {
 public:
  explicit TransferEngine(std::shared_ptr<Endpoint> endpoint, EngineOptions options = {});
  ~TransferEngine();
  TransferEngine(const TransferEngine&) = delete;
  TransferEngine& operator=(const TransferEngine&) = delete;

  // Copies local[local_offset, +length) to the peer's region at remote_offset, and back.
  // Returns when every operation has completed, on the first error (after reaping what is
  // in flight), when no completion came for the timeout, or after cancel() (kCancelled).
  // After a timeout the engine refuses further transfers: operations the provider still
  // holds own their buffers until the endpoint is closed.
  Status write(const MemoryRegion& local, std::size_t local_offset, fi_addr_t peer,
               const RemoteRegion& remote, std::size_t remote_offset, std::size_t length);
  Status read(const MemoryRegion& local, std::size_t local_offset, fi_addr_t peer,
              const RemoteRegion& remote, std::size_t remote_offset, std::size_t length);

  void cancel() { cancelled_.store(true); }
  // A transfer timed out: this engine transfers nothing more (see above).
  bool broken() const { return broken_; }
  void on_post(std::function<void(const PostedOperation&)> observer) {
    observer_ = std::move(observer);
  }

 private:
  Status transfer(bool write, const MemoryRegion& local, std::size_t local_offset, fi_addr_t peer,
                  const RemoteRegion& remote, std::size_t remote_offset, std::size_t length);
  // Reaps what has completed: how many, or -1 with *error set for a failed operation.
  int reap(Error* error);

  EngineOptions options_;
  // Each posted operation owns one context until its completion is reaped; contexts the
  // provider still holds at teardown go to the endpoint, which frees them once closed.
  std::vector<fi_context2> contexts_;
  std::vector<std::size_t> free_;
  std::size_t in_flight_ = 0;
  bool broken_ = false;
  std::atomic<bool> cancelled_{false};
  std::function<void(const PostedOperation&)> observer_;
  std::shared_ptr<Endpoint> endpoint_;
};

}  // namespace loom::fabric
