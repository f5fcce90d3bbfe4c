// The controller's job table: the durable store, the scheduler and the cluster kept in
// step. Single-threaded, time passed in. Every transition is in the store before it is
// returned to the caller to act on (launch, kill) or to acknowledge (a job id).
//
// Its public methods, more than the usual fifteen, are one per operation on jobs, nodes
// and buffers that the core's events come to; split by what they touch, the one rule they
// keep (stored before acted on) would be kept in several places.
#pragma once

#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/controller/metrics.hpp"
#include "loom/controller/store.hpp"
#include "loom/sched/scheduler.hpp"

namespace loom::controller {

// Who is asking, as the credential said.
struct Caller {
  std::uint32_t uid = 0;
  std::string user;
  bool admin = false;  // root or a member of auth.admin_group
  std::uint32_t gid = 0;
};

// A job to start: what the agents of its nodes need.
struct Launch {
  JobId id;
  std::string user;
  std::uint32_t uid = 0;
  v1::JobSpec spec;
  sched::Placement placement;
  std::optional<JobId> array_job;
  std::uint32_t array_index = 0;
};

// How a job's processes ended: the first failing rank's status, over all its nodes.
struct Ending {
  int exit_code = 0;  // 128 + signal when killed by one
  std::optional<int> signal;
  bool out_of_memory = false;  // a rank hit its --mem-per-task
  Reason failure;   // why it could not start or stage: LAUNCH_FAILED, STAGE_IN/OUT_FAILED
  v1::Usage usage;  // summed over the nodes (CPU time), the largest (peak memory)
};

// What `loom acct` asks: jobs that ran or waited in [since, until] (seconds since the
// epoch), of one user (empty: the caller's, or every user's for an admin), account and
// state when given, a page at a time from the first after `after`.
struct AcctQuery {
  std::int64_t since = 0;
  std::int64_t until = std::numeric_limits<std::int64_t>::max();
  std::string user;
  std::string account;
  std::optional<v1::JobState> state;
  JobId after{0};
  std::size_t limit = 1000;
};
struct AcctPage {
  std::vector<JobRow> jobs;
  JobId next_after{0};  // ask again from here; 0: there is no more
};

// The loom.v1.JobSpec a user sent, as the scheduler takes it; refusals name the option.
Result<sched::JobSpec> to_sched_spec(const v1::JobSpec& spec);

class JobManager {
 public:
  // Loads the drained nodes and the jobs the store holds, but for those ended before
  // `ended_since` (seconds since the epoch), which stay in the store only; pending jobs are
  // queued again, but for one bound to a buffer its user does not have, which is cancelled
  // at `now`. on_change runs after every change is stored (watchers wake on it).
  static Result<std::unique_ptr<JobManager>> open(std::unique_ptr<Store> store,
                                                  sched::Cluster& cluster,
                                                  sched::SchedulerOptions options, sched::Time now,
                                                  std::function<void()> on_change = {},
                                                  std::int64_t ended_since = 0);

  // Stores the job PENDING and queues it, or with array_size N > 0 an array of N jobs in one
  // transaction; ids are acknowledged only once stored.
  Result<std::vector<JobId>> submit(const Caller& caller, v1::JobSpec spec,
                                    std::uint32_t array_size, sched::Time now);

  // A user's own jobs, or every job for an admin; other users' jobs are invisible. Jobs
  // that have ended only with include_ended, and only those still in memory (see
  // forget_ended). In id order, from the first after `after`, at most `limit` of them: a
  // listing goes out a page at a time.
  std::vector<JobRow> list(const Caller& caller, bool include_ended, JobId after = JobId(0),
                           std::size_t limit = std::numeric_limits<std::size_t>::max()) const;
  // The job `id`, or element `index` of the array `id`; one that left memory is read from
  // the store.
  Result<JobRow> show(const Caller& caller, JobId id,
                      std::optional<std::uint32_t> index = std::nullopt) const;
  // Jobs by state and reason, the cluster's and each account's resources, how long jobs
  // waited and passes took, what ended and what was staged since this manager opened:
  // loomctld's /metrics.
  void write_metrics(Exposition& out) const;
  // The record of jobs, from the store: a user's own, an admin's anybody's.
  Result<AcctPage> accounting(const Caller& caller, AcctQuery query) const;
  // Jobs that ended before `before` leave memory (controller.min_job_age); the store keeps
  // them, and show() finds them there. Returns how many left.
  std::size_t forget_ended(sched::Time before);

  // A pending job ends CANCELLED at once. A running one is returned in `kill` for the
  // caller to kill on its nodes, and ends CANCELLED when finished() reports it. An array's
  // id without an index cancels every element that has not ended.
  Status cancel(const Caller& caller, JobId id, std::optional<std::uint32_t> index, sched::Time now,
                std::vector<JobId>& kill);

  // The agent of `node` started the job's ranks there, bound as `report` says: recorded
  // beside the placement, for `loom show`, and stored with the job's end.
  Status started(const std::string& node, const v1::JobStarted& report);

