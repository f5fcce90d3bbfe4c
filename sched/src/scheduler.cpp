#include "loom/sched/scheduler.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <tuple>

namespace loom::sched {

namespace {

Resources usage_of(const Placement& placement) {
  Resources r;
  for (const NodePlacement& np : placement.nodes) {
    for (const RankPlacement& rank : np.ranks) {
      r.cores += rank.cores.size();
      r.memory += rank.memory_bytes;
    }
    r.nvme += np.bb_bytes;
  }
  return r;
}

}  // namespace

Scheduler::Scheduler(Cluster& cluster, SchedulerOptions options) : cluster_(cluster) {
  set_policy(std::move(options));
}

void Scheduler::set_policy(SchedulerOptions options) {
  LOOM_CHECK(options.order != nullptr && options.backfill != nullptr,
             "a scheduler needs a queue order and a backfill policy");
  options_ = std::move(options);
  accounts_.clear();
  std::map<std::string, double> weights;
  for (const Config::Account& account : options_.accounts) {
    accounts_.emplace(account.name, &account);
    weights.emplace(account.name, static_cast<double>(account.shares));
  }
  fair_share_.set_weights(weights);
  fair_share_.set_half_life(options_.fair_share_half_life);
  qos_.clear();
  for (const Config::Qos& q : options_.qos) qos_.emplace(q.name, &q);
}

const Config::Qos* Scheduler::qos(const std::string& name) const {
  auto it = qos_.find(name.empty() ? "normal" : name);
  return it == qos_.end() ? nullptr : it->second;
}

std::uint64_t Scheduler::priority_of(const std::string& name) const {
  const Config::Qos* q = qos(name);
  return q == nullptr ? 0 : q->priority;
}

bool Scheduler::awaits_preempted(JobId id) {
  auto it = preempting_.find(id);
  if (it == preempting_.end()) return false;
  std::erase_if(it->second, [this](JobId victim) { return !running_.contains(victim); });
  if (!it->second.empty()) return true;
  preempting_.erase(it);
  return false;
}

bool Scheduler::preempt(const QueuedJob& job, Time now, PassResult& result) {
  const Config::Qos* mine = qos(job.spec->qos);
  const bool by_qos = mine != nullptr && !mine->preempt.empty();
  const bool by_remaining = options_.order->preempts_longer();
  if (!by_qos && !by_remaining) return false;
  // (QOS priority; minus its start, the youngest first among equals, or under SRTF minus
  // its deadline, the most walltime left first; id) of each candidate.
  std::vector<std::tuple<std::uint64_t, std::int64_t, JobId>> candidates;
  for (const auto& [id, running] : running_) {
    if (preempted_.contains(id)) continue;
    const std::string& theirs = running.spec.qos.empty() ? "normal" : running.spec.qos;
    if (by_qos && std::ranges::find(mine->preempt, theirs) != mine->preempt.end()) {
      candidates.emplace_back(priority_of(theirs), -running.start.time_since_epoch().count(), id);
    } else if (by_remaining && running.deadline - now > job.spec->walltime &&
               priority_of(theirs) <= priority_of(job.spec->qos)) {
      candidates.emplace_back(priority_of(theirs), -running.deadline.time_since_epoch().count(),
                              id);
    }
  }
  std::ranges::sort(candidates);
  // What-ifs on the cluster itself: victims' placements are released, then taken back.
  std::vector<JobId> victims;
  bool fits = false;
  for (const auto& candidate : candidates) {
    const JobId id = std::get<2>(candidate);
    cluster_.release(running_.at(id).placement);
    victims.push_back(id);
    fits = cluster_.place(*job.request).has_value();
    if (fits) break;
  }
  if (fits) {  // the fewest: a victim whose room is not needed is spared
    for (auto it = victims.begin(); it != victims.end();) {
      cluster_.allocate(running_.at(*it).placement);
      if (cluster_.place(*job.request)) {
        it = victims.erase(it);
      } else {
        cluster_.release(running_.at(*it).placement);
        ++it;
      }
    }
  }
  for (JobId id : victims) cluster_.allocate(running_.at(id).placement);
  if (!fits) return false;
  for (JobId id : victims) {
    preempted_.insert(id);
    result.preempted.push_back({id, job.id, !by_qos || mine->requeue});
  }
  preempting_[job.id] = std::set<JobId>(victims.begin(), victims.end());
  return true;
}

const Config::Account* Scheduler::account(const std::string& name) const {
  auto it = accounts_.find(name);
  return it == accounts_.end() ? nullptr : it->second;
}

AccountJobs Scheduler::jobs_of(const std::string& account) const {
  auto it = account_jobs_.find(account);
  return it == account_jobs_.end() ? AccountJobs{} : it->second;
}

std::optional<std::string> Scheduler::held_back(JobId id) const {
  auto it = held_back_.find(id);
  if (it == held_back_.end()) return std::nullopt;
  return it->second;
}

void Scheduler::count(const std::string& account, std::uint64_t AccountJobs::*which, int delta) {
  AccountJobs& jobs = account_jobs_[account];
  if (delta > 0) {
    ++(jobs.*which);
  } else {
    LOOM_CHECK(jobs.*which > 0, "an account's job counted out twice");
    --(jobs.*which);
  }
  if (jobs.pending == 0 && jobs.running == 0) account_jobs_.erase(account);
}

std::optional<std::string> Scheduler::past_limit(const std::string& name, Resources more) const {
  const Config::Account* configured = account(name);
  if (configured == nullptr) return std::nullopt;
  const Config::AccountLimits& limits = configured->limits;
  const Resources held = fair_share_.allocation(name);
  const std::uint64_t running = jobs_of(name).running;
  if (limits.running_jobs && running + 1 > *limits.running_jobs)
    return fmt::format("running jobs {} of {}", running, *limits.running_jobs);
  if (limits.cores && held.cores + more.cores > *limits.cores)
    return fmt::format("cores {} of {} held", held.cores, *limits.cores);
  if (limits.memory && held.memory + more.memory > *limits.memory)
    return fmt::format("memory {} of {} held", format_bytes(Bytes(held.memory)),
                       format_bytes(Bytes(*limits.memory)));
  if (limits.nvme && held.nvme + more.nvme > *limits.nvme)
    return fmt::format("NVMe {} of {} held", format_bytes(Bytes(held.nvme)),
                       format_bytes(Bytes(*limits.nvme)));
  return std::nullopt;
}

Status Scheduler::submit(JobId id, JobSpec spec, Time now) {
  if (pending_.contains(id) || running_.contains(id) || ended_.contains(id)) {
    return make_error(ErrorCode::kAlreadyExists, fmt::format("job {} already exists", id.value()));
  }
  LOOM_TRY(validate(spec));
  Request request = make_request(spec);
  LOOM_TRY(cluster_.check_feasible(request));
  for (const Dependency& d : spec.dependencies) {
    if (!pending_.contains(d.job) && !running_.contains(d.job) && !ended_.contains(d.job) &&
        !awaited_.contains(d.job)) {
      return make_error(
          ErrorCode::kInvalidArgument,
          fmt::format("--dependency names job {}, which does not exist", d.job.value()));
    }
  }
  awaited_.erase(id);  // a job that was running when the controller stopped, queued again
  count(spec.account, &AccountJobs::pending, +1);
  pending_.emplace(id, Pending{std::move(spec), request, now});
  return {};
}

Status Scheduler::cancel_pending(JobId id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) {
    return make_error(ErrorCode::kNotFound, fmt::format("job {} is not pending", id.value()));
  }
  count(it->second.spec.account, &AccountJobs::pending, -1);
  pending_.erase(it);
  held_back_.erase(id);
  preempting_.erase(id);
  ended_.emplace(id, JobEnd::kCancelled);
  return {};
}

