#include "loom/controller/job_manager.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "job_spec.hpp"
#include "job_states.hpp"
#include "loom/burstbuffer/staging_spec.hpp"
#include "loom/common/bytes.hpp"
#include "loom/hwtopo/json.hpp"

namespace loom::controller {

namespace {

std::vector<sched::NvmeDevice> nvme_devices(const nlohmann::json& json) {
  std::vector<sched::NvmeDevice> out;
  for (const nlohmann::json& d : json) {
    out.push_back(
        {d["path"],
         d["numa"].is_null() ? std::nullopt : std::optional<unsigned>(d["numa"].get<unsigned>()),
         d["capacity"]});
  }
  return out;
}

v1::Placement placed(const sched::Cluster& cluster, const sched::Placement& placement) {
  v1::Placement out;
  for (const sched::NodePlacement& np : placement.nodes) {
    v1::PlacedNode& node = *out.add_nodes();
    node.set_node(cluster.name(np.node));
    for (const sched::RankPlacement& r : np.ranks) {
      v1::PlacedRank& rank = *node.add_ranks();
      rank.set_rank(r.rank);
      rank.mutable_cores()->Add(r.cores.begin(), r.cores.end());
      rank.set_numa(r.numa);
      rank.set_memory_bytes(r.memory_bytes);
    }
    if (np.nvme) node.set_nvme(cluster.nvme(np.node)[*np.nvme].name);
    node.set_bb_bytes(np.bb_bytes);
    node.set_exclusive(np.exclusive);
  }
  return out;
}

}  // namespace

JobManager::JobManager(std::unique_ptr<Store> store, sched::Cluster& cluster,
                       sched::SchedulerOptions options, std::function<void()> on_change)
    : store_(std::move(store)),
      cluster_(cluster),
      scheduler_(cluster, std::move(options)),
      on_change_(std::move(on_change)) {}

Result<std::unique_ptr<JobManager>> JobManager::open(
    std::unique_ptr<Store> store, sched::Cluster& cluster, sched::SchedulerOptions options,
    sched::Time now, std::function<void()> on_change, std::int64_t ended_since) {
  std::vector<JobRow> rows = LOOM_TRY(store->load_jobs(ended_since));
  const std::vector<NodeRow> nodes = LOOM_TRY(store->load_nodes());
  const StoredUsage usage = LOOM_TRY(store->load_usage());
  auto manager = std::unique_ptr<JobManager>(
      new JobManager(std::move(store), cluster, std::move(options), std::move(on_change)));
  if (!usage.averages.empty())
    manager->scheduler_.fair_share().restore(usage.averages,
                                             sched::Time(std::chrono::seconds(usage.at)));
  // The nodes known before: in the cluster from the start, DOWN until their agents return,
  // so that jobs can be submitted (and found again) before they do.
  for (const NodeRow& node : nodes) {
    auto topology =
        hwtopo::topology_from_json(nlohmann::json::parse(node.topology_json, nullptr, false));
    LOOM_TRY(with_context(topology, fmt::format("node {} in the state", node.name)));
    const nlohmann::json nvme = nlohmann::json::parse(node.nvme_json, nullptr, false);
    const NodeId id =
        cluster.add_node({node.name, std::make_shared<const hwtopo::Topology>(std::move(*topology)),
                          nvme.is_array() ? nvme_devices(nvme) : std::vector<sched::NvmeDevice>{}});
    LOOM_TRY(cluster.set_state(id, sched::NodeState::kDown));
    if (node.drain_reason) manager->drained_[node.name] = *node.drain_reason;
  }
  for (BufferRow& buffer : LOOM_TRY(manager->store_->load_buffers())) {
    if (auto held = manager->hold(buffer, true, now); !held) {
      spdlog::error("burst buffer {}: {}; its bytes are not accounted", buffer.name,
                    held.error().to_string());
    }
    std::pair key(buffer.uid, buffer.name);
    manager->buffers_.emplace(std::move(key), std::move(buffer));
  }
  for (JobRow& row : rows) {
    const JobId id = row.id;
    LOOM_TRY(with_context(burstbuffer::lift_legacy_staging(row.spec),
                          fmt::format("job {} in the state", id.value())));
    if (ended(row.state)) {
      manager->scheduler_.record_ended(id, end_kind(row.state));
      manager->ended_as_shown(row);
    }
    manager->jobs_.emplace(id, std::move(row));
  }
  // A state from before buffers were their owners' may bind a pending job to a name only
  // another user holds: it is not the job's buffer.
  std::vector<JobUpdate> unbound;
  for (const auto& [id, row] : manager->jobs_) {
    if (row.state == v1::PENDING && !row.spec.bb_persistent().empty() &&
        manager->buffer(row.uid, row.spec.bb_persistent()) == nullptr)
      unbound.push_back(buffer_gone(id,
                                    fmt::format("--bb-persistent {}: {} has no burst buffer of "
                                                "that name",
                                                row.spec.bb_persistent(), row.user),
                                    now));
  }
  LOOM_TRY(manager->apply(unbound));
  for (const JobUpdate& u : unbound) manager->scheduler_.record_ended(u.id, end_kind(u.state));
  // Pending jobs queue again in id order, so a dependency is always known before its
  // dependent. Running jobs wait for their agents to report them (crash recovery).
  for (const auto& [id, row] : manager->jobs_) {
    if (active(row.state)) {
      const std::vector<std::string> nodes = manager->nodes_of(id);
      manager->unknown_[id] = std::set<std::string>(nodes.begin(), nodes.end());
      manager->scheduler_.await(id);
      // Being killed when the controller stopped: it ends as it was to, once found (the
      // core sends the kill again) or its nodes report it gone.
      if (row.killing) manager->ending_.emplace(id, *row.killing);
    }
    if (row.state != v1::PENDING) continue;
    sched::JobSpec spec = LOOM_TRY(manager->spec_of(row.spec, row.uid));
    LOOM_TRY(
        with_context(manager->scheduler_.submit(id, std::move(spec),
                                                sched::Time(std::chrono::seconds(row.submit_time))),
                     fmt::format("requeueing job {}", id.value())));
  }
  return manager;
}

Result<std::vector<JobId>> JobManager::submit(const Caller& caller, v1::JobSpec spec,
                                              std::uint32_t array_size, sched::Time now) {
  if (array_size > sched::kMaxArraySize) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("array_size {}: an array holds at most {} jobs", array_size,
                                  sched::kMaxArraySize));
  }
  LOOM_TRY(burstbuffer::lift_legacy_staging(spec));  // from a Loom 0.1 client
  LOOM_TRY(check_bounds(spec));
  if (spec.has_umask() && spec.umask() > 0777) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("umask {:o}: a umask is at most 0777", spec.umask()));
  }
  if (!v1::MpiLaunch_IsValid(spec.mpi_launch()) ||
      (!spec.mpi() && spec.mpi_launch() != v1::MPI_LAUNCH_DEFAULT)) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("mpi_launch {}: --mpi takes pmix or mpirun, for an MPI job",
                                  static_cast<int>(spec.mpi_launch())));
  }
  spec.set_user(caller.user);
  spec.set_account(LOOM_TRY(account_of(caller, spec.account())));
  LOOM_TRY(may_use_qos(caller, spec.qos()));
  if (!spec.bb_persistent().empty() && buffer(caller.uid, spec.bb_persistent()) == nullptr) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--bb-persistent {}: there is no such burst buffer of yours "
                                  "(loom bb list)",
                                  spec.bb_persistent()));
  }
  const sched::JobSpec checked = LOOM_TRY(spec_of(spec, caller.uid));
  LOOM_TRY(cluster_.check_feasible(sched::make_request(checked)));
  LOOM_TRY(within_limits(checked, std::max<std::uint32_t>(array_size, 1)));
  for (const sched::Dependency& d : checked.dependencies) {
    if (visible(caller, d.job) == nullptr && !LOOM_TRY(stored(caller, d.job, std::nullopt))) {
      return make_error(
          ErrorCode::kInvalidArgument,
          fmt::format("--dependency names job {}, which does not exist", d.job.value()));
    }
  }
  const std::vector<NewJob> jobs(
      std::max<std::uint32_t>(array_size, 1),
      NewJob{caller.user, caller.uid, now.time_since_epoch().count(), spec});
  std::vector<JobId> ids = LOOM_TRY(store_->insert_jobs(jobs, array_size > 0));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const Status queued = scheduler_.submit(ids[i], checked, now);
    LOOM_CHECK(queued.has_value(),
               "a job checked before it was stored was refused by the scheduler");
    JobRow row;
    row.id = ids[i];
    row.user = caller.user;
    row.uid = caller.uid;
    row.submit_time = jobs[i].submit_time;
    row.spec = spec;
    if (array_size > 0) {
      row.array_job = ids.front();
      row.array_index = static_cast<std::uint32_t>(i + 1);
    }
    jobs_.emplace(ids[i], std::move(row));
  }
  if (on_change_) on_change_();
  return ids;
}

