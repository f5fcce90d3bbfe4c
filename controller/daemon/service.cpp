#include "service.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "loom/burstbuffer/slice.hpp"
#include "loom/burstbuffer/staging_spec.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/munge.hpp"
#include "loom/launch/mpi.hpp"
#include "loom/proto/status.hpp"

namespace loom::controller {

namespace {

sched::Time now() {
  return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
}

std::optional<std::uint32_t> index_of(const v1::JobRequest& request) {
  return request.has_array_index() ? std::optional(request.array_index()) : std::nullopt;
}

v1::JobInfo info(const JobRow& row) {
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
  const auto placed =
      row.placement.empty() ? nlohmann::json::array() : nlohmann::json::parse(row.placement);
  j.set_nodes(placed.empty() ? row.spec.nodes_min() : static_cast<std::uint32_t>(placed.size()));
  j.set_placement_json(row.placement);
  if (row.array_job) {
    j.set_array_job(row.array_job->value());
    j.set_array_index(row.array_index);
  }
  *j.mutable_staging() = row.staging.files();
  if (row.usage) *j.mutable_usage() = *row.usage;
  return j;
}

std::string state_name(sched::NodeState state) {
  switch (state) {
    case sched::NodeState::kUp:
      return "UP";
    case sched::NodeState::kDrain:
      return "DRAIN";
    case sched::NodeState::kDown:
      return "DOWN";
  }
  return "UNKNOWN";
}

}  // namespace

Result<Caller> Service::caller(const v1::Caller& c) const {
  Identity id = LOOM_TRY(munge_verify(c.credential()));
  return Caller{id.uid, id.user, in_group(id, config_.auth.admin_group), id.gid};
}

// ---- CLI ----

grpc::Status Service::Submit(grpc::ServerContext*, const v1::SubmitRequest* request,
                             v1::SubmitReply* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::lock_guard lock(mutex_);
  auto ids = manager_->submit(*who, request->spec(), request->array_size(), now());
  if (!ids) return to_grpc(ids.error());
  reply->set_job(ids->front().value());
  if (request->array_size() > 0) {
    for (JobId id : *ids) reply->add_elements(id.value());
  }
  wake_.notify_one();
  return grpc::Status::OK;
}

grpc::Status Service::List(grpc::ServerContext*, const v1::ListRequest* request,
                           v1::ListReply* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  // A page at a time: every job at once outgrew gRPC's 4 MiB once an array of 100,000 was
  // listed.
  constexpr std::size_t kMostPerPage = 1000;
  const std::size_t page = request->page_size() == 0
                               ? kMostPerPage
                               : std::min<std::size_t>(request->page_size(), kMostPerPage);
  std::lock_guard lock(mutex_);
  std::vector<JobRow> rows =
      manager_->list(*who, request->include_ended(), JobId(request->after()), page + 1);
  if (rows.size() > page) {
    rows.pop_back();
    reply->set_next_after(rows.back().id.value());
  }
  for (const JobRow& row : rows) *reply->add_jobs() = info(row);
  return grpc::Status::OK;
}

grpc::Status Service::Show(grpc::ServerContext*, const v1::JobRequest* request,
                           v1::JobInfo* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::lock_guard lock(mutex_);
  auto row = manager_->show(*who, JobId(request->job()), index_of(*request));
  if (!row) return to_grpc(row.error());
  *reply = info(*row);
  return grpc::Status::OK;
}

grpc::Status Service::Cancel(grpc::ServerContext*, const v1::JobRequest* request,
                             v1::CancelReply*) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::lock_guard lock(mutex_);
  std::vector<JobId> kill;
  if (auto status = manager_->cancel(*who, JobId(request->job()), index_of(*request), now(), kill);
      !status) {
    return to_grpc(status.error());
  }
  for (JobId id : kill) send_kill(id, config_.controller.kill_grace);
  return grpc::Status::OK;
}

grpc::Status Service::Watch(grpc::ServerContext* context, const v1::JobRequest* request,
                            grpc::ServerWriter<v1::JobInfo>* writer) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::unique_lock lock(mutex_);
  std::string last;
  while (!stopping_.load()) {
    auto row = manager_->show(*who, JobId(request->job()), index_of(*request));
    if (!row) return to_grpc(row.error());
    const v1::JobInfo now = info(*row);
    // Changes that come faster than the watcher reads are coalesced: it sees the latest.
    if (std::string serialized = now.SerializeAsString(); serialized != last) {
      lock.unlock();
      const bool delivered = writer->Write(now);
      lock.lock();
      if (!delivered) return {grpc::StatusCode::CANCELLED, "the watcher went away"};
      last = std::move(serialized);
    }
    if (now.state() >= v1::COMPLETED) return grpc::Status::OK;
    // Woken by every change; the timeout only notices a watcher that has gone away.
    changed_.wait_for(lock, std::chrono::seconds(1));
    if (context->IsCancelled()) return {grpc::StatusCode::CANCELLED, "the watcher went away"};
  }
  return {grpc::StatusCode::UNAVAILABLE, "the controller is stopping"};
}

