#include "agent_stream.hpp"

#include <spdlog/spdlog.h>

#include "loom/common/bytes.hpp"

namespace loom::controller {

AgentStream::AgentStream(grpc::ServerContext* context, Stream* stream, std::size_t max_bytes,
                         std::string node)
    : context_(context),
      stream_(stream),
      max_bytes_(max_bytes),
      node_(std::move(node)),
      writer_([this] { write_all(); }) {}

AgentStream::~AgentStream() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  wake_.notify_all();
  context_->TryCancel();
  writer_.join();
}

void AgentStream::send(const v1::ToAgent& message) {
  const std::size_t bytes = message.ByteSizeLong();
  std::size_t queued = 0;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    if (queued_bytes_ + bytes <= max_bytes_) {
      queue_.push_back(message);
      queued_bytes_ += bytes;
      wake_.notify_one();
      return;
    }
    closed_ = true;
    queued = queued_bytes_;
  }
  wake_.notify_one();
  context_->TryCancel();  // the agent's Connect ends; it may register again
  spdlog::warn(
      "agent {} is not reading its stream ({} queued for it, controller.agent_queue is {}); "
      "dropping it until it registers again",
      node_, format_bytes(Bytes(queued)), format_bytes(Bytes(max_bytes_)));
}

void AgentStream::write_all() {
  for (;;) {
    v1::ToAgent message;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return closed_ || !queue_.empty(); });
      if (closed_) return;
      message = std::move(queue_.front());
      queue_.pop_front();
    }
    const bool written = stream_->Write(message);  // blocks while the agent does not read
    std::lock_guard lock(mutex_);
    queued_bytes_ -= message.ByteSizeLong();
    if (!written) {
      closed_ = true;
      return;
    }
  }
}

}  // namespace loom::controller
