// loomctld: the controller. Serves the CLI and the agents over gRPC, keeps the state in the
// store, and drives the scheduler on events (a submission, a job's end, an agent joining)
// and at the next walltime deadline.
//
// Threads: gRPC's, for the calls and one per agent stream; one scheduling thread. One mutex
// guards the job manager, the cluster and the agent table; writes to an agent's stream
// take that agent's own lock.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <condition_variable>
#include <csignal>
#include <map>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>

#include "loom/common/config.hpp"
#include "loom/common/munge.hpp"
#include "loom/controller/job_manager.hpp"
#include "loom/hwtopo/json.hpp"
#include "loom/proto/loom.grpc.pb.h"

namespace {

using namespace loom;
using Clock = std::chrono::system_clock;

sched::Time now() { return std::chrono::time_point_cast<std::chrono::seconds>(Clock::now()); }

grpc::Status to_grpc(const Error& e) {
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  switch (e.code()) {
    case ErrorCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case ErrorCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case ErrorCode::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case ErrorCode::kPermissionDenied: code = grpc::StatusCode::PERMISSION_DENIED; break;
    case ErrorCode::kUnauthenticated: code = grpc::StatusCode::UNAUTHENTICATED; break;
    case ErrorCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    default: code = grpc::StatusCode::INTERNAL; break;
  }
  return {code, e.to_string()};
}

class Controller final : public v1::Controller::Service, public v1::AgentLink::Service {
 public:
  Controller(std::unique_ptr<controller::JobManager>& manager, sched::Cluster& cluster, std::string admin_group)
      : manager_(manager), cluster_(cluster), admin_group_(std::move(admin_group)) {}

  // ---- CLI ----
  grpc::Status Submit(grpc::ServerContext*, const v1::SubmitRequest* request, v1::SubmitReply* reply) override {
    auto who = caller(request->caller());
    if (!who) return to_grpc(who.error());
    std::lock_guard lock(mutex_);
    auto id = manager_->submit(*who, request->spec(), now());
    if (!id) return to_grpc(id.error());
    reply->set_job(id->value());
    wake_.notify_one();
    return grpc::Status::OK;
  }

  grpc::Status List(grpc::ServerContext*, const v1::ListRequest* request, v1::ListReply* reply) override {
    auto who = caller(request->caller());
    if (!who) return to_grpc(who.error());
    std::lock_guard lock(mutex_);
    for (const controller::JobRow& row : manager_->list(*who)) *reply->add_jobs() = info(row);
    return grpc::Status::OK;
  }

  grpc::Status Show(grpc::ServerContext*, const v1::JobRequest* request, v1::JobInfo* reply) override {
    auto who = caller(request->caller());
    if (!who) return to_grpc(who.error());
    std::lock_guard lock(mutex_);
    auto row = manager_->show(*who, JobId(request->job()));
    if (!row) return to_grpc(row.error());
    *reply = info(*row);
    return grpc::Status::OK;
  }

  grpc::Status Cancel(grpc::ServerContext*, const v1::JobRequest* request, v1::CancelReply*) override {
    auto who = caller(request->caller());
    if (!who) return to_grpc(who.error());
    std::lock_guard lock(mutex_);
    std::vector<JobId> kill;
    if (auto status = manager_->cancel(*who, JobId(request->job()), now(), kill); !status) {
      return to_grpc(status.error());
    }
    for (JobId id : kill) send_kill(id);
    return grpc::Status::OK;
  }