grpc::Status Service::Nodes(grpc::ServerContext*, const v1::NodesRequest* request,
                            v1::NodesReply* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < cluster_.size(); ++i) {
    const NodeId node(static_cast<NodeId::rep>(i));
    v1::NodeInfo* n = reply->add_nodes();
    n->set_name(cluster_.name(node));
    n->set_state(state_name(cluster_.state(node)));
    n->set_reason(manager_->drain_reason(cluster_.name(node)));
    const sched::NodeCapacity& free = cluster_.free(node);
    const sched::NodeCapacity& total = cluster_.total(node);
    std::size_t domain = 0;  // capacities list the domains with cores, ascending OS index
    for (const hwtopo::NumaDomain& d : cluster_.topology(node).numa_domains) {
      if (d.memory_only()) continue;
      v1::NumaInfo* numa = n->add_numa();
      numa->set_os_index(d.os_index);
      numa->set_cores_free(free.domains.at(domain).cores);
      numa->set_cores_total(total.domains.at(domain).cores);
      numa->set_mem_free(free.domains.at(domain).memory);
      numa->set_mem_total(total.domains.at(domain).memory);
      ++domain;
    }
    const auto devices = cluster_.nvme(node);
    for (std::size_t k = 0; k < devices.size(); ++k) {
      v1::NvmeInfo* nvme = n->add_nvme();
      nvme->set_path(devices[k].name);
      if (devices[k].numa) nvme->set_numa(*devices[k].numa);
      nvme->set_bytes_free(free.nvme.at(k));
      nvme->set_bytes_total(total.nvme.at(k));
    }
    n->set_role("compute");
    if (auto it = cgroups_.find(n->name()); it != cgroups_.end()) *n->mutable_cgroup() = it->second;
  }
  for (const auto& [name, address] : storage_) {
    v1::NodeInfo* n = reply->add_nodes();
    n->set_name(name);
    n->set_state("UP");
    n->set_role("storage");
    n->set_data_address(address);
    if (auto it = cgroups_.find(name); it != cgroups_.end()) *n->mutable_cgroup() = it->second;
  }
  return grpc::Status::OK;
}

grpc::Status Service::Drain(grpc::ServerContext*, const v1::NodeRequest* request, v1::NodeReply*) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::lock_guard lock(mutex_);
  if (auto status = manager_->drain(*who, request->node(), request->reason()); !status)
    return to_grpc(status.error());
  spdlog::info("node {} drained by {}: {}", request->node(), who->user, request->reason());
  return grpc::Status::OK;
}

grpc::Status Service::Resume(grpc::ServerContext*, const v1::NodeRequest* request, v1::NodeReply*) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::lock_guard lock(mutex_);
  if (auto status = manager_->resume(*who, request->node()); !status)
    return to_grpc(status.error());
  spdlog::info("node {} resumed by {}", request->node(), who->user);
  wake_.notify_one();
  return grpc::Status::OK;
}

v1::BufferInfo Service::buffer_info(const BufferRow& row) const {
  v1::BufferInfo b;
  b.set_name(row.name);
  b.set_owner(row.user);
  b.set_node(row.node);
  b.set_bytes(row.bytes);
  b.set_path(burstbuffer::buffer_mount(row.nvme, row.name).string());
  for (JobId id : manager_->buffer_users(row.name)) b.add_used_by(id.value());
  return b;
}

void Service::send_buffer(const BufferRow& row, bool destroy) {
  const std::optional<NodeId> node = cluster_.find(row.node);
  if (!node) return;
  v1::ToAgent message;
  v1::BufferCommand* c = message.mutable_buffer();
  c->set_name(row.name);
  c->set_device(row.nvme);
  c->set_bytes(row.bytes);
  c->set_uid(row.uid);
  c->set_gid(row.gid);
  c->set_destroy(destroy);
  send(*node, message);
}