Scheduler::Readiness Scheduler::readiness(const JobSpec& spec) const {
  Readiness readiness = Readiness::kReady;
  for (const Dependency& d : spec.dependencies) {
    auto it = ended_.find(d.job);
    if (it == ended_.end()) {
      readiness = Readiness::kWaiting;
    } else if (d.kind == DependencyKind::kAfterOk && it->second != JobEnd::kCompleted) {
      return Readiness::kNever;
    }
  }
  return readiness;
}

void Scheduler::start(JobId id, Placement placement, Time now, PassResult& result) {
  auto node = pending_.extract(id);
  const Pending& job = node.mapped();
  cluster_.allocate(placement);
  const Time deadline = now + job.spec.walltime;
  Resources usage = usage_of(placement);
  fair_share_.allocated(job.spec.account, usage);
  count(job.spec.account, &AccountJobs::pending, -1);
  count(job.spec.account, &AccountJobs::running, +1);
  deadlines_.emplace(deadline, id);
  result.started.push_back({id, placement, now, deadline});
  running_.emplace(id, Running{job.spec, std::move(placement), usage, deadline, now});
  preempting_.erase(id);
}

PassResult Scheduler::schedule(Time now) {
  PassResult result;
  fair_share_.advance(now);
  fair_share_.set_total({cluster_.total_cores(), cluster_.total_memory(), cluster_.total_nvme()});
  held_back_.clear();
  std::vector<QueuedJob> queue;
  queue.reserve(pending_.size());
  for (auto it = pending_.begin(); it != pending_.end();) {
    switch (readiness(it->second.spec)) {
      case Readiness::kReady:
        queue.push_back({it->first, &it->second.spec, &it->second.request, it->second.submit});
        ++it;
        break;
      case Readiness::kWaiting:
        ++it;
        break;
      case Readiness::kNever:
        result.never_satisfiable.push_back(it->first);
        ended_.emplace(it->first, JobEnd::kCancelled);
        count(it->second.spec.account, &AccountJobs::pending, -1);
        it = pending_.erase(it);
        break;
    }
  }
  options_.order->sort(queue, {now, cluster_.total_cores(), &fair_share_});
  if (!qos_.empty()) {  // QOS are tiers above the order, as Slurm's partitions' PriorityTier
    std::ranges::stable_sort(queue, std::greater{},
                             [this](const QueuedJob& j) { return priority_of(j.spec->qos); });
  }

  // Opened at the first blocked job, so that it sees every job running by then, those
  // started earlier in this pass included.
  std::vector<RunningJob> running;
  std::unique_ptr<BackfillPass> backfill;
  for (const QueuedJob& job : queue) {
    // A job its account's limits hold back neither starts nor blocks the jobs after it:
    // checked on what its request holds at least, then on where it would run.
    const std::string& account = job.spec->account;
    if (auto why = past_limit(account, requested(*job.request))) {
      held_back_.emplace(job.id, std::move(*why));
      continue;
    }
    std::optional<Placement> placement = cluster_.place(*job.request);
    if (placement) {
      if (auto why = past_limit(account, usage_of(*placement))) {
        held_back_.emplace(job.id, std::move(*why));
        continue;
      }
    }
    if (!placement) {
      // Waiting for the jobs it preempted to end, or preempting some now: nothing after it
      // starts meanwhile (at most controller.kill_grace), or it would take the room it counts
      // on, its victims' and what is free.
      if (awaits_preempted(job.id) || preempt(job, now, result)) break;
      if (!backfill) {
        running.reserve(running_.size());
        for (const auto& [deadline, id] : deadlines_)
          running.push_back({id, &running_.at(id).placement, deadline});
        backfill = options_.backfill->begin(cluster_, running, now);
      }
      if (!backfill->blocked(job)) break;
      continue;
    }
    if (backfill && !backfill->may_start(job, *placement)) continue;
    start(job.id, std::move(*placement), now, result);
  }
  if (backfill) result.reservations = backfill->reservations();
  return result;
}

