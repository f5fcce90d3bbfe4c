#include "loom/controller/job_manager.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace loom::controller {

namespace {

std::unexpected<Error> not_found(JobId id) {
  return make_error(ErrorCode::kNotFound, fmt::format("job {} does not exist", id.value()));
}

bool ended(v1::JobState state) { return state >= v1::COMPLETED; }

sched::JobEnd end_kind(v1::JobState state) {
  switch (state) {
    case v1::COMPLETED: return sched::JobEnd::kCompleted;
    case v1::CANCELLED: return sched::JobEnd::kCancelled;
    case v1::TIMEOUT: return sched::JobEnd::kTimeout;
    case v1::NODE_FAIL: return sched::JobEnd::kNodeFail;
    default: return sched::JobEnd::kFailed;
  }
}

std::string placement_json(const sched::Cluster& cluster, const sched::Placement& placement) {
  nlohmann::json nodes = nlohmann::json::array();
  for (const sched::NodePlacement& np : placement.nodes) {
    nlohmann::json ranks = nlohmann::json::array();
    for (const sched::RankPlacement& r : np.ranks) {
      ranks.push_back({{"rank", r.rank}, {"cores", r.cores}, {"numa", r.numa}, {"memory_bytes", r.memory_bytes}});
    }
    nodes.push_back({{"node", cluster.name(np.node)},
                     {"ranks", ranks},
                     {"nvme", np.nvme ? nlohmann::json(cluster.nvme(np.node)[*np.nvme].name) : nlohmann::json(nullptr)},
                     {"bb_bytes", np.bb_bytes},
                     {"exclusive", np.exclusive}});
  }
  return nodes.dump();
}

}  // namespace

Result<sched::JobSpec> to_sched_spec(const v1::JobSpec& in) {
  sched::JobSpec out;
  out.name = in.name();
  out.user = in.user();
  out.account = in.account();
  out.tasks = in.tasks();
  out.nodes_min = in.nodes_min();
  out.nodes_max = in.nodes_max();
  out.tasks_per_node = in.tasks_per_node();
  out.cpus_per_task = in.cpus_per_task();
  out.mem_per_task = Bytes(in.mem_per_task());
  out.bb_per_node = Bytes(in.bb_per_node());
  out.walltime = std::chrono::seconds(in.walltime_s());
  out.priority = in.priority();
  out.exclusive = in.exclusive();
  out.spread_numa = in.spread_numa();
  out.stage_in.assign(in.stage_in().begin(), in.stage_in().end());
  out.stage_out.assign(in.stage_out().begin(), in.stage_out().end());
  for (const v1::Dependency& d : in.dependencies()) {
    out.dependencies.push_back({d.kind() == v1::Dependency::AFTER_OK ? sched::DependencyKind::kAfterOk
                                                                      : sched::DependencyKind::kAfterAny,
                                JobId(d.job())});
  }
  if (in.argv().empty()) return make_error(ErrorCode::kInvalidArgument, "nothing to run: the job has no command");
  LOOM_TRY(sched::validate(out));
  return out;
}

JobManager::JobManager(std::unique_ptr<Store> store, sched::Cluster& cluster, sched::SchedulerOptions options)
    : store_(std::move(store)), cluster_(cluster), scheduler_(cluster, std::move(options)) {}

Result<std::unique_ptr<JobManager>> JobManager::open(std::unique_ptr<Store> store, sched::Cluster& cluster,
                                                     sched::SchedulerOptions options, sched::Time) {
  std::vector<JobRow> rows = LOOM_TRY(store->load_jobs(false));
  auto manager = std::unique_ptr<JobManager>(new JobManager(std::move(store), cluster, std::move(options)));
  for (JobRow& row : rows) {
    const JobId id = row.id;
    if (ended(row.state)) manager->scheduler_.record_ended(id, end_kind(row.state));
    manager->jobs_.emplace(id, std::move(row));
  }
  // Pending jobs queue again in id order, so a dependency is always known before its
  // dependent. Running jobs wait for their agents to report them (crash recovery).
  for (const auto& [id, row] : manager->jobs_) {
    if (row.state != v1::PENDING) continue;
    sched::JobSpec spec = LOOM_TRY(to_sched_spec(row.spec));
    LOOM_TRY(with_context(manager->scheduler_.submit(id, std::move(spec), sched::Time(std::chrono::seconds(row.submit_time))),
                          fmt::format("requeueing job {}", id.value())));
  }
  return manager;
}