grpc::Status Service::CreateBuffer(grpc::ServerContext*, const v1::BufferRequest* request,
                                   v1::BufferInfo* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::unique_lock lock(mutex_);
  auto row = manager_->create_buffer(*who, request->name(), request->bytes(), request->node(),
                                     who->gid, now());
  if (!row) return to_grpc(row.error());
  const std::optional<NodeId> node = cluster_.find(row->node);
  buffers_made_.erase(row->name);
  if (!agents_.contains(*node)) {
    (void)manager_->destroy_buffer(*who, row->name, now());
    return {grpc::StatusCode::UNAVAILABLE, fmt::format("node {} is down", row->node)};
  }
  send_buffer(*row, false);
  // Answered once the agent has made it (mkfs and a mount: seconds at most).
  const bool answered = changed_.wait_for(lock, std::chrono::seconds(60), [&] {
    return buffers_made_.contains(row->name) || stopping_.load();
  });
  const std::string error = answered && buffers_made_.contains(row->name)
                                ? buffers_made_.at(row->name)
                                : "no answer from its node";
  buffers_made_.erase(row->name);
  if (!error.empty()) {
    (void)manager_->destroy_buffer(*who, row->name, now());
    return {grpc::StatusCode::INTERNAL,
            fmt::format("{} could not make burst buffer {}: {}", row->node, row->name, error)};
  }
  spdlog::info("burst buffer {} ({}) of {} made on {}", row->name, format_bytes(Bytes(row->bytes)),
               row->user, row->node);
  *reply = buffer_info(*row);
  return grpc::Status::OK;
}

grpc::Status Service::ListBuffers(grpc::ServerContext*, const v1::BuffersRequest* request,
                                  v1::BuffersReply* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::lock_guard lock(mutex_);
  for (const BufferRow& row : manager_->buffers(*who)) *reply->add_buffers() = buffer_info(row);
  return grpc::Status::OK;
}

grpc::Status Service::DestroyBuffer(grpc::ServerContext*, const v1::BufferRequest* request,
                                    v1::BufferReply*) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  std::lock_guard lock(mutex_);
  auto row = manager_->destroy_buffer(*who, request->name(), now());
  if (!row) return to_grpc(row.error());
  // A node that is down removes it when it registers again (see reconcile).
  send_buffer(*row, true);
  spdlog::info("burst buffer {} of {} destroyed by {}", row->name, row->user, who->user);
  return grpc::Status::OK;
}

// ---- Agents ----

void Service::serve(std::unique_ptr<JobManager> manager) {
  manager_ = std::move(manager);
  recovery_until_ = Clock::now() + window_;
  if (!manager_->unknown().empty()) {
    spdlog::info("{} job(s) were running: waiting up to {} s for their agents to re-register",
                 manager_->unknown().size(),
                 std::chrono::duration_cast<std::chrono::seconds>(window_).count());
  }
}

// ---- loom-rsh ----

Result<std::optional<NodeId>> Service::daemon_node(const Caller& who, JobId id,
                                                   const std::string& node) const {
  const JobRow row = LOOM_TRY(manager_->show(who, id));
  if (row.uid != who.uid) {
    return make_error(
        ErrorCode::kPermissionDenied,
        fmt::format("job {} is {}'s: loom-rsh starts daemons only in the caller's own job",
                    id.value(), row.user));
  }
  if (!row.spec.mpi())
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("job {} is not an MPI job (--mpi)", id.value()));
  const std::vector<std::string> nodes = manager_->nodes_of(id);
  const auto at = std::find(nodes.begin(), nodes.end(), node);
  if (row.state == v1::PENDING || row.state > v1::RUNNING) {
    return make_error(
        ErrorCode::kFailedPrecondition,
        fmt::format("job {} is not running ({})", id.value(), v1::JobState_Name(row.state)));
  }
  if (at == nodes.end()) {
    return make_error(ErrorCode::kPermissionDenied,
                      fmt::format("{} is not a node of job {} (its nodes: {})", node, id.value(),
                                  fmt::join(nodes, ", ")));
  }
  if (at == nodes.begin()) {
    return make_error(
        ErrorCode::kPermissionDenied,
        fmt::format("{} is job {}'s first node, where mpirun runs: no daemon is started there",
                    node, id.value()));
  }
  // Staging in, or not found again yet after a restart: the caller waits.
  if (row.state == v1::STAGING_IN || manager_->unknown().contains(id))
    return std::optional<NodeId>();
  const std::optional<NodeId> found = cluster_.find(node);
  auto job = running_.find(id);
  if (!found || job == running_.end() || !job->second.pending.contains(*found)) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("job {} has ended on {}", id.value(), node));
  }
  if (job->second.daemons.contains(*found)) {
    return make_error(ErrorCode::kAlreadyExists,
                      fmt::format("job {} runs Open MPI's daemon on {} already", id.value(), node));
  }
  return found;
}