void Scheduler::finished(JobId id, JobEnd end, Time now) {
  auto it = running_.find(id);
  LOOM_CHECK(it != running_.end(),
             fmt::format("finished() for job {}, which is not running", id.value()));
  fair_share_.advance(now);
  cluster_.release(it->second.placement);
  fair_share_.unallocated(it->second.spec.account, it->second.usage);
  count(it->second.spec.account, &AccountJobs::running, -1);
  preempted_.erase(id);
  deadlines_.erase({it->second.deadline, id});
  running_.erase(it);
  ended_.emplace(id, end);
}

Status Scheduler::adopt(JobId id, JobSpec spec, Placement placement, Time started) {
  if (pending_.contains(id) || running_.contains(id) || ended_.contains(id)) {
    return make_error(ErrorCode::kAlreadyExists,
                      fmt::format("job {} is known already", id.value()));
  }
  for (const NodePlacement& np : placement.nodes) {
    NodeCapacity free = cluster_.free(np.node);
    NodeCapacity after = free;
    cluster_.take(after, np);
    for (std::size_t d = 0; d < free.domains.size(); ++d) {
      if (after.domains[d].cores > free.domains[d].cores ||
          after.domains[d].memory > free.domains[d].memory) {
        return make_error(ErrorCode::kFailedPrecondition,
                          fmt::format("job {}'s placement on {} overlaps what is held", id.value(),
                                      cluster_.name(np.node)));
      }
    }
    for (const RankPlacement& r : np.ranks) {
      for (unsigned core : r.cores) {
        const auto& domains = cluster_.topology(np.node).numa_domains;
        bool is_free = false;
        for (std::size_t d = 0, with_cores = 0; d < domains.size(); ++d) {
          if (domains[d].memory_only()) continue;
          const std::vector<unsigned> cores = cluster_.free_cores(np.node, with_cores++);
          is_free = is_free || std::ranges::find(cores, core) != cores.end();
        }
        if (!is_free) {
          return make_error(ErrorCode::kFailedPrecondition,
                            fmt::format("job {}'s core {} on {} is held already", id.value(), core,
                                        cluster_.name(np.node)));
        }
      }
    }
  }
  awaited_.erase(id);
  cluster_.allocate(placement);
  const Time deadline = started + spec.walltime;
  Resources usage = usage_of(placement);
  fair_share_.allocated(spec.account, usage);
  count(spec.account, &AccountJobs::running, +1);
  deadlines_.emplace(deadline, id);
  running_.emplace(id, Running{std::move(spec), std::move(placement), usage, deadline, started});
  return {};
}

