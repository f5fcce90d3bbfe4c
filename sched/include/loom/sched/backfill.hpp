// Backfill: which jobs may start ahead of a job that does not fit yet, without delaying it.
// A policy opens one BackfillPass per scheduling pass; the scheduler tells it of each job
// that is blocked and asks it about each later job that fits now.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/sched/cluster.hpp"
#include "loom/sched/order.hpp"
#include "loom/sched/placement.hpp"

namespace loom::sched {

struct RunningJob {
  JobId id;
  const Placement* placement;
  Time deadline;  // start + walltime: when it ends at the latest
};

struct Reservation {
  JobId job;
  Time start;  // the latest the job will start, if running jobs end by their deadlines
  friend bool operator==(const Reservation&, const Reservation&) = default;
};

class BackfillPass {
 public:
  virtual ~BackfillPass() = default;
  // A job that does not fit now, in queue order. False: no later job may start this pass.
  virtual bool blocked(const QueuedJob& job) = 0;
  // A later job that fits now at `placement`: true if starting it delays no reservation.
  // Called before the scheduler allocates it; a true answer is final.
  virtual bool may_start(const QueuedJob& job, const Placement& placement) = 0;
  virtual std::vector<Reservation> reservations() const = 0;
};

class BackfillPolicy {
 public:
  virtual ~BackfillPolicy() = default;
  virtual std::string_view name() const = 0;
  // running: every running job, ascending deadline.
  virtual std::unique_ptr<BackfillPass> begin(const Cluster& cluster,
                                              std::span<const RunningJob> running,
                                              Time now) const = 0;
};

// No backfill: the queue is strict, nothing passes a blocked job.
std::unique_ptr<BackfillPolicy> make_no_backfill();

// EASY (Lifka's Argonne scheduler): the first blocked job gets a reservation at the
// earliest time the running jobs' walltimes free enough for it; a later job starts now
// only if it ends before then or leaves enough for the reservation at that time.
// Reservations are planned on resource counts per node and NUMA domain, which decide fit
// exactly (cores in a domain are interchangeable).
std::unique_ptr<BackfillPolicy> make_easy_backfill();

// Conservative: every blocked job, in queue order, gets a reservation that the ones before
// it leave room for, and a later job starts now only if it delays none of them.
// Reservations hold specific nodes, planned on counts; a pass costs, per blocked job, up to
// (running jobs + reservations) x nodes, less where a profile of free cores rules a start
// out. With `depth` (Slurm's bf_max_job_test), only the
// first `depth` blocked jobs are planned, and the jobs after them wait for a later pass; 0
// plans every one.
std::unique_ptr<BackfillPolicy> make_conservative_backfill(std::size_t depth = 0);

// By name: "none", "easy" or "conservative".
Result<std::unique_ptr<BackfillPolicy>> make_backfill(std::string_view name);

}  // namespace loom::sched
