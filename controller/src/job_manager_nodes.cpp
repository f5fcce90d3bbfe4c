// The job manager's nodes: their jobs found again after a restart or lost with them, their
// joining and draining; and the persistent burst buffers on them.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "job_states.hpp"
#include "loom/controller/job_manager.hpp"
#include "loom/hwtopo/json.hpp"

namespace loom::controller {

namespace {

nlohmann::json nvme_json(std::span<const sched::NvmeDevice> devices) {
  nlohmann::json out = nlohmann::json::array();
  for (const sched::NvmeDevice& d : devices) {
    out.push_back({{"path", d.name},
                   {"numa", d.numa ? nlohmann::json(*d.numa) : nlohmann::json(nullptr)},
                   {"capacity", d.capacity_bytes}});
  }
  return out;
}

}  // namespace

std::vector<std::string> JobManager::nodes_of(JobId id) const {
  std::vector<std::string> nodes;
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return nodes;
  for (const v1::PlacedNode& node : it->second.placement.nodes()) nodes.push_back(node.node());
  return nodes;
}

void JobManager::unreachable(const std::string& node, std::optional<std::string> detail) {
  if (detail) {
    unreachable_[node] = std::move(*detail);
  } else {
    unreachable_.erase(node);
  }
}

void JobManager::heard(JobId id, const std::string& node) {
  if (auto it = unknown_.find(id); it != unknown_.end()) it->second.erase(node);
}

Result<sched::Placement> JobManager::adopt(JobId id) {
  auto unknown = unknown_.find(id);
  LOOM_CHECK(unknown != unknown_.end() && unknown->second.empty(),
             "adopt() before every node of the job reported it");
  const JobRow& row = jobs_.at(id);
  sched::Placement placement;
  for (const v1::PlacedNode& node : row.placement.nodes()) {
    const std::optional<NodeId> found = cluster_.find(node.node());
    LOOM_CHECK(found.has_value(), "a node that reported a job is in the cluster");
    sched::NodePlacement np;
    np.node = *found;
    for (const v1::PlacedRank& r : node.ranks()) {
      np.ranks.push_back(
          {r.rank(), {r.cores().begin(), r.cores().end()}, r.numa(), r.memory_bytes()});
    }
    np.bb_bytes = node.bb_bytes();
    np.exclusive = node.exclusive();
    const auto devices = cluster_.nvme(np.node);
    for (std::size_t i = 0; i < devices.size(); ++i) {
      if (!node.nvme().empty() && devices[i].name == node.nvme())
        np.nvme = static_cast<unsigned>(i);
    }
    placement.nodes.push_back(std::move(np));
  }
  sched::JobSpec spec = LOOM_TRY(spec_of(row.spec, row.uid));
  LOOM_TRY(scheduler_.adopt(id, std::move(spec), placement,
                            sched::Time(std::chrono::seconds(row.start_time.value_or(0)))));
  unknown_.erase(unknown);
  if (on_change_) on_change_();
  return placement;
}

Status JobManager::lost(JobId id, const Reason& reason, sched::Time now, bool started) {
  auto it = jobs_.find(id);
  LOOM_CHECK(it != jobs_.end() && active(it->second.state), "lost() of a job that is not running");
  const bool was_unknown = unknown_.erase(id) > 0;
  // A job being killed ends as it was to: cancelled, or requeued when preempted.
  std::optional<Killing> killing;
  if (auto k = ending_.extract(id)) killing = std::move(k.mapped());
  JobUpdate u;
  u.id = id;
  if (killing && killing->state != v1::PENDING) {
    u.state = killing->state;
    u.reason = killing->reason;
    u.end_time = now.time_since_epoch().count();
  } else if (killing || it->second.spec.requeue() || !started) {
    u.state = v1::PENDING;
    u.reason = killing ? killing->reason : Reason{v1::REASON_REQUEUED, reason.text()};
    u.placement = v1::Placement();
  } else {
    u.state = v1::NODE_FAIL;
    u.reason = reason;
    u.end_time = now.time_since_epoch().count();
  }
  LOOM_TRY(apply(std::span<const JobUpdate>(&u, 1)));
  const sched::Time submitted(std::chrono::seconds(it->second.submit_time));
  if (u.state == v1::PENDING && was_unknown) {
    sched::JobSpec spec = LOOM_TRY(spec_of(it->second.spec, it->second.uid));
    LOOM_TRY(scheduler_.submit(id, std::move(spec), submitted));
  } else if (u.state == v1::PENDING) {
    scheduler_.requeue(id, submitted);
  } else if (was_unknown) {
    scheduler_.record_ended(id, end_kind(u.state));
  } else {
    scheduler_.finished(id, end_kind(u.state), now);
  }
  return {};
}

Result<NodeId> JobManager::admin_node(const Caller& caller, const std::string& node,
                                      std::string_view what) const {
  if (!caller.admin) {
    return make_error(
        ErrorCode::kPermissionDenied,
        fmt::format("only an administrator may {} a node ({} is not one)", what, caller.user));
  }
  const std::optional<NodeId> id = cluster_.find(node);
  if (!id) return make_error(ErrorCode::kNotFound, fmt::format("there is no node {}", node));
  return *id;
}

Status JobManager::drain(const Caller& caller, const std::string& node, const std::string& reason) {
  const NodeId id = LOOM_TRY(admin_node(caller, node, "drain"));
  if (reason.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "--reason is required: say why the node is drained");
  LOOM_TRY(store_->set_drain(node, reason));
  drained_[node] = reason;
  if (cluster_.state(id) == sched::NodeState::kUp)
    LOOM_TRY(cluster_.set_state(id, sched::NodeState::kDrain));
  if (on_change_) on_change_();
  return {};
}

Status JobManager::resume(const Caller& caller, const std::string& node) {
  const NodeId id = LOOM_TRY(admin_node(caller, node, "resume"));
  if (!drained_.contains(node))
    return make_error(ErrorCode::kFailedPrecondition, fmt::format("node {} is not drained", node));
  LOOM_TRY(store_->set_drain(node, std::nullopt));
  drained_.erase(node);
  if (cluster_.state(id) == sched::NodeState::kDrain)
    LOOM_TRY(cluster_.set_state(id, sched::NodeState::kUp));
  if (on_change_) on_change_();
  return {};
}

Result<NodeId> JobManager::joined(const std::string& name, const nlohmann::json& topology_json,
                                  std::vector<sched::NvmeDevice> nvme) {
  hwtopo::Topology topology = LOOM_TRY(hwtopo::topology_from_json(topology_json));
  std::optional<NodeId> node = cluster_.find(name);
  if (node && (cluster_.topology(*node) != topology ||
               nvme_json(cluster_.nvme(*node)) != nvme_json(nvme))) {
    return make_error(
        ErrorCode::kFailedPrecondition,
        fmt::format(
            "node {} registered before with another topology or other NVMe devices; the cluster's "
            "view of a node does not change under its jobs (give the changed node a new name)",
            name));
  }
  if (!node) {
    LOOM_TRY(store_->save_node(name, topology_json.dump(), nvme_json(nvme).dump()));
    node = cluster_.add_node(
        {name, std::make_shared<const hwtopo::Topology>(std::move(topology)), std::move(nvme)});
  }
  const bool drained = drained_.contains(name);
  LOOM_TRY(cluster_.set_state(*node, drained ? sched::NodeState::kDrain : sched::NodeState::kUp));
  return *node;
}

Result<sched::JobSpec> JobManager::spec_of(const v1::JobSpec& spec, std::uint32_t uid) const {
  sched::JobSpec out = LOOM_TRY(to_sched_spec(spec));
  if (!spec.bb_persistent().empty()) {
    const BufferRow* bound = buffer(uid, spec.bb_persistent());
    if (bound == nullptr) {
      return make_error(ErrorCode::kNotFound,
                        fmt::format("--bb-persistent {}: the burst buffer no longer exists",
                                    spec.bb_persistent()));
    }
    out.node = bound->node;
    LOOM_TRY(sched::validate(out));
  }
  return out;
}

Status JobManager::hold(const BufferRow& buffer, bool take, sched::Time now) {
  const std::optional<NodeId> node = cluster_.find(buffer.node);
  if (!node)
    return make_error(ErrorCode::kNotFound, fmt::format("there is no node {}", buffer.node));
  const auto devices = cluster_.nvme(*node);
  for (std::size_t i = 0; i < devices.size(); ++i) {
    if (devices[i].name != buffer.nvme) continue;
    sched::Placement held;
    held.nodes.push_back({*node, {}, static_cast<unsigned>(i), buffer.bytes, false});
    if (take) {
      if (cluster_.free(*node).nvme.at(i) < buffer.bytes) {
        return make_error(
            ErrorCode::kResourceExhausted,
            fmt::format("{} of {} is free on {}'s {}",
                        format_bytes(Bytes(cluster_.free(*node).nvme.at(i))),
                        format_bytes(Bytes(devices[i].capacity_bytes)), buffer.node, buffer.nvme));
      }
      cluster_.allocate(held);
    } else {
      cluster_.release(held);
    }
    if (!buffer.account.empty())
      scheduler_.hold_outside_jobs(buffer.account, {0, 0, buffer.bytes}, take, now);
    return {};
  }
  return make_error(ErrorCode::kNotFound,
                    fmt::format("node {} has no NVMe device {}", buffer.node, buffer.nvme));
}

Result<BufferRow> JobManager::create_buffer(const Caller& caller, const NewBuffer& ask,
                                            sched::Time now) {
  const auto& [name, bytes, node, asked_account] = ask;
  const bool valid = !name.empty() && name.size() <= 64 && std::ranges::all_of(name, [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
  });
  if (!valid)
    return make_error(
        ErrorCode::kInvalidArgument,
        fmt::format("burst buffer name \"{}\": 1 to 64 letters, digits, '-', '_' or '.'", name));
  if (bytes < (1u << 20))
    return make_error(ErrorCode::kInvalidArgument, "--size: a burst buffer needs at least 1 MiB");
  if (buffer(caller.uid, name) != nullptr)
    return make_error(ErrorCode::kAlreadyExists,
                      fmt::format("you have a burst buffer named {} already", name));
  const std::string account = LOOM_TRY(account_of(caller, asked_account));
  LOOM_TRY(nvme_within_limit(account, bytes));
  // The device with the most room: on the node named, or on any node that is up.
  std::optional<std::pair<NodeId, std::size_t>> best;
  for (std::size_t n = 0; n < cluster_.size(); ++n) {
    const NodeId id(static_cast<NodeId::rep>(n));
    if (node.empty() ? cluster_.state(id) != sched::NodeState::kUp : cluster_.name(id) != node)
      continue;
    for (std::size_t i = 0; i < cluster_.nvme(id).size(); ++i) {
      if (!best || cluster_.free(id).nvme[i] > cluster_.free(best->first).nvme[best->second])
        best = std::pair(id, i);
    }
  }
  if (!node.empty() && !cluster_.find(node))
    return make_error(ErrorCode::kNotFound, fmt::format("--node {}: there is no such node", node));
  if (!best || cluster_.free(best->first).nvme[best->second] < bytes) {
    return make_error(
        ErrorCode::kResourceExhausted,
        fmt::format("--size {}: no NVMe device {}has that much free", format_bytes(Bytes(bytes)),
                    node.empty() ? "" : "on " + node + " "));
  }
  // On the node, the owner's uid keeps two users' buffers of one name apart. '@' is in no
  // name, so no buffer made before (whose slice is its name) has the same.
  BufferRow row{name,
                fmt::format("{}@{}", caller.uid, name),
                caller.user,
                caller.uid,
                caller.gid,
                cluster_.name(best->first),
                cluster_.nvme(best->first)[best->second].name,
                bytes,
                now.time_since_epoch().count(),
                account};
  LOOM_TRY(store_->save_buffer(row));
  LOOM_TRY(hold(row, true, now));
  buffers_.emplace(std::pair(row.uid, name), row);
  return row;
}

JobUpdate JobManager::buffer_gone(JobId id, std::string detail, sched::Time now) {
  JobUpdate u;
  u.id = id;
  u.state = v1::CANCELLED;
  u.reason = {v1::REASON_BUFFER_DESTROYED, std::move(detail)};
  u.end_time = now.time_since_epoch().count();
  return u;
}

Result<BufferRow> JobManager::destroy_buffer(const Caller& caller, const std::string& owner,
                                             const std::string& name, sched::Time now) {
  const bool own = owner.empty() || owner == caller.user;
  if (!own && !caller.admin) {
    return make_error(ErrorCode::kPermissionDenied,
                      fmt::format("only an administrator may destroy another user's burst "
                                  "buffer ({} is not one)",
                                  caller.user));
  }
  auto it = std::ranges::find_if(buffers_, [&](const auto& entry) {
    const BufferRow& row = entry.second;
    return row.name == name && (own ? row.uid == caller.uid : row.user == owner);
  });
  if (it == buffers_.end()) {
    std::string holders;  // for an admin, who holds the name
    for (const auto& [key, row] : buffers_) {
      if (caller.admin && row.name == name) holders += fmt::format(" --user {}", row.user);
    }
    return make_error(
        ErrorCode::kNotFound,
        fmt::format("there is no burst buffer {} of {}{}", name, own ? "yours" : owner + "'s",
                    holders.empty() ? "" : " (held by:" + holders + ")"));
  }
  if (auto users = buffer_users(it->second); !users.empty()) {
    return make_error(
        ErrorCode::kFailedPrecondition,
        fmt::format("burst buffer {} is in use by job {}", name, users.front().value()));
  }
  // The jobs first: a crash before the buffer goes leaves them ended and the buffer there.
  std::vector<JobUpdate> updates;
  for (const auto& [id, job] : jobs_) {
    if (job.state == v1::PENDING && job.uid == it->second.uid && job.spec.bb_persistent() == name)
      updates.push_back(
          buffer_gone(id, fmt::format("--bb-persistent {} was destroyed", name), now));
  }
  if (!updates.empty()) {
    LOOM_TRY(apply(updates));
    for (const JobUpdate& u : updates) LOOM_TRY(scheduler_.cancel_pending(u.id));
  }
  LOOM_TRY(store_->delete_buffer(it->second.uid, name));
  BufferRow row = std::move(it->second);
  buffers_.erase(it);
  if (auto released = hold(row, false, now); !released)
    spdlog::error("burst buffer {} of {}: {}", name, row.user, released.error().to_string());
  return row;
}

std::vector<BufferRow> JobManager::buffers(const Caller& caller) const {
  std::vector<BufferRow> out;
  for (const auto& [key, row] : buffers_) {
    if (caller.admin || row.uid == caller.uid) out.push_back(row);
  }
  return out;
}

std::vector<BufferRow> JobManager::buffers_on(const std::string& node) const {
  std::vector<BufferRow> out;
  for (const auto& [key, row] : buffers_) {
    if (row.node == node) out.push_back(row);
  }
  return out;
}

const BufferRow* JobManager::buffer(std::uint32_t uid, const std::string& name) const {
  auto it = buffers_.find(std::pair(uid, name));
  return it == buffers_.end() ? nullptr : &it->second;
}

std::vector<JobId> JobManager::buffer_users(const BufferRow& buffer) const {
  std::vector<JobId> out;
  for (const auto& [id, row] : jobs_) {
    if (!ended(row.state) && row.state != v1::PENDING && row.uid == buffer.uid &&
        row.spec.bb_persistent() == buffer.name)
      out.push_back(id);
  }
  return out;
}

std::string JobManager::drain_reason(const std::string& node) const {
  auto it = drained_.find(node);
  return it == drained_.end() ? "" : it->second;
}

}  // namespace loom::controller