grpc::Status Service::Exec(grpc::ServerContext* context, const v1::ExecRequest* request,
                           v1::ExecReply* reply) {
  auto who = caller(request->caller());
  if (!who) return to_grpc(who.error());
  if (auto arguments = launch::daemon_arguments({request->argv().begin(), request->argv().end()});
      !arguments) {
    return to_grpc(arguments.error());
  }
  const JobId id(request->job());
  std::unique_lock lock(mutex_);
  // A job's first node may start mpirun while others still stage in: wait for RUNNING.
  NodeId node;
  for (;;) {
    auto ready = daemon_node(*who, id, request->node());
    if (!ready) return to_grpc(ready.error());
    if (*ready) {
      node = **ready;
      break;
    }
    changed_.wait_for(lock, std::chrono::seconds(1));
    if (context->IsCancelled()) return {grpc::StatusCode::CANCELLED, "loom-rsh went away"};
    if (stopping_.load()) return {grpc::StatusCode::UNAVAILABLE, "the controller is stopping"};
  }
  running_.at(id).daemons.insert(node);
  v1::ToAgent exec;
  exec.mutable_exec()->set_job(id.value());
  *exec.mutable_exec()->mutable_argv() = request->argv();
  send(node, exec);
  spdlog::info("job {}: Open MPI's daemon started on {} for {}", id.value(), request->node(),
               who->user);
  // The daemon's end is the node's end of the job (node_ended keeps it for this call).
  for (;;) {
    if (auto ended = daemon_ends_.extract({id, node})) {
      const v1::JobEnded& e = ended.mapped();
      reply->set_exit_code(e.exit_code());
      if (e.has_signal()) reply->set_signal(e.signal());
      reply->set_error(e.error());
      return grpc::Status::OK;
    }
    auto job = running_.find(id);
    if (job == running_.end() || !job->second.pending.contains(node)) {
      return {grpc::StatusCode::ABORTED,
              fmt::format("job {} ended on {}", id.value(), request->node())};
    }
    if (stopping_.load()) return {grpc::StatusCode::UNAVAILABLE, "the controller is stopping"};
    changed_.wait_for(lock, std::chrono::seconds(1));
    if (context->IsCancelled()) {
      // mpirun stopped waiting for this daemon: it goes too (mpirun ends the job itself),
      // and its end is kept for no one.
      if (auto still = running_.find(id); still != running_.end())
        still->second.daemons.erase(node);
      v1::ToAgent kill;
      kill.mutable_kill()->set_job(id.value());
      send(node, kill);
      return {grpc::StatusCode::CANCELLED, "loom-rsh went away"};
    }
  }
}

std::optional<NodeId> Service::mpirun_node(JobId id) const {
  auto row = manager_->show(Caller{0, "root", true, 0}, id);
  const std::vector<std::string> nodes = manager_->nodes_of(id);
  if (!row || !row->spec.mpi() || nodes.size() < 2) return std::nullopt;
  return cluster_.find(nodes.front());
}

grpc::Status Service::Connect(grpc::ServerContext* context,
                              grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>* stream) {
  v1::FromAgent first;
  if (!stream->Read(&first) || !first.has_hello()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "an agent's first message must be its hello"};
  }
  // Only root may add a node: an agent runs jobs as any user.
  auto identity = munge_verify(first.hello().credential());
  if (!identity) return to_grpc(identity.error());
  if (identity->uid != 0) {
    return {grpc::StatusCode::PERMISSION_DENIED,
            fmt::format("an agent must run as root; {} (uid {}) may not register a node",
                        identity->user, identity->uid)};
  }
  if (!first.hello().data_address().empty()) return serve_storage(context, stream, first.hello());
  auto agent = std::make_shared<Agent>();
  agent->context = context;
  agent->out = std::make_unique<AgentStream>(context, stream, config_.controller.agent_queue,
                                             first.hello().name());
  agent->heard = Clock::now();
  {
    std::lock_guard lock(mutex_);
    const std::string& name = first.hello().name();
    if (storage_.contains(name)) {
      return {grpc::StatusCode::FAILED_PRECONDITION,
              fmt::format("{} is a storage agent's name already", name)};
    }
    if (auto existing = cluster_.find(name); existing && agents_.contains(*existing)) {
      // The node's agent restarted before its old stream was seen to break: the newest
      // registration is the live one (only root registers), the old stream is dropped.
      spdlog::warn("agent {} registered again; dropping its previous stream", name);
      agents_.at(*existing)->context->TryCancel();
      agents_.erase(*existing);
    }
    std::vector<sched::NvmeDevice> nvme;
    for (const v1::NvmeDevice& d : first.hello().nvme()) {
      nvme.push_back({d.path(), d.has_numa() ? std::optional<unsigned>(d.numa()) : std::nullopt,
                      d.capacity()});
    }
    auto node =
        manager_->joined(name, nlohmann::json::parse(first.hello().topology_json(), nullptr, false),
                         std::move(nvme));
    if (!node) return to_grpc(node.error());
    agent->node = *node;
    agents_[agent->node] = agent;
    cgroups_[name] = first.hello().cgroup();
    gone_.erase(agent->node);
    v1::ToAgent registered;
    registered.mutable_registered();
    agent->out->send(registered);
    spdlog::info("agent {} registered ({}){}; it runs {} job(s), {} ended meanwhile", name,
                 context->peer(),
                 cluster_.state(agent->node) == sched::NodeState::kDrain ? ", drained" : "",
                 first.hello().running_size(), first.hello().ended_size());
    reconcile(agent->node, first.hello());
    wake_.notify_one();
  }
  for (v1::FromAgent message; stream->Read(&message);) {
    std::lock_guard lock(mutex_);
    agent->heard = Clock::now();
    if (message.has_started()) node_started(agent->node, message.started());
    if (message.has_ended()) node_ended(agent->node, message.ended());
    if (message.has_buffer()) {
      if (!message.buffer().destroy())
        buffers_made_[message.buffer().name()] = message.buffer().error();
      if (!message.buffer().error().empty()) {
        spdlog::error("burst buffer {} on {}: {}", message.buffer().name(),
                      cluster_.name(agent->node), message.buffer().error());
      }
      changed_.notify_all();
    }
    if (message.has_staging()) {
      if (auto status = manager_->staged(JobId(message.staging().job()), cluster_.name(agent->node),
                                         message.staging());
          !status) {
        spdlog::debug("job {}: staging report from {}: {}", message.staging().job(),
                      cluster_.name(agent->node), status.error().to_string());
      }
    }
  }
  std::unique_ptr<AgentStream> out;  // its writer joined outside the lock
  std::lock_guard lock(mutex_);
  out = std::move(agent->out);
  if (auto it = agents_.find(agent->node); it != agents_.end() && it->second == agent) {
    agents_.erase(it);
    gone_[agent->node] = Clock::now();
    (void)cluster_.set_state(agent->node, sched::NodeState::kDown);
    spdlog::warn("agent {} disconnected: node down; its jobs stand for {} s",
                 cluster_.name(agent->node),
                 std::chrono::duration_cast<std::chrono::seconds>(window_).count());
  }
  return grpc::Status::OK;
}

