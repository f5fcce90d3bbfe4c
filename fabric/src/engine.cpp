#include "loom/fabric/engine.hpp"

#include <fmt/format.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <optional>

namespace loom::fabric {

using Clock = std::chrono::steady_clock;

TransferEngine::TransferEngine(std::shared_ptr<Endpoint> endpoint, EngineOptions options)
    : options_(options),
      contexts_(std::max<std::size_t>(1, options.window)),
      endpoint_(std::move(endpoint)) {
  options_.window = contexts_.size();
  options_.max_operation = std::max<std::size_t>(
      1, std::min(options_.max_operation, endpoint_->domain()->max_message()));
  for (std::size_t i = contexts_.size(); i-- > 0;) free_.push_back(i);
}

TransferEngine::~TransferEngine() {
  if (in_flight_ == 0) return;
  // The provider still holds operations and may write into their contexts: cancel them and
  // reap for a bounded time; what is left stays allocated until the endpoint is closed.
  for (std::size_t i = 0; i < contexts_.size(); ++i) {
    if (std::ranges::find(free_, i) == free_.end())
      fi_cancel(&endpoint_->get()->fid, &contexts_[i]);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(1);
  while (in_flight_ > 0 && Clock::now() < deadline) {
    Error ignored(ErrorCode::kCancelled, "");
    reap(&ignored);
  }
  if (in_flight_ > 0) {
    spdlog::warn(
        "fabric: {} operations still held by the provider at teardown; their contexts live until "
        "the endpoint closes",
        in_flight_);
    endpoint_->keep_until_closed(std::move(contexts_));
  }
}

int TransferEngine::reap(Error* error) {
  std::array<fi_cq_entry, 16> entries{};
  const ssize_t n = fi_cq_read(endpoint_->cq().get(), entries.data(), entries.size());
  if (n > 0) {
    for (ssize_t i = 0; i < n; ++i) {
      free_.push_back(static_cast<std::size_t>(
          static_cast<fi_context2*>(entries[static_cast<std::size_t>(i)].op_context) -
          contexts_.data()));
      --in_flight_;
    }
    return static_cast<int>(n);
  }
  if (n == -FI_EAGAIN) return 0;
  if (n == -FI_EAVAIL) {
    fi_cq_err_entry err{};
    if (fi_cq_readerr(endpoint_->cq().get(), &err, 0) == 1) {
      if (err.op_context != nullptr) {
        free_.push_back(
            static_cast<std::size_t>(static_cast<fi_context2*>(err.op_context) - contexts_.data()));
        --in_flight_;
      }
      const char* detail =
          fi_cq_strerror(endpoint_->cq().get(), err.prov_errno, err.err_data, nullptr, 0);
      *error = fi_error("RMA completion", err.err);
      if (detail != nullptr && *detail != '\0')
        *error = Error(error->code(), fmt::format("{} ({})", error->message(), detail));
      return -1;
    }
    return 0;
  }
  *error = fi_error("fi_cq_read", static_cast<int>(n));
  return -1;
}

Status TransferEngine::transfer(bool write, const MemoryRegion& local, std::size_t local_offset,
                                fi_addr_t peer, const RemoteRegion& remote,
                                std::size_t remote_offset, std::size_t length) {
  const char* op = write ? "fi_write" : "fi_read";
  if (broken_) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "the transfer engine timed out before: close its endpoint and open another");
  }
  if (local_offset > local.length() || length > local.length() - local_offset) {
    return make_error(ErrorCode::kOutOfRange,
                      fmt::format("{}: {} bytes at offset {} overrun the local region of {} bytes",
                                  op, length, local_offset, local.length()));
  }
  if (remote_offset > remote.length || length > remote.length - remote_offset) {
    return make_error(ErrorCode::kOutOfRange,
                      fmt::format("{}: {} bytes at offset {} overrun the remote region of {} bytes",
                                  op, length, remote_offset, remote.length));
  }
  cancelled_.store(false);
  std::optional<Error> failure;
  std::size_t done = 0;
  auto last_progress = Clock::now();
  while ((done < length && !failure) || in_flight_ > 0) {
    if (!failure && cancelled_.load())
      failure = Error(ErrorCode::kCancelled, fmt::format("{}: cancelled", op));
    while (!failure && done < length && !free_.empty()) {
      const std::size_t chunk = std::min(options_.max_operation, length - done);
      const std::size_t slot = free_.back();
      std::byte* buffer = local.data() + local_offset + done;
      const std::uint64_t address = remote.address + remote_offset + done;
      const ssize_t rc = write ? fi_write(endpoint_->get(), buffer, chunk, local.descriptor(), peer,
                                          address, remote.key, &contexts_[slot])
                               : fi_read(endpoint_->get(), buffer, chunk, local.descriptor(), peer,
                                         address, remote.key, &contexts_[slot]);
      if (rc == -FI_EAGAIN) break;  // the provider's queues are full: make progress first
      if (rc != 0) {
        failure = fi_error(op, static_cast<int>(rc));
        break;
      }
      free_.pop_back();
      ++in_flight_;
      if (observer_) observer_({write, buffer, address, remote.key, chunk});
      done += chunk;
    }
    Error error(ErrorCode::kUnknown, "");
    const int reaped = reap(&error);
    if (reaped < 0) {
      if (!failure) failure = std::move(error);
      last_progress = Clock::now();
    } else if (reaped > 0) {
      last_progress = Clock::now();
    } else if (Clock::now() - last_progress > options_.timeout) {
      broken_ = true;
      return make_error(
          ErrorCode::kDeadlineExceeded,
          fmt::format("{}: no completion for {} ms with {} operations in flight: the peer is gone",
                      op, options_.timeout.count(), in_flight_));
    }
  }
  if (failure) return std::unexpected(std::move(*failure));
  return {};
}

Status TransferEngine::write(const MemoryRegion& local, std::size_t local_offset, fi_addr_t peer,
                             const RemoteRegion& remote, std::size_t remote_offset,
                             std::size_t length) {
  return transfer(true, local, local_offset, peer, remote, remote_offset, length);
}

Status TransferEngine::read(const MemoryRegion& local, std::size_t local_offset, fi_addr_t peer,
                            const RemoteRegion& remote, std::size_t remote_offset,
                            std::size_t length) {
  return transfer(false, local, local_offset, peer, remote, remote_offset, length);
}

}  // namespace loom::fabric