  // One scheduling pass; the jobs it starts are stored RUNNING, with their placement,
  // before they are returned. Jobs whose dependency can never be met end CANCELLED. Jobs it
  // preempts are marked, as past_walltime() marks them, for take_preempted().
  Result<std::vector<Launch>> schedule(sched::Time now);
  // The running jobs the passes since the last call preempted, for the caller to kill; each
  // is PENDING again (requeue) or CANCELLED once finished() reports it, with the reason
  // Preempted.
  std::vector<sched::Preemption> take_preempted() { return std::exchange(preempted_, {}); }

  // Every node of a job that was STAGING_IN has started it: it is RUNNING (stored), its
  // start time is now and its walltime counts from now (stage-in is not charged to it).
  Status ran(JobId id, sched::Time now);
  // A node's staging for the job, as it progresses; once stage-out has begun the job is
  // STAGING_OUT (stored). Progress itself is stored with the job's end.
  Status staged(JobId id, const std::string& node, const v1::StagingReport& report);

  // Running jobs past their walltime, but for those staging out: marked for TIMEOUT,
  // returned for the caller to kill.
  std::vector<JobId> past_walltime(sched::Time now);

  // A running job's processes ended, as `ending` says.
  Status finished(JobId id, const Ending& ending, sched::Time now);

  // ---- Recovery ----
  // Jobs stored RUNNING when this manager opened (a controller restart), with the nodes
  // that have not reported them yet: their state is unknown until every node has.
  const std::map<JobId, std::set<std::string>>& unknown() const { return unknown_; }
  // The agent of `node` re-registered and reported the job (running, or ended meanwhile).
  void heard(JobId id, const std::string& node);
  // Every node of an unknown job has reported it: its placement is held again, and its
  // walltime runs on from when it started. Returns the placement.
  Result<sched::Placement> adopt(JobId id);
  // A running (or unknown) job lost a node: it ends NODE_FAIL, or with --requeue it is
  // queued again. Its other nodes are the caller's to kill. A job that never started
  // anywhere (its launch was lost with a controller that stopped) is queued again whatever
  // --requeue says: running it is not running it twice.
  Status lost(JobId id, const Reason& reason, sched::Time now, bool started = true);
  // A job's state; nullopt for one that is not in memory (it ended long ago, or never was).
  std::optional<v1::JobState> state(JobId id) const {
    auto it = jobs_.find(id);
    return it == jobs_.end() ? std::nullopt : std::optional(it->second.state);
  }
  // Whether a running job is being killed (cancelled, or past its walltime).
  bool being_killed(JobId id) const { return ending_.contains(id); }
  // The names of the nodes a job was placed on.
  std::vector<std::string> nodes_of(JobId id) const;
  // A node gone silent, and why it is (nullopt once it is back or its jobs given up): its
  // running jobs are shown NodeUnreachable with that detail until then.
  void unreachable(const std::string& node, std::optional<std::string> detail);

  // Admins drain a node (it runs what it has and takes nothing new) or resume it; stored,
  // so that a drain outlives restarts. A node drained before it (re)joins is drained when
  // it does: see joined().
  Status drain(const Caller& caller, const std::string& node, const std::string& reason);
  Status resume(const Caller& caller, const std::string& node);
  // A node's agent registered with this topology and these NVMe devices: a new node is
  // stored and added; a known one must have the topology and devices it had. It is up, or drained
  // when a stored drain says so.
  Result<NodeId> joined(const std::string& name, const nlohmann::json& topology,
                        std::vector<sched::NvmeDevice> nvme);
  // Why a node is drained; empty when it is not.
  std::string drain_reason(const std::string& node) const;

  // Another queue order, backfill and accounts from the next pass on (loomctld's SIGHUP);
  // no job changes, and jobs already queued keep the account they were charged to.
  void set_policy(sched::SchedulerOptions options);

  // ---- Group commit (Store::begin_batch) ----
  // What changes between the two is stored at end_batch(); until then none of it may be
  // acted on (the core holds what it sends and the replies).
  Status begin_batch() { return store_->begin_batch(); }
  Status end_batch() { return store_->end_batch(); }
  Status probe_store() { return store_->probe(); }

  // ---- Persistent burst buffers ----
  // Each user names their own: a name another user holds is no business of the caller's.
  // Stores a new buffer on the device with the most room (on `node` when named) and takes
  // its bytes there, charged to the account (as a job's -A is chosen and checked: its
  // max_nvme counts the buffer); the caller has the node's agent make it, and forgets it if
  // that fails.
  struct NewBuffer {
    std::string name;
    std::uint64_t bytes = 0;
    std::string node;     // empty: any node that is up
    std::string account;  // empty: the caller's default
  };
  Result<BufferRow> create_buffer(const Caller& caller, const NewBuffer& ask, sched::Time now);
  // Removes the buffer `name` of `owner` (a user name; empty: the caller) from the store and
  // gives its bytes back: only an admin names another owner, and only while no job uses
  // it. Its owner's pending jobs bound to it are cancelled with it: a buffer made later
  // under its name is not theirs.
  Result<BufferRow> destroy_buffer(const Caller& caller, const std::string& owner,
                                   const std::string& name, sched::Time now);
  // The caller's buffers (an admin's: everybody's).
  std::vector<BufferRow> buffers(const Caller& caller) const;
  std::vector<BufferRow> buffers_on(const std::string& node) const;
  // A user's buffer of that name (a job's --bb-persistent); nullptr when there is none.
  const BufferRow* buffer(std::uint32_t uid, const std::string& name) const;
  // Jobs holding the buffer now (started, not ended).
  std::vector<JobId> buffer_users(const BufferRow& buffer) const;