grpc::Status Service::serve_storage(grpc::ServerContext* context,
                                    grpc::ServerReaderWriter<v1::ToAgent, v1::FromAgent>* stream,
                                    const v1::RegisterRequest& hello) {
  const std::string& name = hello.name();
  {
    std::lock_guard lock(mutex_);
    if (cluster_.find(name)) {
      return {grpc::StatusCode::FAILED_PRECONDITION,
              fmt::format("{} is a compute node's name already", name)};
    }
    storage_[name] = hello.data_address();
    cgroups_[name] = hello.cgroup();
    v1::ToAgent registered;
    registered.mutable_registered();
    stream->Write(registered);
    spdlog::info("storage agent {} registered ({}), serving at {}", name, context->peer(),
                 hello.data_address());
  }
  for (v1::FromAgent message; stream->Read(&message);) {
  }
  std::lock_guard lock(mutex_);
  if (auto it = storage_.find(name); it != storage_.end() && it->second == hello.data_address())
    storage_.erase(it);
  spdlog::warn("storage agent {} disconnected", name);
  return grpc::Status::OK;
}

void Service::reconcile(NodeId node, const v1::RegisterRequest& hello) {
  const std::string& name = cluster_.name(node);
  const std::set<std::uint64_t> running(hello.running().begin(), hello.running().end());
  std::map<std::uint64_t, const v1::JobEnded*> ended;
  for (const v1::JobEnded& e : hello.ended()) ended[e.job()] = &e;
  // Jobs this controller tracks on the node: the agent must know them, running or ended.
  std::vector<JobId> forgotten;
  for (auto& [id, job] : running_) {
    if (job.pending.contains(node) && !running.contains(id.value()) && !ended.contains(id.value()))
      forgotten.push_back(id);
  }
  for (JobId id : forgotten) {
    v1::JobEnded e;
    e.set_job(id.value());
    e.set_exit_code(127);
    e.set_error("its agent restarted and no longer knows the job");
    node_ended(node, e);
  }
  for (const auto& [id, job] : manager_->unknown()) {
    const std::vector<std::string> nodes = manager_->nodes_of(id);
    if (std::find(nodes.begin(), nodes.end(), name) == nodes.end()) continue;
    if (!running.contains(id.value()) && !ended.contains(id.value())) {
      never_launched_[id].insert(node);
      manager_->heard(id, name);
    }
  }
  for (const auto& [raw, e] : ended) {
    if (manager_->unknown().contains(JobId(raw))) {
      early_ends_[JobId(raw)][node] = *e;
    } else {
      node_ended(node, *e);  // forgotten at once when the job is no longer this node's
    }
  }
  for (std::uint64_t raw : running) {
    const JobId id(raw);
    if (manager_->unknown().contains(id)) continue;
    if (auto it = running_.find(id); it != running_.end() && it->second.nodes.contains(node))
      continue;
    v1::ToAgent kill;  // the job is over as far as the state says: nothing may run twice
    kill.mutable_kill()->set_job(raw);
    send(node, kill);
    spdlog::warn("job {} still ran on {}, which the state has ended; killed", raw, name);
  }
  for (const auto& [id, job] : manager_->unknown()) {
    if (running.contains(id.value()) || ended.contains(id.value())) manager_->heard(id, name);
  }
  // Persistent buffers: what the node has and the state does not was destroyed meanwhile;
  // what the state has and the node does not is made again (empty, and said so).
  const std::set<std::string> held(hello.buffers().begin(), hello.buffers().end());
  std::set<std::string> known;
  for (const BufferRow& row : manager_->buffers_on(name)) {
    known.insert(row.name);
    if (held.contains(row.name)) continue;
    spdlog::warn("burst buffer {} is missing on {}; made again, empty", row.name, name);
    send_buffer(row, false);
  }
  for (const std::string& orphan : held) {
    if (known.contains(orphan)) continue;
    spdlog::warn("burst buffer {} on {} was destroyed meanwhile; removing it", orphan, name);
    v1::ToAgent message;
    message.mutable_buffer()->set_name(orphan);
    message.mutable_buffer()->set_destroy(true);
    send(node, message);
  }
  adopt_ready();
}