void JobManager::set_policy(sched::SchedulerOptions options) {
  scheduler_.set_policy(std::move(options));
  if (on_change_) on_change_();  // a pass, under the new policy
}

Status JobManager::apply(std::span<const JobUpdate> updates) {
  LOOM_TRY(store_->update_jobs(updates));
  // The cache follows the store, field for field as update_jobs sets them.
  for (const JobUpdate& update : updates) {
    JobRow& row = jobs_.at(update.id);
    row.state = update.state;
    row.reason = update.reason;
    if (update.exit_code) row.exit_code = update.exit_code;
    if (update.signal) row.signal = update.signal;
    if (update.start_time) row.start_time = update.start_time;
    if (update.end_time) row.end_time = update.end_time;
    if (update.placement) row.placement = *update.placement;
    if (update.staging) row.staging.ParseFromString(*update.staging);
    if (update.usage) row.usage.emplace().ParseFromString(*update.usage);
    if (update.killing) row.killing = update.killing;
    if (row.state == v1::PENDING) row.killing.reset();
    if (ended(row.state)) {
      counted_.ended(row);
      ended_as_shown(row);
    }
  }
  if (on_change_) on_change_();
  return {};
}

Status JobManager::cancel(const Caller& caller, JobId id, std::optional<std::uint32_t> index,
                          sched::Time now, std::vector<JobId>& kill) {
  const JobRow* row = visible(caller, id, index);
  if (row == nullptr) {
    std::optional<JobRow> old = LOOM_TRY(stored(caller, id, index));
    if (!old) return not_found(id, index);
    if (old->array_job != id || index) {  // not an array's id: the job itself, ended
      return make_error(ErrorCode::kFailedPrecondition,
                        fmt::format("job {} has already ended ({})", old->id.value(),
                                    v1::JobState_Name(old->state)));
    }
  }
  std::vector<const JobRow*> targets;
  if (row != nullptr) targets.push_back(row);
  if (!index && (row == nullptr || row->array_job == id)) {  // the array's id: every element
    targets.clear();
    // Elements that left memory (ended) leave gaps; those still here follow from the id.
    for (auto it = jobs_.lower_bound(id); it != jobs_.end() && it->second.array_job == id; ++it)
      targets.push_back(&it->second);
  }
  const auto live = std::erase_if(targets, [](const JobRow* r) { return ended(r->state); });
  if (targets.empty()) {
    return make_error(ErrorCode::kFailedPrecondition,
                      row == nullptr || live > 1
                          ? fmt::format("every job of array {} has already ended", id.value())
                          : fmt::format("job {} has already ended ({})", row->id.value(),
                                        v1::JobState_Name(row->state)));
  }
  const Reason reason{v1::REASON_CANCELLED, caller.user};
  std::vector<JobUpdate> updates;
  for (const JobRow* target : targets) {
    if (target->state != v1::PENDING) {
      auto [killed, fresh] = ending_.try_emplace(target->id, Killing{v1::CANCELLED, reason});
      if (!fresh && killed->second.state == v1::PENDING) {  // a cancel wins over a requeue
        killed->second = Killing{v1::CANCELLED, reason};
        fresh = true;
      }
      if (fresh) updates.push_back(killing(*target, killed->second));
      kill.push_back(target->id);
      continue;
    }
    JobUpdate update;
    update.id = target->id;
    update.state = v1::CANCELLED;
    update.reason = reason;
    update.end_time = now.time_since_epoch().count();
    updates.push_back(std::move(update));
  }
  if (updates.empty()) return {};
  LOOM_TRY(apply(updates));
  for (const JobUpdate& update : updates) {
    if (!update.killing) LOOM_TRY(scheduler_.cancel_pending(update.id));
  }
  return {};
}