  // ---- Agents ----
  grpc::Status Connect(grpc::ServerContext* context, grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>* stream) override {
    v1::FromAgent first;
    if (!stream->Read(&first) || !first.has_hello()) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "an agent's first message must be its hello"};
    }
    // Only root may add a node: an agent runs jobs as any user.
    auto identity = munge_verify(first.hello().credential());
    if (!identity) return to_grpc(identity.error());
    if (identity->uid != 0) {
      return {grpc::StatusCode::PERMISSION_DENIED,
              fmt::format("an agent must run as root; {} (uid {}) may not register a node", identity->user, identity->uid)};
    }
    auto agent = std::make_shared<Agent>();
    agent->stream = stream;
    {
      std::lock_guard lock(mutex_);
      auto topology = hwtopo::topology_from_json(nlohmann::json::parse(first.hello().topology_json(), nullptr, false));
      if (!topology) return to_grpc(topology.error());
      const std::string& name = first.hello().name();
      if (auto existing = cluster_.find(name)) {
        if (agents_.contains(*existing)) return {grpc::StatusCode::ALREADY_EXISTS, fmt::format("node {} is connected already", name)};
        agent->node = *existing;
        (void)cluster_.set_state(*existing, sched::NodeState::kUp);
      } else {
        agent->node = cluster_.add_node({name, std::make_shared<const hwtopo::Topology>(std::move(*topology)), {}});
      }
      agents_[agent->node] = agent;
      v1::ToAgent registered;
      registered.mutable_registered();
      stream->Write(registered);
      spdlog::info("agent {} registered ({})", name, context->peer());
      wake_.notify_one();
    }
    for (v1::FromAgent message; stream->Read(&message);) {
      if (!message.has_ended()) continue;
      std::lock_guard lock(mutex_);
      node_ended(agent->node, message.ended());
    }
    std::lock_guard lock(mutex_);
    agents_.erase(agent->node);
    (void)cluster_.set_state(agent->node, sched::NodeState::kDown);
    spdlog::warn("agent {} disconnected: node down", cluster_.name(agent->node));
    return grpc::Status::OK;
  }

  // ---- Scheduling ----
  void run_scheduler(const std::atomic<bool>& stopping) {
    std::unique_lock lock(mutex_);
    while (!stopping.load()) {
      for (JobId id : manager_->past_walltime(now())) send_kill(id);
      auto launches = manager_->schedule(now());
      if (!launches) {
        spdlog::critical("{}; stopping", launches.error().to_string());
        std::raise(SIGTERM);
        return;
      }
      for (controller::Launch& launch : *launches) send_launch(launch);
      wake_.wait_for(lock, std::chrono::seconds(1));  // events notify; walltimes are checked each second
    }
  }
  void stop() { wake_.notify_all(); }

 private:
  struct Agent {
    NodeId node;
    grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>* stream = nullptr;
  };

  // The caller as its Munge credential proves it; admins are root and auth.admin_group.
  Result<controller::Caller> caller(const v1::Caller& c) const {
    Identity id = LOOM_TRY(munge_verify(c.credential()));
    return controller::Caller{id.uid, id.user, in_group(id, admin_group_)};
  }

  static v1::JobInfo info(const controller::JobRow& row) {
    v1::JobInfo j;
    j.set_id(row.id.value());
    j.set_name(row.spec.name());
    j.set_user(row.user);
    j.set_state(row.state);
    j.set_reason(row.reason);
    if (row.exit_code) j.set_exit_code(*row.exit_code);
    if (row.signal) j.set_signal(*row.signal);
    j.set_submit_time(row.submit_time);
    if (row.start_time) j.set_start_time(*row.start_time);
    if (row.end_time) j.set_end_time(*row.end_time);
    j.set_tasks(row.spec.tasks());
    // Placed jobs count the nodes they hold; pending ones what they asked for.
    const auto placed = row.placement.empty() ? nlohmann::json::array() : nlohmann::json::parse(row.placement);
    j.set_nodes(placed.empty() ? row.spec.nodes_min() : static_cast<std::uint32_t>(placed.size()));
    j.set_placement_json(row.placement);
    return j;
  }

  void send(NodeId node, const v1::ToAgent& message) {
    auto it = agents_.find(node);
    if (it == agents_.end()) return;  // a node gone down: its jobs end with it (crash recovery)
    it->second->stream->Write(message);
  }

  void send_launch(const controller::Launch& launch) {
    auto& nodes = running_[launch.id];
    for (const sched::NodePlacement& np : launch.placement.nodes) {
      v1::ToAgent message;
      v1::Launch* l = message.mutable_launch();
      l->set_job(launch.id.value());
      l->set_uid(launch.uid);
      *l->mutable_spec() = launch.spec;
      for (const sched::RankPlacement& r : np.ranks) {
        v1::Rank* rank = l->add_ranks();
        rank->set_rank(r.rank);
        for (unsigned core : r.cores) rank->add_cores(core);
        rank->set_numa(r.numa);
        rank->set_memory_bytes(r.memory_bytes);
      }
      nodes.pending.insert(np.node);
      send(np.node, message);
    }
  }

  void send_kill(JobId id) {
    auto it = running_.find(id);
    if (it == running_.end()) return;
    v1::ToAgent message;
    message.mutable_kill()->set_job(id.value());
    for (NodeId node : it->second.pending) send(node, message);
  }

  // A node reports the job's processes there gone; the job ends when every node has.
  void node_ended(NodeId node, const v1::JobEnded& ended) {
    const JobId id(ended.job());
    auto it = running_.find(id);
    if (it == running_.end()) return;
    RunningJob& job = it->second;
    job.pending.erase(node);
    if (!job.failed && (ended.exit_code() != 0 || !ended.error().empty())) {
      job.failed = true;
      job.exit_code = ended.error().empty() ? ended.exit_code() : 127;
      if (ended.has_signal()) job.signal = ended.signal();
      if (!ended.error().empty()) spdlog::warn("job {} on {}: {}", id.value(), cluster_.name(node), ended.error());
      send_kill(id);  // the first failing rank ends the job everywhere
    }
    if (!job.pending.empty()) return;
    if (auto status = manager_->finished(id, job.exit_code, job.signal, now()); !status) {
      spdlog::error("job {}: {}", id.value(), status.error().to_string());
    }
    running_.erase(it);
    wake_.notify_one();
  }

  struct RunningJob {
    std::set<NodeId> pending;  // nodes whose processes have not ended yet
    bool failed = false;
    int exit_code = 0;
    std::optional<int> signal;
  };

  std::unique_ptr<controller::JobManager>& manager_;
  sched::Cluster& cluster_;
  std::string admin_group_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<NodeId, std::shared_ptr<Agent>> agents_;
  std::map<JobId, RunningJob> running_;
};

