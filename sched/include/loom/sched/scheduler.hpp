// The scheduler: pending jobs in, decisions out. Single-threaded; no I/O and no clock of
// its own: every call takes the time, so the controller, the trace simulator and the
// benchmarks drive the same code, and tests drive it deterministically.
//
// Feedback arrives as events (finished), never as calls into its internals. The caller
// acts on the decisions a pass returns: it launches what started, kills what ran past its
// walltime and reports it back as finished(kTimeout), cancels what can never run.
//
// Its public methods, more than the usual fifteen, are those events (a submission, a
// cancel, an end, a job found again after a restart, a pass) and reads for the controller,
// the simulator and the tests; none hands out its state to change.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "loom/common/config.hpp"
#include "loom/common/error.hpp"
#include "loom/common/ids.hpp"
#include "loom/sched/backfill.hpp"
#include "loom/sched/cluster.hpp"
#include "loom/sched/fair_share.hpp"
#include "loom/sched/job.hpp"
#include "loom/sched/order.hpp"
#include "loom/sched/placement.hpp"

namespace loom::sched {

enum class JobEnd { kCompleted, kFailed, kCancelled, kTimeout, kNodeFail };

struct Started {
  JobId id;
  Placement placement;
  Time start;
  Time deadline;  // start + walltime
};

// A running job to stop so that a job of a higher QOS (or, under SRTF, a shorter one) can start:
// the caller kills it and reports it back requeued (requeue()) or ended (finished()).
struct Preemption {
  JobId victim;
  JobId by;
  bool requeue = true;  // the preempting QOS's preempt_mode
  friend bool operator==(const Preemption&, const Preemption&) = default;
};

struct PassResult {
  std::vector<Started> started;
  std::vector<Preemption> preempted;
  // Pending jobs whose afterok dependency ended otherwise: removed from the queue, to be
  // cancelled by the caller (Slurm's DependencyNeverSatisfied).
  std::vector<JobId> never_satisfiable;
  std::vector<Reservation> reservations;
};

struct SchedulerOptions {
  SchedulerOptions() = default;
  SchedulerOptions(std::unique_ptr<QueueOrder> queue_order, std::unique_ptr<BackfillPolicy> passing)
      : order(std::move(queue_order)), backfill(std::move(passing)) {}

  std::unique_ptr<QueueOrder> order = make_fcfs_order();
  std::unique_ptr<BackfillPolicy> backfill = make_easy_backfill();
  // Accounts' shares weigh their fair share; their limits hold their jobs back. An account
  // not listed weighs 1 and has no limit.
  std::vector<Config::Account> accounts;
  std::chrono::seconds fair_share_half_life{std::chrono::hours(24 * 7)};
  // QOS tiers: a higher priority's jobs go first; a QOS that lists others in `preempt` has
  // their running jobs preempted when its job cannot start. Empty: every job is "normal".
  std::vector<Config::Qos> qos;
};

// An account's jobs now: what its max_submitted_jobs and max_running_jobs count.
struct AccountJobs {
  std::uint64_t pending = 0;
  std::uint64_t running = 0;
};

class Scheduler {
 public:
  // The cluster outlives the scheduler; the scheduler is the only one to allocate on it.
  Scheduler(Cluster& cluster, SchedulerOptions options);
  // Another order, backfill and accounts from the next pass on (loomctld's SIGHUP): a pass
  // keeps nothing of the first two between passes; accounts' usage is kept.
  void set_policy(SchedulerOptions options);

  // Queues a job. Refuses, naming the field, a spec that is invalid, one that could never
  // fit this cluster, a dependency on a job it has never seen, and a reused id.
  Status submit(JobId id, JobSpec spec, Time now);

  // Removes a job that has not started; it counts as ended CANCELLED for dependencies.
  Status cancel_pending(JobId id);

  // One scheduling pass: orders the eligible jobs, starts what fits, backfills.
  PassResult schedule(Time now);

  // A running job ended: its resources return.
  void finished(JobId id, JobEnd end, Time now);

  // A job that staged data in before its ranks started runs from now: its walltime counts
  // from here, as a Slurm job's time limit leaves its burst buffer's stage-in out.
  void start_clock(JobId id, Time now);