JobUpdate JobManager::killing(const JobRow& row, const Killing& how) {
  JobUpdate u;
  u.id = row.id;
  u.state = row.state;
  u.reason = row.reason;
  u.killing = how;
  return u;
}

Status JobManager::started(const std::string& node, const v1::JobStarted& report) {
  const JobId id(report.job());
  auto it = jobs_.find(id);
  if (it == jobs_.end() || !active(it->second.state)) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("job {} is not running", id.value()));
  }
  for (v1::PlacedNode& placed_node : *it->second.placement.mutable_nodes()) {
    if (placed_node.node() != node) continue;
    for (v1::PlacedRank& rank : *placed_node.mutable_ranks()) {
      for (const v1::RankBinding& bound : report.ranks()) {
        if (bound.rank() == rank.rank()) *rank.mutable_bound() = bound;
      }
    }
  }
  // Not a transition: kept in memory, and stored with the job's end (one fsync fewer per
  // job). A controller that restarts meanwhile has it again when the agents re-register:
  // they report their running jobs' starts again.
  if (on_change_) on_change_();
  return {};
}

Result<std::vector<Launch>> JobManager::schedule(sched::Time now) {
  const auto began = std::chrono::steady_clock::now();
  sched::PassResult pass = scheduler_.schedule(now);
  counted_.pass_seconds.observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
  LOOM_TRY(save_usage(now));
  std::vector<JobUpdate> updates;
  for (JobId id : pass.never_satisfiable) {
    JobUpdate u;
    u.id = id;
    u.state = v1::CANCELLED;
    u.reason = Reason(v1::REASON_DEPENDENCY_NEVER_SATISFIED);
    u.end_time = now.time_since_epoch().count();
    updates.push_back(std::move(u));
  }
  for (const sched::Preemption& p : pass.preempted) {
    const Reason why{v1::REASON_PREEMPTED, std::to_string(p.by.value())};
    if (ending_.emplace(p.victim, Killing{p.requeue ? v1::PENDING : v1::CANCELLED, why}).second) {
      updates.push_back(killing(jobs_.at(p.victim), ending_.at(p.victim)));
      preempted_.push_back(p);
    }
  }
  for (const sched::Started& s : pass.started) {
    JobUpdate u;
    u.id = s.id;
    u.state = jobs_.at(s.id).spec.stage_in_files().empty() ? v1::RUNNING : v1::STAGING_IN;
    u.start_time = now.time_since_epoch().count();
    u.placement = placed(cluster_, s.placement);
    counted_.queue_wait_seconds.observe(
        static_cast<double>(*u.start_time - jobs_.at(s.id).submit_time));
    updates.push_back(std::move(u));
  }
  if (updates.empty()) return std::vector<Launch>{};
  // One transaction for the whole pass: a group commit. If it fails the scheduler has
  // decided what the store does not hold, and the controller must stop (and recover).
  LOOM_TRY(with_context(apply(updates), "storing a scheduling pass"));
  std::vector<Launch> launches;
  for (sched::Started& s : pass.started) {
    const JobRow& row = jobs_.at(s.id);
    launches.push_back({s.id, row.user, row.uid, row.spec, std::move(s.placement), row.array_job,
                        row.array_index});
  }
  return launches;
}

