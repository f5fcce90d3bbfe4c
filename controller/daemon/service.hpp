// loomctld's gRPC services: the CLI's (Controller) and the agents' (AgentLink). They check
// who calls, hand the work to the core (inbox.hpp) and turn its answers into replies.
//
// Threads: gRPC's, for the calls and one per agent stream (its reader); a writer per agent
// stream (AgentStream); the core's. The calls that wait for what the core will see (Watch,
// Exec, CreateBuffer) are gRPC callback calls that the core's thread answers (Inbox::wait):
// they hold no thread while they wait.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "inbox.hpp"
#include "loom/common/config.hpp"
#include "loom/proto/agent.grpc.pb.h"
#include "loom/proto/controller.grpc.pb.h"
#include "loom/proto/tls.hpp"

namespace loom::controller {

using ControllerService =
    v1::Controller::WithCallbackMethod_Watch<v1::Controller::WithCallbackMethod_Exec<
        v1::Controller::WithCallbackMethod_CreateBuffer<v1::Controller::Service>>>;

class Service final : public ControllerService, public v1::AgentLink::Service {
 public:
  Service(Inbox& inbox, const Config& config, const tls::Tls& tls)
      : inbox_(inbox), config_(config), tls_(tls) {}

  grpc::Status Submit(grpc::ServerContext*, const v1::SubmitRequest* request,
                      v1::SubmitReply* reply) override;
  grpc::Status List(grpc::ServerContext*, const v1::ListRequest* request,
                    v1::ListReply* reply) override;
  grpc::Status Acct(grpc::ServerContext*, const v1::AcctRequest* request,
                    v1::ListReply* reply) override;
  grpc::Status Show(grpc::ServerContext*, const v1::JobRequest* request,
                    v1::JobInfo* reply) override;
  grpc::Status Cancel(grpc::ServerContext*, const v1::JobRequest* request,
                      v1::CancelReply*) override;
  grpc::ServerWriteReactor<v1::JobInfo>* Watch(grpc::CallbackServerContext* context,
                                               const v1::JobRequest* request) override;
  grpc::Status Nodes(grpc::ServerContext*, const v1::NodesRequest* request,
                     v1::NodesReply* reply) override;
  grpc::Status Drain(grpc::ServerContext*, const v1::NodeRequest* request, v1::NodeReply*) override;
  grpc::Status Resume(grpc::ServerContext*, const v1::NodeRequest* request,
                      v1::NodeReply*) override;
  grpc::ServerUnaryReactor* CreateBuffer(grpc::CallbackServerContext* context,
                                         const v1::BufferRequest* request,
                                         v1::BufferInfo* reply) override;
  grpc::Status ListBuffers(grpc::ServerContext*, const v1::BuffersRequest* request,
                           v1::BuffersReply* reply) override;
  grpc::Status DestroyBuffer(grpc::ServerContext*, const v1::BufferRequest* request,
                             v1::BufferReply*) override;
  grpc::ServerUnaryReactor* Exec(grpc::CallbackServerContext* context,
                                 const v1::ExecRequest* request, v1::ExecReply* reply) override;

  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>* stream) override;

 private:
  Result<Caller> caller(const v1::Caller& c) const;
  // A waiter's answer to its call, sent once the batch it ran in is stored; true, for the
  // waiter to return.
  bool answer(grpc::ServerUnaryReactor* reactor, grpc::Status status);
  grpc::Status serve_storage(grpc::ServerContext* context,
                             grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>* stream,
                             const v1::RegisterRequest& hello);

  Inbox& inbox_;
  const Config& config_;
  const tls::Tls& tls_;
};

}  // namespace loom::controller