void Service::adopt_ready() {
  std::vector<JobId> ready;
  for (const auto& [id, waiting] : manager_->unknown()) {
    if (waiting.empty()) ready.push_back(id);
  }
  for (JobId id : ready) {
    const std::vector<std::string> names = manager_->nodes_of(id);
    std::set<NodeId> unaware =
        never_launched_.contains(id) ? never_launched_.extract(id).mapped() : std::set<NodeId>{};
    if (unaware.size() == names.size()) {
      // No agent ever had it: the controller stopped between storing the launch and
      // sending it. It has not run, so it runs now.
      early_starts_.erase(id);
      early_ends_.erase(id);
      if (auto status =
              manager_->lost(id, "its launch was lost when the controller stopped", now(), false);
          !status) {
        spdlog::error("job {}: {}", id.value(), status.error().to_string());
      }
      spdlog::warn("job {}: never reached its nodes; queued again", id.value());
      continue;
    }
    for (NodeId node : unaware) {
      v1::JobEnded e;
      e.set_job(id.value());
      e.set_exit_code(127);
      e.set_error(fmt::format("its agent on {} no longer knows the job", cluster_.name(node)));
      early_ends_[id][node] = e;
    }
    auto placement = manager_->adopt(id);
    if (!placement) {
      spdlog::error("job {}: {}", id.value(), placement.error().to_string());
      lose(id, "NodeFail: " + placement.error().message());
      continue;
    }
    RunningJob& job = running_[id];
    for (const sched::NodePlacement& np : placement->nodes) {
      job.pending.insert(np.node);
      job.nodes.insert(np.node);
    }
    spdlog::info("job {}: found running again on every node", id.value());
    // Started everywhere before the controller stopped, but stored as still staging in.
    if (auto starts = early_starts_.extract(id)) {
      job.started = std::move(starts.mapped());
      if (job.started == job.nodes) {
        if (auto status = manager_->ran(id, now()); !status)
          spdlog::error("job {}: {}", id.value(), status.error().to_string());
      }
    }
    if (auto ends = early_ends_.extract(id)) {
      for (const auto& [node, e] : ends.mapped()) node_ended(node, e);
    }
    // Cancelled while its state was unknown: the kill that had nowhere to go goes now.
    if (running_.contains(id) && manager_->being_killed(id))
      send_kill(id, config_.controller.kill_grace);
  }
}

void Service::lose(JobId id, const std::string& reason) {
  std::set<NodeId> nodes;
  if (auto it = running_.find(id); it != running_.end()) {
    nodes = it->second.nodes;
    running_.erase(it);
  } else {
    for (const std::string& name : manager_->nodes_of(id)) {
      if (auto node = cluster_.find(name)) nodes.insert(*node);
    }
  }
  early_starts_.erase(id);
  early_ends_.erase(id);
  never_launched_.erase(id);
  if (auto status = manager_->lost(id, reason, now()); !status) {
    spdlog::error("job {}: {}", id.value(), status.error().to_string());
    return;
  }
  spdlog::warn("job {}: {}", id.value(), reason);
  v1::ToAgent kill;
  kill.mutable_kill()->set_job(id.value());
  for (NodeId node : nodes)
    send(node, kill);  // what still runs of it elsewhere; ends reported later are forgotten
}