Status JobManager::save_usage(sched::Time now) {
  // Once a minute at most: a restart loses at most the last minute of usage.
  constexpr std::chrono::seconds kEvery{60};
  if (usage_saved_ && now - *usage_saved_ < kEvery) return {};
  const sched::FairShare& share = scheduler_.fair_share();
  if (!share.advanced()) return {};
  LOOM_TRY(with_context(
      store_->save_usage({share.averages(), share.advanced()->time_since_epoch().count()}),
      "storing the accounts' fair-share usage"));
  usage_saved_ = now;
  return {};
}

std::vector<JobId> JobManager::past_walltime(sched::Time now) {
  std::vector<JobId> out;
  for (JobId id : scheduler_.past_walltime(now)) {
    // Its ranks are done and their results on their way out: a kill would lose them.
    if (auto it = jobs_.find(id); it != jobs_.end() && it->second.state == v1::STAGING_OUT)
      continue;
    if (ending_.emplace(id, Killing{v1::TIMEOUT, Reason(v1::REASON_TIME_LIMIT)}).second)
      out.push_back(id);
  }
  return out;
}

Status JobManager::ran(JobId id, sched::Time now) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.state != v1::STAGING_IN) return {};
  JobUpdate u;
  u.id = id;
  u.state = v1::RUNNING;
  // Stored with the state: a controller that restarts counts the walltime from here too.
  u.start_time = now.time_since_epoch().count();
  LOOM_TRY(apply(std::span<const JobUpdate>(&u, 1)));
  scheduler_.start_clock(id, now);
  return {};
}

