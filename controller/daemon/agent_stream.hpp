// The controller's side of one agent's stream, written by a thread of its own.
//
// gRPC allows one writer at a time on a stream, and a Write blocks while the agent does not
// read (its TCP window full: a hung agent, a saturated link). Written under the lock that
// every RPC and the scheduler took, one such agent stalled the whole controller. Here
// messages queue for the writer instead, up to a bound; past it the agent is dropped (its
// stream cancelled), as a node that stopped listening is, and it comes back by registering
// again, its jobs reconciled then.
#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "loom/controller/core.hpp"
#include "loom/proto/agent.grpc.pb.h"

namespace loom::controller {

class AgentStream final : public AgentChannel {
 public:
  using Stream = grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>;
  // max_bytes: the most the queue may hold (controller.agent_queue); node names the agent
  // in the log line that says it was dropped.
  AgentStream(grpc::ServerContext* context, Stream* stream, std::size_t max_bytes,
              std::string node);
  AgentStream(const AgentStream&) = delete;
  AgentStream& operator=(const AgentStream&) = delete;
  // Cancels the stream (a Write in progress returns) and joins the writer: the stream is
  // gRPC's only until the call that carries it returns.
  ~AgentStream() override;

  // Queues the message for the writer. Once the queue would pass its bound the stream is
  // cancelled, which is logged, and what is sent after that (or after a failed write: the
  // agent is gone) is dropped: its Connect is ending.
  void send(const v1::ToAgent& message) override;
  // Ends the stream: the agent's Connect returns, and it may register again.
  void drop() override { context_->TryCancel(); }

 private:
  void write_all();

  grpc::ServerContext* context_;
  Stream* stream_;
  const std::size_t max_bytes_;
  const std::string node_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<v1::ToAgent> queue_;
  std::size_t queued_bytes_ = 0;
  bool closed_ = false;  // cancelled, or a write failed: nothing more is written
  std::thread writer_;   // last: started once the members above exist
};

}  // namespace loom::controller
