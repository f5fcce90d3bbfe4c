// The core's agents: their joining and leaving, what they are sent (launches, kills) and
// what they report (starts, ends, staging, buffers).
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "loom/burstbuffer/staging_spec.hpp"
#include "loom/controller/core.hpp"

namespace loom::controller {

Result<NodeId> Core::agent_joined(const v1::RegisterRequest& hello,
                                  std::shared_ptr<AgentChannel> channel) {
  if (read_only_) return joined_read_only(hello, std::move(channel));
  const std::string& name = hello.name();
  if (storage_.contains(name)) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("{} is a storage agent's name already", name));
  }
  if (auto existing = cluster_.find(name); existing && agents_.contains(*existing)) {
    // The node's agent restarted before its old stream was seen to break: the newest
    // registration is the live one (only root registers), the old stream is dropped.
    spdlog::warn("agent {} registered again; dropping its previous stream", name);
    agents_.at(*existing).channel->drop();
    agents_.erase(*existing);
  }
  std::vector<sched::NvmeDevice> nvme;
  for (const v1::NvmeDevice& d : hello.nvme()) {
    nvme.push_back(
        {d.path(), d.has_numa() ? std::optional<unsigned>(d.numa()) : std::nullopt, d.capacity()});
  }
  const NodeId node = LOOM_TRY(manager_->joined(
      name, nlohmann::json::parse(hello.topology_json(), nullptr, false), std::move(nvme)));
  agents_[node] = Agent{std::move(channel), clock_.steady()};
  cgroups_[name] = hello.cgroup();
  gone_.erase(node);
  manager_->unreachable(name, std::nullopt);
  v1::ToAgent registered;
  registered.mutable_registered();
  send(node, registered);
  spdlog::info("agent {} registered{}; it runs {} job(s), {} ended meanwhile", name,
               cluster_.state(node) == sched::NodeState::kDrain ? ", drained" : "",
               hello.running_size(), hello.ended_size());
  reconcile(node, hello);
  wants_pass_ = true;
  return node;
}

Result<NodeId> Core::joined_read_only(const v1::RegisterRequest& hello,
                                      std::shared_ptr<AgentChannel> channel) {
  const std::optional<NodeId> node = cluster_.find(hello.name());
  // A node the state does not hold yet would have to be stored.
  if (!node) return std::unexpected(writable().error());
  if (auto existing = agents_.find(*node); existing != agents_.end())
    existing->second.channel->drop();
  agents_[*node] = Agent{std::move(channel), clock_.steady()};
  v1::ToAgent registered;
  registered.mutable_registered();
  send(*node, registered);
  spdlog::info("agent {} connected while the state cannot be written: heard, not reconciled",
               hello.name());
  return *node;
}

void Core::agent_message(NodeId node, const v1::FromAgent& message) {
  auto agent = agents_.find(node);
  if (agent == agents_.end()) return;  // a stream already replaced or dropped
  agent->second.heard = clock_.steady();
  if (message.has_heartbeat()) {
    v1::ToAgent answer;  // the agent's own deadlines count from the last one it hears
    answer.mutable_heartbeat();
    send(node, answer);
  }
  // Read-only: nothing it reports could be stored, so none of it is taken (an end taken
  // would be told Forget); it reports it all again when it registers in full.
  if (read_only_) return;
  if (message.has_started()) node_started(node, message.started());
  if (message.has_ended()) node_ended(node, message.ended());
  if (message.has_buffer()) {
    if (!message.buffer().destroy())
      buffers_made_[message.buffer().slice()] = message.buffer().error();
    if (!message.buffer().error().empty()) {
      spdlog::error("burst buffer {} on {}: {}", message.buffer().slice(), cluster_.name(node),
                    message.buffer().error());
    }
    notify();
  }
  if (message.has_staging()) {
    if (auto status = manager_->staged(JobId(message.staging().job()), cluster_.name(node),
                                       message.staging());
        !status) {
      spdlog::debug("job {}: staging report from {}: {}", message.staging().job(),
                    cluster_.name(node), status.error().to_string());
    }
  }
}

