// The agent's one stream to the controller: a registration, then commands one way and
// reports the other. A report written while no stream is up is dropped: what matters is
// sent again at the next registration (the jobs running, those ended, those started).
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "loom/proto/agent.grpc.pb.h"

namespace loom::agent {

class ControllerLink {
 public:
  explicit ControllerLink(std::string address) : address_(std::move(address)) {}

  // One registration and the stream after it, until it breaks or cancel(): what `greeting`
  // returns (the hello first), then each command the controller sends, to `command` (on
  // this thread). The greeting is made once the stream takes writes, and sent before any:
  // a report written meanwhile follows it, and one written before is in it.
  grpc::Status serve(const std::function<std::vector<v1::FromAgent>()>& greeting,
                     const std::function<void(const v1::ToAgent&)>& command);
  // False when it was not sent.
  bool write(const v1::FromAgent& message);
  // Ends the stream being served, and any later serve() at once.
  void cancel();

  const std::string& address() const { return address_; }

 private:
  void close();

  const std::string address_;
  std::mutex mutex_;  // guards the pointers and writes to the stream
  bool cancelled_ = false;
  grpc::ClientContext* context_ = nullptr;
  grpc::ClientReaderWriter<v1::FromAgent, v1::ToAgent>* stream_ = nullptr;  // null: none up
};

}  // namespace loom::agent