  // A job found running after a restart (its agents reported it): takes its placement
  // again and keeps its walltime from when it started. Refuses a placement that does not
  // fit what is free, or an id already known.
  Status adopt(JobId id, JobSpec spec, Placement placement, Time started);

  // A running job whose node failed, queued again as it was submitted (--requeue).
  void requeue(JobId id, Time submitted);

  // A job that ended before this scheduler existed (a restarted controller), so that
  // dependencies on it resolve.
  void record_ended(JobId id, JobEnd end) {
    awaited_.erase(id);
    ended_.emplace(id, end);
  }
  // A job that was running before this scheduler existed, until it is adopted, requeued
  // (submit) or recorded as ended: jobs may depend on it meanwhile, and wait.
  void await(JobId id) { awaited_.insert(id); }

  // What an account holds outside its jobs (a persistent buffer's bytes): counted toward
  // its limits and its fair share as its running jobs' holdings are, until given back.
  void hold_outside_jobs(const std::string& account, Resources held, bool take, Time now);

  // Running jobs whose walltime has run out by now: the caller kills them.
  std::vector<JobId> past_walltime(Time now) const;
  std::optional<Time> next_deadline() const;

  // The configured accounts, and the one of that name (nullptr when none is).
  const std::vector<Config::Account>& accounts() const { return options_.accounts; }
  const Config::Account* account(const std::string& name) const;
  // The configured QOS of that name ("" is "normal"); nullptr when none is.
  const Config::Qos* qos(const std::string& name) const;
  AccountJobs jobs_of(const std::string& account) const;
  // Why the last pass passed over a pending job that an account limit holds back:
  // "NVMe 3.5 TiB of 4 TiB held". Nullopt for one it did not.
  std::optional<std::string> held_back(JobId id) const;

  std::size_t pending_count() const { return pending_.size(); }
  std::size_t running_count() const { return running_.size(); }
  const Placement* placement(JobId id) const;
  const FairShare& fair_share() const { return fair_share_; }
  FairShare& fair_share() { return fair_share_; }

 private:
  struct Pending {
    JobSpec spec;
    Request request;
    Time submit;
  };
  struct Running {
    JobSpec spec;  // as submitted: a requeued job is queued again with it
    Placement placement;
    Resources usage;
    Time deadline;
    Time start;
  };
  enum class Readiness { kReady, kWaiting, kNever };
  Readiness readiness(const JobSpec& spec) const;
  void start(JobId id, Placement placement, Time now, PassResult& result);
  // Whether the job waits for jobs it preempted to end; forgets those that have.
  bool awaits_preempted(JobId id);
  // Picks the fewest running jobs of the QOS the job's may preempt (lowest QOS and youngest
  // first), or under SRTF of no higher QOS with more walltime left than the job asks for
  // (most left first), whose room would let it start; false when there are none such.
  bool preempt(const QueuedJob& job, Time now, PassResult& result);
  std::uint64_t priority_of(const std::string& qos) const;
  // The limit of the job's account that `more` would pass, said as held_back() says it.
  std::optional<std::string> past_limit(const std::string& account, Resources more) const;
  // Counts a job in (+1) or out (-1) of its account's pending or running jobs.
  void count(const std::string& account, std::uint64_t AccountJobs::*which, int delta);

  Cluster& cluster_;
  SchedulerOptions options_;
  FairShare fair_share_;
  std::map<JobId, Pending> pending_;
  std::unordered_map<JobId, Running> running_;
  std::set<std::pair<Time, JobId>> deadlines_;
  std::unordered_map<JobId, JobEnd> ended_;
  std::set<JobId> awaited_;                                              // see await()
  std::map<std::string, const Config::Account*, std::less<>> accounts_;  // in options_
  std::map<std::string, AccountJobs> account_jobs_;
  std::unordered_map<JobId, std::string> held_back_;            // see held_back()
  std::map<std::string, const Config::Qos*, std::less<>> qos_;  // in options_
  std::map<JobId, std::set<JobId>> preempting_;  // a waiting job -> the jobs it preempted
  std::set<JobId> preempted_;                    // running jobs being preempted
};

}  // namespace loom::sched