void Service::forget(JobId id, const std::set<NodeId>& nodes) {
  v1::ToAgent message;
  message.mutable_forget()->set_job(id.value());
  for (NodeId node : nodes) send(node, message);
}

void Service::check_nodes() {
  const auto now_steady = Clock::now();
  for (auto& [node, agent] : agents_) {
    if (now_steady - agent->heard > window_) {
      spdlog::warn("agent {} silent for {} heartbeats: dropping its stream", cluster_.name(node),
                   config_.controller.heartbeat_misses);
      agent->context->TryCancel();  // the stream's end marks the node gone
    }
  }
  std::vector<NodeId> failed;
  for (const auto& [node, since] : gone_) {
    if (now_steady - since > window_) failed.push_back(node);
  }
  for (NodeId node : failed) {
    gone_.erase(node);
    std::vector<JobId> jobs;
    for (const auto& [id, job] : running_) {
      if (job.pending.contains(node)) jobs.push_back(id);
    }
    for (JobId id : jobs)
      lose(id, fmt::format("NodeFail: {} was down for longer than the heartbeat window",
                           cluster_.name(node)));
  }
  if (now_steady > recovery_until_ && !manager_->unknown().empty()) {
    std::vector<std::pair<JobId, std::string>> missing;
    for (const auto& [id, waiting] : manager_->unknown()) {
      missing.emplace_back(
          id, fmt::format("NodeFail: {} did not re-register after the controller restarted",
                          fmt::join(waiting, ", ")));
    }
    for (const auto& [id, reason] : missing) lose(id, reason);
  }
}

void Service::send(NodeId node, const v1::ToAgent& message) {
  auto it = agents_.find(node);
  if (it == agents_.end()) return;  // a node gone down: its jobs end with it (crash recovery)
  it->second->out->send(message);
}

void Service::send_launch(const Launch& launch) {
  auto& nodes = running_[launch.id];
  // Where the storage nodes the job stages from and to serve; one that is not connected is
  // left out, and the agent fails the staging that names it.
  std::map<std::string, std::string> storage;
  for (const std::string& text : launch.spec.stage_in()) {
    if (auto in = burstbuffer::parse_stage_in(text); in && storage_.contains(in->node))
      storage[in->node] = storage_.at(in->node);
  }
  for (const std::string& text : launch.spec.stage_out()) {
    if (auto out = burstbuffer::parse_stage_out(text); out && storage_.contains(out->node))
      storage[out->node] = storage_.at(out->node);
  }
  for (std::size_t index = 0; index < launch.placement.nodes.size(); ++index) {
    const sched::NodePlacement& np = launch.placement.nodes[index];
    v1::ToAgent message;
    v1::Launch* l = message.mutable_launch();
    l->set_job(launch.id.value());
    l->set_uid(launch.uid);
    *l->mutable_spec() = launch.spec;
    l->set_node_index(static_cast<std::uint32_t>(index));
    for (const sched::NodePlacement& other : launch.placement.nodes) {
      v1::JobNode* job_node = l->add_nodes();
      job_node->set_name(cluster_.name(other.node));
      job_node->set_ranks(static_cast<std::uint32_t>(other.ranks.size()));
    }
    if (np.nvme) {
      l->set_bb_device(cluster_.nvme(np.node)[*np.nvme].name);
      l->set_bb_bytes(np.bb_bytes);
    }
    l->mutable_storage()->insert(storage.begin(), storage.end());
    if (!launch.spec.bb_persistent().empty()) {
      for (const BufferRow& row : manager_->buffers_on(cluster_.name(np.node))) {
        if (row.name == launch.spec.bb_persistent()) l->set_persistent_device(row.nvme);
      }
    }
    if (launch.array_job) {
      l->set_array_job(launch.array_job->value());
      l->set_array_index(launch.array_index);
    }
    for (const sched::RankPlacement& r : np.ranks) {
      v1::Rank* rank = l->add_ranks();
      rank->set_rank(r.rank);
      for (unsigned core : r.cores) rank->add_cores(core);
      rank->set_numa(r.numa);
      rank->set_memory_bytes(r.memory_bytes);
    }
    nodes.pending.insert(np.node);
    nodes.nodes.insert(np.node);
    send(np.node, message);
  }
}

void Service::send_kill(JobId id, std::chrono::seconds grace) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  v1::ToAgent message;
  message.mutable_kill()->set_job(id.value());
  message.mutable_kill()->set_grace_s(static_cast<std::uint32_t>(grace.count()));
  for (NodeId node : it->second.pending) send(node, message);
}

