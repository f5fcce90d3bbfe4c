// The core's CLI events, Open MPI's daemons and its tick; agents are core_agents.cpp's,
// recovery core_recovery.cpp's.
#include "loom/controller/core.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "loom/burstbuffer/names.hpp"
#include "loom/common/bytes.hpp"

namespace loom::controller {

namespace {

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

sched::Time SystemClock::wall() const {
  return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
}

Clock::Steady SystemClock::steady() const { return std::chrono::steady_clock::now(); }

Core::Core(sched::Cluster& cluster, const Config& config, const Clock& clock,
           std::unique_ptr<JobManager> manager, std::function<void()> changed)
    : cluster_(cluster),
      config_(config),
      clock_(clock),
      manager_(std::move(manager)),
      changed_(std::move(changed)),
      window_(config.controller.heartbeat_window()),
      requeue_after_(config.controller.requeue_after),
      started_(clock.steady()) {
  probe_store();
  if (!manager_->unknown().empty()) {
    spdlog::info("{} job(s) were running: waiting up to {} s for their agents to re-register",
                 manager_->unknown().size(), requeue_after_.count());
  }
}

// ---- The CLI ----

Result<std::vector<JobId>> Core::submit(const Caller& who, const v1::SubmitRequest& request) {
  LOOM_TRY(writable());
  v1::JobSpec spec = request.spec();
  if (spec.mpi() && spec.mpi_launch() == v1::MPI_LAUNCH_DEFAULT) {  // the site's (mpi.default)
    spec.set_mpi_launch(config_.mpi.launch == "pmix" ? v1::MPI_LAUNCH_PMIX : v1::MPI_LAUNCH_MPIRUN);
  }
  auto ids = LOOM_TRY(manager_->submit(who, std::move(spec), request.array_size(), clock_.wall()));
  wants_pass_ = true;
  return ids;
}

Status Core::cancel(const Caller& who, JobId id, std::optional<std::uint32_t> index) {
  LOOM_TRY(writable());
  std::vector<JobId> kill;
  LOOM_TRY(manager_->cancel(who, id, index, clock_.wall(), kill));
  for (JobId k : kill) send_kill(k, config_.controller.kill_grace);
  return {};
}

Status Core::drain(const Caller& who, const std::string& node, const std::string& reason) {
  LOOM_TRY(writable());
  return manager_->drain(who, node, reason);
}

Status Core::resume(const Caller& who, const std::string& node) {
  LOOM_TRY(writable());
  LOOM_TRY(manager_->resume(who, node));
  wants_pass_ = true;
  return {};
}

v1::NodesReply Core::nodes() const {
  v1::NodesReply reply;
  reply.set_read_only(read_only_.value_or(""));
  for (std::size_t i = 0; i < cluster_.size(); ++i) {
    const NodeId node(static_cast<NodeId::rep>(i));
    v1::NodeInfo* n = reply.add_nodes();
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
    v1::NodeInfo* n = reply.add_nodes();
    n->set_name(name);
    n->set_state("UP");
    n->set_role("storage");
    n->set_data_address(address);
    if (auto it = cgroups_.find(name); it != cgroups_.end()) *n->mutable_cgroup() = it->second;
  }
  return reply;
}

// ---- Persistent burst buffers ----

v1::BufferInfo Core::buffer_info(const BufferRow& row) const {
  v1::BufferInfo b;
  b.set_name(row.name);
  b.set_owner(row.user);
  b.set_account(row.account);
  b.set_node(row.node);
  b.set_bytes(row.bytes);
  b.set_path(burstbuffer::buffer_mount(row.nvme, row.slice).string());
  for (JobId id : manager_->buffer_users(row)) b.add_used_by(id.value());
  return b;
}

void Core::send_buffer(const BufferRow& row, bool destroy) {
  const std::optional<NodeId> node = cluster_.find(row.node);
  if (!node) return;
  v1::ToAgent message;
  v1::BufferCommand* c = message.mutable_buffer();
  c->set_slice(row.slice);
  c->set_device(row.nvme);
  c->set_bytes(row.bytes);
  c->set_uid(row.uid);
  c->set_gid(row.gid);
  c->set_destroy(destroy);
  send(*node, message);
}

Result<BufferRow> Core::create_buffer(const Caller& who, const v1::BufferRequest& request) {
  LOOM_TRY(writable());
  BufferRow row = LOOM_TRY(manager_->create_buffer(
      who, {request.name(), request.bytes(), request.node(), request.account()}, clock_.wall()));
  buffers_made_.erase(row.slice);
  if (!agents_.contains(*cluster_.find(row.node))) {
    drop_buffer(who, row);
    return make_error(ErrorCode::kUnavailable, fmt::format("node {} is down", row.node));
  }
  send_buffer(row, false);
  return row;
}

std::optional<std::string> Core::buffer_made(const BufferRow& row) {
  auto answer = buffers_made_.extract(row.slice);
  if (!answer) return std::nullopt;
  return std::move(answer.mapped());
}

void Core::drop_buffer(const Caller& who, const BufferRow& row) {
  buffers_made_.erase(row.slice);
  (void)manager_->destroy_buffer(who, "", row.name, clock_.wall());
}

Result<BufferRow> Core::destroy_buffer(const Caller& who, const v1::BufferRequest& request) {
  LOOM_TRY(writable());
  BufferRow row =
      LOOM_TRY(manager_->destroy_buffer(who, request.owner(), request.name(), clock_.wall()));
  // A node that is down removes it when it registers again (see reconcile).
  send_buffer(row, true);
  spdlog::info("burst buffer {} of {} destroyed by {}", row.name, row.user, who.user);
  return row;
}

// ---- loom-rsh ----

Result<std::optional<NodeId>> Core::daemon_node(const Caller& who, JobId id,
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
  const auto at = std::ranges::find(nodes, node);
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

Result<std::optional<NodeId>> Core::start_daemon(const Caller& who, JobId id,
                                                 const std::string& node,
                                                 const v1::ExecRequest& request) {
  const std::optional<NodeId> ready = LOOM_TRY(daemon_node(who, id, node));
  if (!ready) return ready;
  running_.at(id).daemons.insert(*ready);
  v1::ToAgent exec;
  exec.mutable_exec()->set_job(id.value());
  *exec.mutable_exec()->mutable_argv() = request.argv();
  send(*ready, exec);
  spdlog::info("job {}: Open MPI's daemon started on {} for {}", id.value(), node, who.user);
  return ready;
}

Result<std::optional<v1::JobEnded>> Core::daemon_end(JobId id, NodeId node) {
  // The daemon's end is the node's end of the job (node_ended keeps it for this call).
  if (auto ended = daemon_ends_.extract({id, node})) return std::move(ended.mapped());
  auto job = running_.find(id);
  if (job == running_.end() || !job->second.pending.contains(node)) {
    return make_error(ErrorCode::kAborted,
                      fmt::format("job {} ended on {}", id.value(), cluster_.name(node)));
  }
  return std::optional<v1::JobEnded>();
}

void Core::abandon_daemon(JobId id, NodeId node) {
  // mpirun stopped waiting for this daemon: it goes too (mpirun ends the job itself).
  if (auto job = running_.find(id); job != running_.end()) job->second.daemons.erase(node);
  daemon_ends_.erase({id, node});
  v1::ToAgent kill;
  kill.mutable_kill()->set_job(id.value());
  send(node, kill);
}

// ---- The state's disk ----

Status Core::writable() const {
  if (!read_only_) return {};
  return make_error(ErrorCode::kUnavailable,
                    fmt::format("{}: no change is taken until it can", *read_only_));
}

void Core::probe_store() {
  const Status probed = manager_->probe_store();
  if (probed && read_only_) {
    spdlog::warn("the state can be written again: taking changes, and agents in full");
    read_only_.reset();
    started_ = clock_.steady();  // agents were not reconciled until now
    // Each registers again, reporting what it runs and what ended meanwhile.
    for (const auto& [node, agent] : agents_) agent.channel->drop();
    wants_pass_ = true;
  } else if (!probed && !read_only_) {
    read_only_ = fmt::format("the controller cannot write its state since {:%FT%TZ}: {}",
                             clock_.wall(), probed.error().to_string());
    spdlog::critical("{}; serving reads only, and trying again every second", *read_only_);
  }
}

// ---- Time ----

bool Core::holds_passes() const {
  if (manager_->unknown().empty()) return false;
  if (clock_.steady() - started_ <= window_) return true;
  return std::ranges::any_of(manager_->unknown(), [this](const auto& job) {
    return job.second.size() < manager_->nodes_of(job.first).size();
  });
}

std::chrono::milliseconds Core::tick_interval() const {
  // While jobs are unknown, nodes are checked often: each found job lets scheduling resume.
  // Read-only, a probe a second.
  return manager_->unknown().empty() || read_only_ ? std::chrono::seconds(1)
                                                   : std::chrono::milliseconds(200);
}

Status Core::tick() {
  wants_pass_ = false;
  if (read_only_) {
    probe_store();
    if (read_only_) return {};
  }
  check_nodes();
  manager_->forget_ended(clock_.wall() - config_.controller.min_job_age);
  // While a job that was running may be found again on nodes that are up, nothing new
  // starts: its cores would be given twice.
  if (holds_passes()) return {};
  for (JobId id : manager_->past_walltime(clock_.wall()))
    send_kill(id, config_.controller.kill_grace);
  std::vector<Launch> launches = LOOM_TRY(manager_->schedule(clock_.wall()));
  for (const sched::Preemption& p : manager_->take_preempted()) preempt(p);
  for (const Launch& launch : launches) send_launch(launch);
  drop_kept();  // after the launches: a job started again takes back its own
  return {};
}

}  // namespace loom::controller