 private:
  JobManager(std::unique_ptr<Store> store, sched::Cluster& cluster, sched::SchedulerOptions options,
             std::function<void()> on_change);
  // In memory: every job not ended, and those ended since the last forget_ended().
  const JobRow* visible(const Caller& caller, JobId id,
                        std::optional<std::uint32_t> index = std::nullopt) const;
  // From the store: a job that has left memory (ended), as visible() would find it.
  Result<std::optional<JobRow>> stored(const Caller& caller, JobId id,
                                       std::optional<std::uint32_t> index) const;
  Result<NodeId> admin_node(const Caller& caller, const std::string& node,
                            std::string_view what) const;
  // The row as shown: an unknown job's reason says which nodes it waits for, a running
  // job's which of its nodes is unreachable, a pending one's which limit of its account
  // holds it back.
  JobRow as_shown(JobRow row) const;
  // The account a job of the caller's is charged to when it asks for `asked` (may be
  // empty): with [[accounts]], one they are in (their first without -A; an admin's may be
  // any, or none); without, what they asked.
  Result<std::string> account_of(const Caller& caller, const std::string& asked) const;
  // Refuses a QOS that is not configured (but "normal", or none), or one the caller may not
  // use; admins may use any.
  Status may_use_qos(const Caller& caller, const std::string& qos) const;
  // Refuses `jobs` more jobs of this spec that its account's limits would never run or
  // may not queue now, naming the limit.
  Status within_limits(const sched::JobSpec& spec, std::uint64_t jobs) const;
  // Refuses a persistent buffer of `bytes` that would take its account past max_nvme, with
  // what its jobs and buffers hold now: a buffer does not wait.
  Status nvme_within_limit(const std::string& account, std::uint64_t bytes) const;
  // The scheduler's spec of a job of `uid`'s: with --bb-persistent, bound to the node of
  // that user's buffer.
  Result<sched::JobSpec> spec_of(const v1::JobSpec& spec, std::uint32_t uid) const;
  // The update that stores how a running job being killed is to end.
  static JobUpdate killing(const JobRow& row, const Killing& how);
  // A pending job's end when it has no buffer to bind to: CANCELLED, BufferDestroyed.
  static JobUpdate buffer_gone(JobId id, std::string detail, sched::Time now);
  // Takes (or gives back) a buffer's bytes on its node's device, and from its account.
  Status hold(const BufferRow& buffer, bool take, sched::Time now);
  // An ended job's row: kept in memory for min_job_age without what only the store needs
  // (its environment and script), and listed by its end time for forget_ended().
  void ended_as_shown(JobRow& row);
  // Stores the accounts' fair-share usage, at most once a minute.
  Status save_usage(sched::Time now);
  // Stores transitions in one transaction, then mirrors them in jobs_.
  Status apply(std::span<const JobUpdate> updates);

  std::unique_ptr<Store> store_;
  sched::Cluster& cluster_;
  sched::Scheduler scheduler_;
  std::map<JobId, JobRow> jobs_;  // the store's content, for reads, but for old ends
  std::set<std::pair<std::int64_t, JobId>> ended_at_;  // the ended jobs in jobs_, by end time
  // A running job being killed: the state and reason it ends with once its nodes report
  // it gone (CANCELLED, PENDING when preempted to be requeued, or TIMEOUT past its
  // walltime). Stored but for TIMEOUT, which a restarted controller finds again.
  std::map<JobId, Killing> ending_;
  std::vector<sched::Preemption> preempted_;    // see take_preempted()
  std::optional<sched::Time> usage_saved_;      // see save_usage()
  std::map<std::string, std::string> drained_;  // the store's drained nodes, by name
  // The store's persistent buffers, by owner's uid and name.
  std::map<std::pair<std::uint32_t, std::string>, BufferRow> buffers_;
  std::map<JobId, std::set<std::string>> unknown_;  // see unknown()
  std::map<std::string, std::string> unreachable_;  // see unreachable()
  std::function<void()> on_change_;
  // What write_metrics() reports that the jobs in memory no longer show.
  struct Counted {
    Histogram queue_wait_seconds{{1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}};
    Histogram pass_seconds{{0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5}};
    std::map<v1::JobState, std::uint64_t> ended_by_state;
    std::uint64_t staged_in_bytes = 0;
    std::uint64_t staged_out_bytes = 0;
    void ended(const JobRow& row);
  } counted_;
};

}  // namespace loom::controller
