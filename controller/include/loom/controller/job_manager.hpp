// The controller's job table: the durable store, the scheduler and the cluster kept in
// step. Single-threaded, time passed in. Every transition is in the store before it is
// returned to the caller to act on (launch, kill) or to acknowledge (a job id).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/controller/store.hpp"
#include "loom/sched/scheduler.hpp"

namespace loom::controller {

// Who is asking, as the credential said.
struct Caller {
  std::uint32_t uid = 0;
  std::string user;
  bool admin = false;  // root or a member of auth.admin_group
};

// A job to start: what the agents of its nodes need.
struct Launch {
  JobId id;
  std::string user;
  std::uint32_t uid = 0;
  v1::JobSpec spec;
  sched::Placement placement;
};

// The loom.v1.JobSpec a user sent, as the scheduler takes it; refusals name the option.
Result<sched::JobSpec> to_sched_spec(const v1::JobSpec& spec);

class JobManager {
 public:
  // Loads the jobs the store holds; pending ones are queued again.
  static Result<std::unique_ptr<JobManager>> open(std::unique_ptr<Store> store, sched::Cluster& cluster,
                                                  sched::SchedulerOptions options, sched::Time now);

  // Stores the job PENDING and queues it; the id is acknowledged only once stored.
  Result<JobId> submit(const Caller& caller, v1::JobSpec spec, sched::Time now);

  // A user's own jobs, or every job for an admin; other users' jobs are invisible.
  std::vector<JobRow> list(const Caller& caller) const;
  Result<JobRow> show(const Caller& caller, JobId id) const;

  // A pending job ends CANCELLED at once. A running one is returned in `kill` for the
  // caller to kill on its nodes, and ends CANCELLED when finished() reports it.
  Status cancel(const Caller& caller, JobId id, sched::Time now, std::vector<JobId>& kill);

  // One scheduling pass; the jobs it starts are stored RUNNING, with their placement,
  // before they are returned. Jobs whose dependency can never be met end CANCELLED.
  Result<std::vector<Launch>> schedule(sched::Time now);

  // Running jobs past their walltime: marked for TIMEOUT, returned for the caller to kill.
  std::vector<JobId> past_walltime(sched::Time now);

  // A running job's processes ended (exit_code is 128 + signal when killed by one).
  Status finished(JobId id, int exit_code, std::optional<int> signal, sched::Time now);

 private:
  JobManager(std::unique_ptr<Store> store, sched::Cluster& cluster, sched::SchedulerOptions options);
  const JobRow* visible(const Caller& caller, JobId id) const;
  // Stores transitions in one transaction, then mirrors them in jobs_.
  Status apply(std::span<const JobUpdate> updates);

  std::unique_ptr<Store> store_;
  sched::Cluster& cluster_;
  sched::Scheduler scheduler_;
  std::map<JobId, JobRow> jobs_;  // the store's content, for reads
  std::map<JobId, std::string> ending_;  // running jobs being killed: the reason they end with
};

}  // namespace loom::controller