Result<JobId> JobManager::submit(const Caller& caller, v1::JobSpec spec, sched::Time now) {
  spec.set_user(caller.user);
  sched::JobSpec checked = LOOM_TRY(to_sched_spec(spec));
  LOOM_TRY(cluster_.check_feasible(sched::make_request(checked)));
  for (const sched::Dependency& d : checked.dependencies) {
    if (visible(caller, d.job) == nullptr) {
      return make_error(ErrorCode::kInvalidArgument, fmt::format("--dependency names job {}, which does not exist", d.job.value()));
    }
  }
  NewJob job{caller.user, caller.uid, now.time_since_epoch().count(), spec};
  const std::vector<JobId> ids = LOOM_TRY(store_->insert_jobs(std::span<const NewJob>(&job, 1)));
  const JobId id = ids.front();
  const Status queued = scheduler_.submit(id, std::move(checked), now);
  LOOM_CHECK(queued.has_value(), "a job checked before it was stored was refused by the scheduler");
  JobRow row;
  row.id = id;
  row.user = caller.user;
  row.uid = caller.uid;
  row.submit_time = job.submit_time;
  row.spec = std::move(spec);
  jobs_.emplace(id, std::move(row));
  return id;
}

const JobRow* JobManager::visible(const Caller& caller, JobId id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || (!caller.admin && it->second.uid != caller.uid)) return nullptr;
  return &it->second;
}

std::vector<JobRow> JobManager::list(const Caller& caller) const {
  std::vector<JobRow> out;
  for (const auto& [id, row] : jobs_) {
    if (caller.admin || row.uid == caller.uid) out.push_back(row);
  }
  return out;
}

Result<JobRow> JobManager::show(const Caller& caller, JobId id) const {
  const JobRow* row = visible(caller, id);
  if (row == nullptr) return not_found(id);
  return *row;
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
  }
  return {};
}

Status JobManager::cancel(const Caller& caller, JobId id, sched::Time now, std::vector<JobId>& kill) {
  const JobRow* row = visible(caller, id);
  if (row == nullptr) return not_found(id);
  if (ended(row->state)) {
    return make_error(ErrorCode::kFailedPrecondition,
                      fmt::format("job {} has already ended ({})", id.value(), v1::JobState_Name(row->state)));
  }
  const std::string reason = fmt::format("cancelled by {}", caller.user);
  if (row->state == v1::PENDING) {
    JobUpdate update;
    update.id = id;
    update.state = v1::CANCELLED;
    update.reason = reason;
    update.end_time = now.time_since_epoch().count();
    LOOM_TRY(apply(std::span<const JobUpdate>(&update, 1)));
    LOOM_TRY(scheduler_.cancel_pending(id));
    return {};
  }
  ending_.emplace(id, reason);
  kill.push_back(id);
  return {};
}

Result<std::vector<Launch>> JobManager::schedule(sched::Time now) {
  sched::PassResult pass = scheduler_.schedule(now);
  std::vector<JobUpdate> updates;
  for (JobId id : pass.never_satisfiable) {
    JobUpdate u;
    u.id = id;
    u.state = v1::CANCELLED;
    u.reason = "DependencyNeverSatisfied";
    u.end_time = now.time_since_epoch().count();
    updates.push_back(std::move(u));
  }
  for (const sched::Started& s : pass.started) {
    JobUpdate u;
    u.id = s.id;
    u.state = v1::RUNNING;
    u.start_time = now.time_since_epoch().count();
    u.placement = placement_json(cluster_, s.placement);
    updates.push_back(std::move(u));
  }
  if (updates.empty()) return std::vector<Launch>{};
  // One transaction for the whole pass: a group commit. If it fails the scheduler has
  // decided what the store does not hold, and the controller must stop (and recover).
  LOOM_TRY(with_context(apply(updates), "storing a scheduling pass"));
  std::vector<Launch> launches;
  for (sched::Started& s : pass.started) {
    const JobRow& row = jobs_.at(s.id);
    launches.push_back({s.id, row.user, row.uid, row.spec, std::move(s.placement)});
  }
  return launches;
}

std::vector<JobId> JobManager::past_walltime(sched::Time now) {
  std::vector<JobId> out;
  for (JobId id : scheduler_.past_walltime(now)) {
    if (ending_.emplace(id, "TimeLimit").second) out.push_back(id);
  }
  return out;
}

Status JobManager::finished(JobId id, int exit_code, std::optional<int> signal, sched::Time now) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.state != v1::RUNNING) {
    return make_error(ErrorCode::kFailedPrecondition, fmt::format("job {} is not running", id.value()));
  }
  JobUpdate u;
  u.id = id;
  u.exit_code = exit_code;
  u.signal = signal;
  u.end_time = now.time_since_epoch().count();
  if (auto ending = ending_.find(id); ending != ending_.end()) {
    u.state = ending->second == "TimeLimit" ? v1::TIMEOUT : v1::CANCELLED;
    u.reason = ending->second;
    ending_.erase(ending);
  } else if (exit_code == 0) {
    u.state = v1::COMPLETED;
  } else {
    u.state = v1::FAILED;
    u.reason = signal ? fmt::format("killed by signal {}", *signal) : "NonZeroExitCode";
  }
  LOOM_TRY(apply(std::span<const JobUpdate>(&u, 1)));  // stored before the resources are given back
  scheduler_.finished(id, end_kind(u.state), now);
  return {};
}

}  // namespace loom::controller
