#include "controller_link.hpp"

namespace loom::agent {

grpc::Status ControllerLink::serve(const std::function<std::vector<v1::FromAgent>()>& greeting,
                                   const std::function<void(const v1::ToAgent&)>& command) {
  auto stub =
      v1::AgentLink::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->Connect(&context);
  bool greeted = true;
  {
    std::lock_guard lock(mutex_);
    if (cancelled_) return grpc::Status::OK;
    context_ = &context;
    stream_ = stream.get();
    for (const v1::FromAgent& message : greeting()) greeted = greeted && stream->Write(message);
  }
  if (greeted) {
    for (v1::ToAgent received; stream->Read(&received);) command(received);
  }
  close();
  return stream->Finish();
}

bool ControllerLink::write(const v1::FromAgent& message) {
  std::lock_guard lock(mutex_);
  return stream_ != nullptr && stream_->Write(message);
}

void ControllerLink::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

void ControllerLink::close() {
  std::lock_guard lock(mutex_);  // no message may be written once Finish is called
  stream_ = nullptr;
  context_ = nullptr;
}

}  // namespace loom::agent