void Core::agent_left(NodeId node, const AgentChannel* channel) {
  auto it = agents_.find(node);
  if (it == agents_.end() || it->second.channel.get() != channel) return;
  // Its silence began with the last message heard: the deadline counts from there, as the
  // agent's own fence does.
  const Clock::Steady since = it->second.heard;
  agents_.erase(it);
  gone_[node] = since;
  (void)cluster_.set_state(node, sched::NodeState::kDown);
  const sched::Time wall_since =
      clock_.wall() - std::chrono::duration_cast<std::chrono::seconds>(clock_.steady() - since);
  const std::string detail =
      fmt::format("{} silent since {:%FT%TZ}; its jobs are given up at {:%FT%TZ} unless it returns",
                  cluster_.name(node), wall_since, wall_since + requeue_after_);
  manager_->unreachable(cluster_.name(node), detail);
  spdlog::warn("agent {} disconnected: node down; {}", cluster_.name(node), detail);
}

Status Core::storage_joined(const v1::RegisterRequest& hello) {
  const std::string& name = hello.name();
  if (cluster_.find(name)) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("{} is a compute node's name already", name));
  }
  storage_[name] = hello.data_address();
  cgroups_[name] = hello.cgroup();
  spdlog::info("storage agent {} registered, serving at {}", name, hello.data_address());
  return {};
}

void Core::storage_left(const v1::RegisterRequest& hello) {
  if (auto it = storage_.find(hello.name());
      it != storage_.end() && it->second == hello.data_address())
    storage_.erase(it);
  spdlog::warn("storage agent {} disconnected", hello.name());
}

void Core::send(NodeId node, const v1::ToAgent& message) {
  auto it = agents_.find(node);
  if (it == agents_.end()) return;  // a node gone down: its jobs end with it (crash recovery)
  if (batch_) {
    held_.emplace_back(it->second.channel, message);
  } else {
    it->second.channel->send(message);
  }
}

Status Core::begin() {
  // Read-only, nothing is written: no transaction is begun (a failing disk may refuse even
  // that), so that a probe commits on its own, and what follows a probe that passed is
  // stored as it is made.
  if (!read_only_) LOOM_TRY(manager_->begin_batch());
  stored_batch_ = !read_only_;
  batch_ = true;
  return {};
}

Status Core::commit() {
  batch_ = false;
  auto held = std::exchange(held_, {});
  if (std::exchange(stored_batch_, false)) LOOM_TRY(manager_->end_batch());
  for (auto& [channel, message] : held) channel->send(message);
  return {};
}

void Core::forget(JobId id, const std::set<NodeId>& nodes) {
  v1::ToAgent message;
  message.mutable_forget()->set_job(id.value());
  for (NodeId node : nodes) send(node, message);
}

void Core::send_launch(const Launch& launch) {
  auto& nodes = running_[launch.id];
  // Where the storage nodes the job stages from and to serve; one that is not connected is
  // left out, and the agent fails the staging that names it.
  std::map<std::string, std::string> storage;
  auto serve = [&](const std::string& name) {
    if (storage_.contains(name)) storage[name] = storage_.at(name);
  };
  for (const v1::StageIn& in : launch.spec.stage_in_files()) serve(in.export_name());
  for (const v1::StageOut& out : launch.spec.stage_out_files()) serve(out.export_name());
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
    if (const BufferRow* bound = manager_->buffer(launch.uid, launch.spec.bb_persistent())) {
      l->set_persistent_device(bound->nvme);
      l->set_persistent_slice(bound->slice);
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
  // Its slices kept elsewhere will not be used: the nodes it starts on take theirs back.
  if (auto kept = kept_.extract(launch.id)) {
    v1::ToAgent drop;
    drop.mutable_drop_slice()->set_job(launch.id.value());
    for (NodeId node : kept.mapped()) {
      if (!nodes.nodes.contains(node)) send(node, drop);
    }
  }
}

void Core::send_kill(JobId id, std::chrono::seconds grace, bool keep_slice) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  v1::ToAgent message;
  message.mutable_kill()->set_job(id.value());
  message.mutable_kill()->set_grace_s(static_cast<std::uint32_t>(grace.count()));
  message.mutable_kill()->set_keep_slice(keep_slice);
  for (NodeId node : it->second.pending) send(node, message);
}

void Core::preempt(const sched::Preemption& p) {
  auto it = running_.find(p.victim);
  if (it == running_.end()) return;
  send_kill(p.victim, config_.controller.kill_grace, p.requeue);
  if (p.requeue) kept_[p.victim].insert(it->second.nodes.begin(), it->second.nodes.end());
}