void Scheduler::start_clock(JobId id, Time now) {
  auto it = running_.find(id);
  LOOM_CHECK(it != running_.end(),
             fmt::format("start_clock() for job {}, which is not running", id.value()));
  deadlines_.erase({it->second.deadline, id});
  it->second.deadline = now + it->second.spec.walltime;
  deadlines_.emplace(it->second.deadline, id);
}

void Scheduler::requeue(JobId id, Time submitted) {
  auto it = running_.find(id);
  LOOM_CHECK(it != running_.end(),
             fmt::format("requeue() for job {}, which is not running", id.value()));
  cluster_.release(it->second.placement);
  fair_share_.unallocated(it->second.spec.account, it->second.usage);
  count(it->second.spec.account, &AccountJobs::running, -1);
  count(it->second.spec.account, &AccountJobs::pending, +1);
  preempted_.erase(id);
  deadlines_.erase({it->second.deadline, id});
  JobSpec spec = std::move(it->second.spec);
  Request request = make_request(spec);
  if (request.bb_per_node > 0) {  // its slices may be kept on its nodes
    for (const NodePlacement& np : it->second.placement.nodes) request.prefer.push_back(np.node);
  }
  running_.erase(it);
  pending_.emplace(id, Pending{std::move(spec), std::move(request), submitted});
}

void Scheduler::hold_outside_jobs(const std::string& account, Resources held, bool take, Time now) {
  fair_share_.advance(now);
  if (take) {
    fair_share_.allocated(account, held);
  } else {
    fair_share_.unallocated(account, held);
  }
}

std::vector<JobId> Scheduler::past_walltime(Time now) const {
  std::vector<JobId> out;
  for (const auto& [deadline, id] : deadlines_) {
    if (deadline > now) break;
    out.push_back(id);
  }
  return out;
}

std::optional<Time> Scheduler::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.begin()->first;
}

const Placement* Scheduler::placement(JobId id) const {
  auto it = running_.find(id);
  return it == running_.end() ? nullptr : &it->second.placement;
}

}  // namespace loom::sched
