#include "controller_link.hpp"

#include <algorithm>

namespace loom::agent {

grpc::Status ControllerLink::serve(const std::function<std::vector<v1::FromAgent>()>& greeting,
                                   const std::function<void(const v1::ToAgent&)>& command) {
  auto stub = v1::AgentLink::NewStub(grpc::CreateChannel(address_, credentials_));
  grpc::ClientContext context;
  auto stream = stub->Connect(&context);
  {
    std::lock_guard lock(mutex_);
    if (cancelled_) return grpc::Status::OK;
    context_ = &context;
    attempt_ = Clock::now();
  }
  bool greeted = true;
  {
    std::lock_guard lock(write_mutex_);
    stream_ = stream.get();
    for (const v1::FromAgent& message : greeting()) greeted = greeted && stream->Write(message);
  }
  if (greeted) {
    for (v1::ToAgent received; stream->Read(&received);) {
      {
        std::lock_guard lock(mutex_);
        heard_ = Clock::now();
      }
      command(received);
    }
  }
  close();
  return stream->Finish();
}

bool ControllerLink::write(const v1::FromAgent& message) {
  std::lock_guard lock(write_mutex_);
  return stream_ != nullptr && stream_->Write(message);
}

void ControllerLink::reset() {
  std::lock_guard lock(mutex_);
  if (context_ != nullptr) context_->TryCancel();  // a write blocked on the stream returns
}

void ControllerLink::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

ControllerLink::Clock::time_point ControllerLink::heard() const {
  std::lock_guard lock(mutex_);
  return heard_;
}

ControllerLink::Clock::duration ControllerLink::silence() const {
  std::lock_guard lock(mutex_);
  return Clock::now() - std::max(heard_, attempt_);
}

void ControllerLink::close() {
  {
    std::lock_guard lock(write_mutex_);
    stream_ = nullptr;
  }
  std::lock_guard lock(mutex_);
  context_ = nullptr;
}

}  // namespace loom::agent
