// Queue order: which pending job runs next. Separate from placement (where it runs), as
// Fluxion separates qmanager from resource. Each policy sorts the eligible jobs at the
// start of a scheduling pass, first to run first.
#pragma once

#include <chrono>
#include <memory>
#include <string_view>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/common/ids.hpp"
#include "loom/sched/fair_share.hpp"
#include "loom/sched/job.hpp"

namespace loom::sched {

using Time = std::chrono::sys_seconds;

struct QueuedJob {
  JobId id;
  const JobSpec* spec;
  const Request* request;
  Time submit;
};

struct OrderContext {
  Time now;
  std::uint64_t cluster_cores = 0;
  const FairShare* fair_share = nullptr;
};

// What a job would hold once started, as far as its request says (its fewest nodes): the
// fair-share order projects a pass's starts with it, account limits check it.
Resources requested(const Request& request);

class QueueOrder {
 public:
  virtual ~QueueOrder() = default;
  virtual std::string_view name() const = 0;
  virtual void sort(std::vector<QueuedJob>& jobs, const OrderContext& context) const = 0;
  // Whether a job that cannot start preempts running jobs with more walltime left than it
  // asks for (SRTF), whatever their QOS.
  virtual bool preempts_longer() const { return false; }
};

// First come, first served: submit time, then id.
std::unique_ptr<QueueOrder> make_fcfs_order();

// Shortest requested walltime first, then FCFS.
std::unique_ptr<QueueOrder> make_sjf_order();

// Shortest remaining walltime first: SJF's order, and a job at the head that cannot start
// preempts (requeues) the running jobs with the most walltime left, if each has more left
// than the job's whole walltime, as the seeds' SRTF policy did.
std::unique_ptr<QueueOrder> make_srtf_order();

// The account with the least weighted fair-share usage (fair_share.hpp) first, FCFS within
// an account; the jobs ordered ahead count as its usage, so that accounts interleave.
std::unique_ptr<QueueOrder> make_fair_share_order();

// Slurm's multifactor priority: the sum of weighted factors, highest first.
//   age        min(1, waited / max_age)
//   size       the job's cores / the cluster's cores (favours wide jobs, as Slurm does)
//   fair share 2^(-weighted fair-share usage of its account), 1 for one that used nothing
//   user       the job's own priority, added as is
struct MultifactorWeights {
  double age = 1000;
  std::chrono::seconds max_age = std::chrono::hours(24 * 7);
  double size = 1000;
  double fair_share = 10000;
  double user = 1;
};
std::unique_ptr<QueueOrder> make_multifactor_order(MultifactorWeights weights = {});

// By name: "fcfs", "sjf", "srtf", "fairshare" or "priority" (multifactor with default weights;
// configured.hpp gives it a configuration's).
Result<std::unique_ptr<QueueOrder>> make_order(std::string_view name);

}  // namespace loom::sched