void Service::node_started(NodeId node, const v1::JobStarted& started) {
  std::vector<RankBound> ranks;
  for (const v1::RankBinding& r : started.ranks()) {
    ranks.push_back(
        {r.rank(), {r.cpus().begin(), r.cpus().end()}, {r.numa().begin(), r.numa().end()}});
  }
  const JobId id(started.job());
  if (auto status = manager_->started(id, cluster_.name(node), ranks); !status) {
    spdlog::warn("job {} on {}: {}", started.job(), cluster_.name(node),
                 status.error().to_string());
    return;
  }
  if (manager_->unknown().contains(id)) {
    early_starts_[id].insert(node);
    return;
  }
  auto it = running_.find(id);
  if (it == running_.end()) return;
  it->second.started.insert(node);
  if (it->second.started == it->second.nodes) {
    if (auto status = manager_->ran(id, now()); !status)
      spdlog::error("job {}: {}", id.value(), status.error().to_string());
  }
}

// A node reports the job's processes there gone; the job ends when every node has.
void Service::node_ended(NodeId node, const v1::JobEnded& ended) {
  const JobId id(ended.job());
  if (manager_->unknown().contains(id)) {
    early_ends_[id][node] = ended;
    return;
  }
  auto it = running_.find(id);
  if (it == running_.end() || !it->second.pending.contains(node)) {
    forget(
        id,
        {node});  // a job lost meanwhile (or a run of it before a requeue): its end changes nothing
    return;
  }
  RunningJob& job = it->second;
  job.pending.erase(node);
  if (job.daemons.contains(node)) {
    daemon_ends_[{id, node}] = ended;
    changed_.notify_all();
  }
  job.ending.out_of_memory = job.ending.out_of_memory || ended.out_of_memory();
  v1::Usage& usage = job.ending.usage;
  usage.set_cpu_seconds(usage.cpu_seconds() + ended.usage().cpu_seconds());
  if (ended.usage().has_memory_peak_bytes()) {
    usage.set_memory_peak_bytes(
        std::max(usage.memory_peak_bytes(), ended.usage().memory_peak_bytes()));
  }
  // An MPI job over several nodes ends with mpirun: its status is the job's, and what is
  // left of its daemons elsewhere is killed. A daemon's own status is not a rank's (mpirun
  // reports a failing rank), so only a node that could not run its part fails the job.
  const std::optional<NodeId> mpirun = mpirun_node(id);
  const bool counts = !mpirun || node == *mpirun || !ended.error().empty();
  if (mpirun && node == *mpirun && !job.pending.empty() && ended.exit_code() == 0 &&
      ended.error().empty()) {
    v1::ToAgent finish;  // daemons normally end before mpirun does; stragglers are stopped
    finish.mutable_kill()->set_job(id.value());
    finish.mutable_kill()->set_finish(true);
    for (NodeId other : job.pending) send(other, finish);
  }
  if (counts && !job.failed && (ended.exit_code() != 0 || !ended.error().empty())) {
    job.failed = true;
    // A launch that failed ran nothing (127); a stage-out that failed keeps the ranks' status.
    job.ending.exit_code = ended.error().empty() || ended.staging() ? ended.exit_code() : 127;
    if (ended.has_signal()) job.ending.signal = ended.signal();
    if (!ended.error().empty())
      job.ending.error = fmt::format("on {}: {}", cluster_.name(node), ended.error());
    job.ending.staging = ended.staging();
    if (ended.staging()) job.ending.error = ended.error();  // it names the file and the node
    send_kill(id, std::chrono::seconds(0));  // the first failing rank ends the job everywhere
  }
  if (!job.pending.empty()) return;
  if (auto status = manager_->finished(id, job.ending, now()); !status) {
    spdlog::error("job {}: {}", id.value(), status.error().to_string());
    return;  // not stored: the agents keep the job's ends, and report them again
  }
  forget(id, job.nodes);
  running_.erase(it);
  wake_.notify_one();
}

// ---- Scheduling ----

bool Service::run_scheduler() {
  std::unique_lock lock(mutex_);
  while (!stopping_.load()) {
    check_nodes();
    if (!manager_->unknown().empty()) {
      // Until every job that was running is found again or given up, nothing new starts:
      // its cores would be given twice.
      wake_.wait_for(lock, std::chrono::milliseconds(200));
      continue;
    }
    for (JobId id : manager_->past_walltime(now())) send_kill(id, config_.controller.kill_grace);
    auto launches = manager_->schedule(now());
    if (!launches) {
      spdlog::critical("{}; stopping", launches.error().to_string());
      return false;
    }
    for (Launch& launch : *launches) send_launch(launch);
    wake_.wait_for(lock,
                   std::chrono::seconds(1));  // events notify; walltimes are checked each second
  }
  return true;
}

void Service::stop() {
  std::lock_guard lock(mutex_);
  stopping_.store(true);
  wake_.notify_all();
  changed_.notify_all();
}

}  // namespace loom::controller
