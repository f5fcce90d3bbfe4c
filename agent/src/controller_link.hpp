// The agent's one stream to the controller: a registration, then commands one way and
// reports the other. A report written while no stream is up is dropped: what matters is
// sent again at the next registration (the jobs running, those ended, those started).
//
// It knows when it last heard the controller (any message: the controller answers every
// heartbeat), for the agent's deadlines: a stream silent for the heartbeat window is
// dropped (reset()) and made again, and a long silence fences the node's --requeue jobs.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "loom/proto/agent.grpc.pb.h"

namespace loom::agent {

class ControllerLink {
 public:
  using Clock = std::chrono::steady_clock;

  ControllerLink(std::string address, std::shared_ptr<grpc::ChannelCredentials> credentials)
      : address_(std::move(address)), credentials_(std::move(credentials)) {}

  // One registration and the stream after it, until it breaks, reset() or cancel(): what
  // `greeting` returns (the hello first), then each command the controller sends, to
  // `command` (on this thread). The greeting is made once the stream takes writes, and
  // sent before any: a report written meanwhile follows it, and one written before is in it.
  grpc::Status serve(const std::function<std::vector<v1::FromAgent>()>& greeting,
                     const std::function<void(const v1::ToAgent&)>& command);
  // False when it was not sent. It may block while the network does (flow control).
  bool write(const v1::FromAgent& message);
  // Ends the stream being served (serve() returns); never blocks on a write in progress.
  void reset();
  // Ends the stream being served, and any later serve() at once.
  void cancel();

  // When the controller was last heard (the link's making, before it ever was), and how
  // long the stream being served, or being made, has gone without a word from it.
  Clock::time_point heard() const;
  Clock::duration silence() const;

  const std::string& address() const { return address_; }

 private:
  void close();

  const std::string address_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  // Guards the context, the times and cancelled_; never held during a write, so that
  // reset() and the deadlines never wait for the network.
  mutable std::mutex mutex_;
  bool cancelled_ = false;
  grpc::ClientContext* context_ = nullptr;
  Clock::time_point heard_ = Clock::now();
  Clock::time_point attempt_ = Clock::now();  // the stream's start
  // Guards stream_ and every write to it: no message may be written once Finish is called.
  std::mutex write_mutex_;
  grpc::ClientReaderWriter<v1::FromAgent, v1::ToAgent>* stream_ = nullptr;  // null: none up
};

}  // namespace loom::agent
