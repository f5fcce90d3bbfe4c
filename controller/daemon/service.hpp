// loomctld's gRPC services: the CLI's (Controller) and the agents' (AgentLink), over one
// JobManager and Cluster, plus the scheduling loop that drives them.
//
// Threads: gRPC's, for the calls and one per agent stream (its reader); a writer per agent
// stream (AgentStream); one scheduling thread. One mutex guards the job manager, the
// cluster and the agent table; no write to an agent is made under it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "agent_stream.hpp"
#include "loom/common/config.hpp"
#include "loom/controller/job_manager.hpp"
#include "loom/proto/loom.grpc.pb.h"

namespace loom::controller {

class Service final : public v1::Controller::Service, public v1::AgentLink::Service {
 public:
  Service(sched::Cluster& cluster, const Config& config)
      : cluster_(cluster),
        config_(config),
        window_(config.controller.heartbeat_interval * config.controller.heartbeat_misses) {}

  // The job manager to serve, opened with on_change() as its observer. Jobs it found
  // running wait (until the heartbeat window has passed) for their agents to re-register.
  void serve(std::unique_ptr<JobManager> manager);
  void on_change() { changed_.notify_all(); }

  grpc::Status Submit(grpc::ServerContext*, const v1::SubmitRequest* request,
                      v1::SubmitReply* reply) override;
  grpc::Status List(grpc::ServerContext*, const v1::ListRequest* request,
                    v1::ListReply* reply) override;
  grpc::Status Show(grpc::ServerContext*, const v1::JobRequest* request,
                    v1::JobInfo* reply) override;
  grpc::Status Cancel(grpc::ServerContext*, const v1::JobRequest* request,
                      v1::CancelReply*) override;
  grpc::Status Watch(grpc::ServerContext* context, const v1::JobRequest* request,
                     grpc::ServerWriter<v1::JobInfo>* writer) override;
  grpc::Status Nodes(grpc::ServerContext*, const v1::NodesRequest* request,
                     v1::NodesReply* reply) override;
  grpc::Status Drain(grpc::ServerContext*, const v1::NodeRequest* request, v1::NodeReply*) override;
  grpc::Status Resume(grpc::ServerContext*, const v1::NodeRequest* request,
                      v1::NodeReply*) override;
  grpc::Status CreateBuffer(grpc::ServerContext*, const v1::BufferRequest* request,
                            v1::BufferInfo* reply) override;
  grpc::Status ListBuffers(grpc::ServerContext*, const v1::BuffersRequest* request,
                           v1::BuffersReply* reply) override;
  grpc::Status DestroyBuffer(grpc::ServerContext*, const v1::BufferRequest* request,
                             v1::BufferReply*) override;
  grpc::Status Exec(grpc::ServerContext* context, const v1::ExecRequest* request,
                    v1::ExecReply* reply) override;

  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>* stream) override;

  // Scheduling passes, on every event and at least once a second (walltimes), until stop().
  // Returns false when a pass could not be stored: the controller must stop.
  bool run_scheduler();
  void stop();

 private:
  using Clock = std::chrono::steady_clock;
  struct Agent {
    NodeId node;
    grpc::ServerContext* context = nullptr;
    std::unique_ptr<AgentStream> out;  // what the controller sends it; reset as Connect ends
    Clock::time_point heard;           // its last message
  };
  struct RunningJob {
    std::set<NodeId> pending;  // nodes whose processes have not ended yet
    std::set<NodeId> nodes;    // all of them: each is told to Forget the job once its end is stored
    std::set<NodeId>
        started;  // nodes whose ranks have started (a job staging in runs once all have)
    std::set<NodeId> daemons;  // nodes where Open MPI's daemon was started (Exec)
    bool failed = false;
    Ending ending;
  };

  Result<Caller> caller(const v1::Caller& c) const;
  // What a (re-)registering agent holds: jobs running, ends not acknowledged.
  void reconcile(NodeId node, const v1::RegisterRequest& hello);
  // Unknown jobs that every node has now reported are adopted; after the recovery window,
  // the rest are lost. Nodes silent or gone past the window fail their jobs.
  void check_nodes();
  void adopt_ready();
  void lose(JobId id, const std::string& reason);
  void forget(JobId id, const std::set<NodeId>& nodes);
  void send(NodeId node, const v1::ToAgent& message);
  void send_launch(const Launch& launch);
  void send_kill(JobId id, std::chrono::seconds grace);
  void node_started(NodeId node, const v1::JobStarted& started);
  v1::BufferInfo buffer_info(const BufferRow& row) const;
  // Has the buffer's node make (or destroy) it.
  void send_buffer(const BufferRow& row, bool destroy);
  // A storage agent's stream: it runs no jobs; it is known (by name, with its data address)
  // while its stream lasts.
  grpc::Status serve_storage(grpc::ServerContext* context,
                             grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>* stream,
                             const v1::RegisterRequest& hello);
  void node_ended(NodeId node, const v1::JobEnded& ended);
  // An MPI job over several nodes: its first node, where mpirun runs and whose status is
  // the job's (the first failing rank's, as mpirun reports it).
  std::optional<NodeId> mpirun_node(JobId id) const;
  // Whether `node` may start Open MPI's daemon for the job now: an error naming why not,
  // or nullopt while the job is still staging in (the caller waits).
  Result<std::optional<NodeId>> daemon_node(const Caller& who, JobId id,
                                            const std::string& node) const;

  sched::Cluster& cluster_;
  const Config& config_;
  std::unique_ptr<JobManager> manager_;
  std::mutex mutex_;
  std::condition_variable wake_;     // the scheduler: something to schedule
  std::condition_variable changed_;  // watchers: a job changed
  std::atomic<bool> stopping_{false};
  std::map<NodeId, std::shared_ptr<Agent>> agents_;
  std::map<NodeId, Clock::time_point> gone_;       // nodes whose agent left, and since when
  std::map<std::string, std::string> storage_;     // storage agents connected: name -> data address
  std::map<std::string, v1::CgroupInfo> cgroups_;  // how each agent last said it confines jobs
  std::map<std::string, std::string>
      buffers_made_;  // buffers the agents report made: name -> error ("" made)
  std::map<JobId, RunningJob> running_;
  // Starts and ends reported for unknown jobs, kept until they are adopted; and the nodes
  // whose agents did not know an unknown job at all (its launch never reached them).
  std::map<JobId, std::set<NodeId>> early_starts_;
  std::map<JobId, std::map<NodeId, v1::JobEnded>> early_ends_;
  std::map<JobId, std::set<NodeId>> never_launched_;
  std::map<std::pair<JobId, NodeId>, v1::JobEnded> daemon_ends_;  // for Exec calls waiting on them
  const Clock::duration window_;  // heartbeat_interval x heartbeat_misses
  Clock::time_point recovery_until_;
};

}  // namespace loom::controller