Status JobManager::staged(JobId id, const std::string& node, const v1::StagingReport& report) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || !active(it->second.state)) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("job {} is not running", id.value()));
  }
  // Progress is kept in memory, and stored with the job's end: a restart shows the last
  // state stored, and agents report again.
  v1::StagingReport& staging = it->second.staging;
  auto* files = staging.mutable_files();
  files->erase(
      std::ranges::remove_if(*files, [&](const v1::StagingFile& f) { return f.node() == node; })
          .begin(),
      files->end());
  for (const v1::StagingFile& f : report.files()) {
    v1::StagingFile* added = staging.add_files();
    *added = f;
    added->set_node(node);  // the reporting node's, whatever the report says
  }
  if (report.out() && it->second.state == v1::RUNNING) {
    JobUpdate u;
    u.id = id;
    u.state = v1::STAGING_OUT;
    return apply(std::span<const JobUpdate>(&u, 1));
  }
  if (on_change_) on_change_();
  return {};
}

Status JobManager::finished(JobId id, const Ending& ending, sched::Time now) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || !active(it->second.state)) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("job {} is not running", id.value()));
  }
  if (auto killed = ending_.find(id);
      killed != ending_.end() && killed->second.state == v1::PENDING) {
    // Preempted, to be requeued: PENDING again with its id, as it was submitted.
    JobUpdate u;
    u.id = id;
    u.state = v1::PENDING;
    u.reason = killed->second.reason;
    u.placement = v1::Placement();
    ending_.erase(killed);
    LOOM_TRY(apply(std::span<const JobUpdate>(&u, 1)));
    scheduler_.requeue(id, sched::Time(std::chrono::seconds(it->second.submit_time)));
    return {};
  }
  JobUpdate u;
  u.id = id;
  u.exit_code = ending.exit_code;
  u.signal = ending.signal;
  u.placement = it->second.placement;  // with the binding the agents reported
  if (it->second.staging.files_size() > 0) u.staging = it->second.staging.SerializeAsString();
  u.usage = ending.usage.SerializeAsString();
  u.end_time = now.time_since_epoch().count();
  if (auto killed = ending_.find(id); killed != ending_.end()) {
    u.state = killed->second.state;
    u.reason = killed->second.reason;
    ending_.erase(killed);
  } else if (ending.exit_code == 0 && ending.failure.code == v1::REASON_NONE) {
    u.state = v1::COMPLETED;
  } else {
    u.state = v1::FAILED;
    u.reason = ending.failure.code != v1::REASON_NONE ? ending.failure
               : ending.out_of_memory                 ? Reason(v1::REASON_OUT_OF_MEMORY)
               : ending.signal ? Reason{v1::REASON_SIGNAL, std::to_string(*ending.signal)}
                               : Reason(v1::REASON_NON_ZERO_EXIT_CODE);
  }
  LOOM_TRY(apply(std::span<const JobUpdate>(&u, 1)));  // stored before the resources are given back
  scheduler_.finished(id, end_kind(u.state), now);
  return {};
}

}  // namespace loom::controller
