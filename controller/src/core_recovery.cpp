// The core's recovery: an agent that re-registers is reconciled with what the state says,
// jobs of unknown state after a restart are found again or given up, and nodes silent for
// the heartbeat window are DOWN, their jobs given up after controller.requeue_after.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "loom/common/duration.hpp"
#include "loom/controller/core.hpp"

namespace loom::controller {

void Core::reconcile(NodeId node, const v1::RegisterRequest& hello) {
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
    e.set_reason(v1::REASON_LAUNCH_FAILED);
    node_ended(node, e);
  }
  for (const auto& [id, job] : manager_->unknown()) {
    const std::vector<std::string> nodes = manager_->nodes_of(id);
    if (std::ranges::find(nodes, name) == nodes.end()) continue;
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
  // Kept slices: those this controller had kept here stay; any other is an older run's (a
  // drop the node missed, or one a restarted controller never heard of) and goes, so that
  // no run starts in a slice older than its last run's.
  for (std::uint64_t raw : hello.kept_slices()) {
    if (auto it = kept_.find(JobId(raw)); it != kept_.end() && it->second.contains(node)) continue;
    v1::ToAgent drop;
    drop.mutable_drop_slice()->set_job(raw);
    send(node, drop);
  }
  // Persistent buffers: what the node has and the state does not was destroyed meanwhile;
  // what the state has and the node does not is made again (empty, and said so).
  const std::set<std::string> held(hello.buffers().begin(), hello.buffers().end());
  std::set<std::string> known;
  for (const BufferRow& row : manager_->buffers_on(name)) {
    known.insert(row.slice);
    if (held.contains(row.slice)) continue;
    spdlog::warn("burst buffer {} of {} is missing on {}; made again, empty", row.name, row.user,
                 name);
    send_buffer(row, false);
  }
  for (const std::string& orphan : held) {
    if (known.contains(orphan)) continue;
    spdlog::warn("burst buffer {} on {} was destroyed meanwhile; removing it", orphan, name);
    v1::ToAgent message;
    message.mutable_buffer()->set_slice(orphan);
    message.mutable_buffer()->set_destroy(true);
    send(node, message);
  }
  adopt_ready();
}

void Core::adopt_ready() {
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
      if (auto status = manager_->lost(
              id, {v1::REASON_LAUNCH_FAILED, "its launch was lost when the controller stopped"},
              clock_.wall(), false);
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
      e.set_reason(v1::REASON_LAUNCH_FAILED);
      early_ends_[id][node] = e;
    }
    auto placement = manager_->adopt(id);
    if (!placement) {
      spdlog::error("job {}: {}", id.value(), placement.error().to_string());
      lose(id, placement.error().message());
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
        if (auto status = manager_->ran(id, clock_.wall()); !status)
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

void Core::lose(JobId id, const std::string& node_failure) {
  const Reason reason{v1::REASON_NODE_FAIL, node_failure};
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
  if (auto status = manager_->lost(id, reason, clock_.wall()); !status) {
    spdlog::error("job {}: {}", id.value(), status.error().to_string());
    return;
  }
  spdlog::warn("job {}: {}", id.value(), reason.text());
  wants_pass_ = true;
  v1::ToAgent kill;
  kill.mutable_kill()->set_job(id.value());
  for (NodeId node : nodes)
    send(node, kill);  // what still runs of it elsewhere; ends reported later are forgotten
}

void Core::check_nodes() {
  const Clock::Steady now = clock_.steady();
  for (auto& [node, agent] : agents_) {
    if (now - agent.heard > window_) {
      spdlog::warn("agent {} silent for {} heartbeats: dropping its stream", cluster_.name(node),
                   config_.controller.heartbeat_misses);
      agent.channel->drop();  // the stream's end marks the node gone
    }
  }
  std::vector<NodeId> failed;
  for (const auto& [node, since] : gone_) {
    if (now - since > requeue_after_) failed.push_back(node);
  }
  for (NodeId node : failed) {
    gone_.erase(node);
    manager_->unreachable(cluster_.name(node), std::nullopt);
    std::vector<JobId> jobs;
    for (const auto& [id, job] : running_) {
      if (job.pending.contains(node)) jobs.push_back(id);
    }
    for (JobId id : jobs) {
      lose(id, fmt::format("{} was unreachable for longer than controller.requeue_after ({})",
                           cluster_.name(node), format_duration(requeue_after_)));
    }
  }
  if (now - started_ > requeue_after_ && !manager_->unknown().empty()) {
    std::vector<std::pair<JobId, std::string>> missing;
    for (const auto& [id, waiting] : manager_->unknown()) {
      missing.emplace_back(id, fmt::format("{} did not re-register after the controller restarted",
                                           fmt::join(waiting, ", ")));
    }
    for (const auto& [id, reason] : missing) lose(id, reason);
  }
}

}  // namespace loom::controller