void Core::drop_kept() {
  for (auto it = kept_.begin(); it != kept_.end();) {
    const std::optional<v1::JobState> state = manager_->state(it->first);
    if (state == v1::PENDING || running_.contains(it->first)) {
      ++it;
      continue;
    }
    v1::ToAgent drop;
    drop.mutable_drop_slice()->set_job(it->first.value());
    for (NodeId node : it->second) send(node, drop);
    it = kept_.erase(it);
  }
}

void Core::node_started(NodeId node, const v1::JobStarted& started) {
  const JobId id(started.job());
  if (auto status = manager_->started(cluster_.name(node), started); !status) {
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
    if (auto status = manager_->ran(id, clock_.wall()); !status)
      spdlog::error("job {}: {}", id.value(), status.error().to_string());
  }
}

std::optional<NodeId> Core::mpirun_node(JobId id) const {
  auto row = manager_->show(Caller{0, "root", true, 0}, id);
  const std::vector<std::string> nodes = manager_->nodes_of(id);
  if (!row || !row->spec.mpi() || nodes.size() < 2) return std::nullopt;
  return cluster_.find(nodes.front());
}

void Core::node_ended(NodeId node, const v1::JobEnded& ended) {
  const JobId id(ended.job());
  if (manager_->unknown().contains(id)) {
    early_ends_[id][node] = ended;
    return;
  }
  auto it = running_.find(id);
  if (it == running_.end() || !it->second.pending.contains(node)) {
    // A job lost meanwhile (or a run of it before a requeue): its end changes nothing.
    forget(id, {node});
    return;
  }
  if (ended.reason() == v1::REASON_NODE_FAIL) {
    // Its agent heard no controller for agent.fence_after and killed it (--requeue): it
    // is lost as if the node had been, and queued again.
    lose(id, fmt::format("{} fenced it: {}", cluster_.name(node), ended.error()));
    forget(id, {node});
    return;
  }
  RunningJob& job = it->second;
  job.pending.erase(node);
  if (job.daemons.contains(node)) {
    daemon_ends_[{id, node}] = ended;
    notify();
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
  const std::optional<NodeId> mpirun =
      job.nodes.size() > 1 ? mpirun_node(id) : std::nullopt;   // one node: nothing to look up
  const bool failed_here = ended.reason() != v1::REASON_NONE;  // it could not start or stage
  const bool counts = !mpirun || node == *mpirun || failed_here;
  if (mpirun && node == *mpirun && !job.pending.empty() && ended.exit_code() == 0 && !failed_here) {
    v1::ToAgent finish;  // daemons normally end before mpirun does; stragglers are stopped
    finish.mutable_kill()->set_job(id.value());
    finish.mutable_kill()->set_finish(true);
    for (NodeId other : job.pending) send(other, finish);
  }
  if (counts && !job.failed && (ended.exit_code() != 0 || failed_here)) {
    job.failed = true;
    // The agent's status: 127 for a launch that ran nothing, the ranks' under a failed
    // stage-out.
    job.ending.exit_code = ended.exit_code();
    if (ended.has_signal()) job.ending.signal = ended.signal();
    if (ended.reason() == v1::REASON_LAUNCH_FAILED) {
      job.ending.failure = {ended.reason(),
                            fmt::format("on {}: {}", cluster_.name(node), ended.error())};
    } else if (failed_here) {
      job.ending.failure = {ended.reason(), ended.error()};  // it names the file and the node
    }
    send_kill(id, std::chrono::seconds(0));  // the first failing rank ends the job everywhere
  }
  if (!job.pending.empty()) return;
  if (auto status = manager_->finished(id, job.ending, clock_.wall()); !status) {
    spdlog::error("job {}: {}", id.value(), status.error().to_string());
    return;  // not stored: the agents keep the job's ends, and report them again
  }
  forget(id, job.nodes);
  running_.erase(it);
  wants_pass_ = true;
}

std::string Core::metrics() const {
  Exposition out;
  manager_->write_metrics(out);
  out.family("loom_agent_heartbeat_age_seconds", "gauge",
             "Since the controller last heard each connected node's agent.");
  for (const auto& [node, agent] : agents_) {
    out.sample("loom_agent_heartbeat_age_seconds", {{"node", cluster_.name(node)}},
               std::chrono::duration<double>(clock_.steady() - agent.heard).count());
  }
  return out.text();
}

}  // namespace loom::controller