std::atomic<bool> stopping{false};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"loomctld: the Loom controller"};
  std::string listen = "127.0.0.1:0", state_dir = "/var/lib/loom";
  std::string config_file;
  app.add_option("--listen", listen, "HOST:PORT to serve on; port 0 picks a free one")->capture_default_str();
  app.add_option("--state-dir", state_dir, "Where the state lives")->capture_default_str();
  app.add_option("--config", config_file, "Configuration file");
  CLI11_PARSE(app, argc, argv);
  auto fail = [](const Error& e) {
    std::fprintf(stderr, "loomctld: %s\n", e.to_string().c_str());
    return 1;
  };
  auto config = start_program("loomctld", config_file.empty() ? std::nullopt : std::optional<std::filesystem::path>(config_file));
  if (!config) return fail(config.error());

  sched::Cluster cluster;
  auto store = controller::open_sqlite_store(state_dir);
  if (!store) return fail(store.error());
  auto manager = controller::JobManager::open(std::move(*store), cluster, {}, now());
  if (!manager) return fail(manager.error());

  Controller service(*manager, cluster, config->auth.admin_group);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(static_cast<v1::Controller::Service*>(&service));
  builder.RegisterService(static_cast<v1::AgentLink::Service*>(&service));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return fail(Error(ErrorCode::kUnavailable, fmt::format("cannot listen on {}", listen)));
  const std::string host = listen.substr(0, listen.rfind(':'));
  std::printf("loomctld: listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);

  std::thread scheduler([&] { service.run_scheduler(stopping); });
  // SIGTERM and SIGINT end the daemon: wait for them on this thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  int signal = 0;
  sigwait(&signals, &signal);
  spdlog::info("signal {}: stopping", signal);
  stopping.store(true);
  service.stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  scheduler.join();
  return 0;
}
