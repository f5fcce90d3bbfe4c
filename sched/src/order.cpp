#include "loom/sched/order.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <queue>
#include <tuple>

namespace loom::sched {

namespace {

bool fcfs_before(const QueuedJob& a, const QueuedJob& b) {
  return a.submit != b.submit ? a.submit < b.submit : a.id < b.id;
}

class Fcfs final : public QueueOrder {
 public:
  std::string_view name() const override { return "fcfs"; }
  void sort(std::vector<QueuedJob>& jobs, const OrderContext&) const override {
    std::ranges::sort(jobs, fcfs_before);
  }
};

// SJF, and SRTF: a pending job's remaining walltime is all of it, so both sort alike;
// SRTF also preempts.
class ShortestFirst final : public QueueOrder {
 public:
  explicit ShortestFirst(bool preempting) : preempting_(preempting) {}
  std::string_view name() const override { return preempting_ ? "srtf" : "sjf"; }
  bool preempts_longer() const override { return preempting_; }
  void sort(std::vector<QueuedJob>& jobs, const OrderContext&) const override {
    std::ranges::sort(jobs, [](const QueuedJob& a, const QueuedJob& b) {
      if (a.spec->walltime != b.spec->walltime) return a.spec->walltime < b.spec->walltime;
      return fcfs_before(a, b);
    });
  }

 private:
  bool preempting_;
};

// Account by account, FCFS within each: the next job is the first of the account whose
// weighted share, with the jobs already ahead of it in this order counted as held, is
// least. One sort per pass then shares the cores a pass frees as the weights say, as
// Mesos' DRF allocator re-sorts after every offer, instead of giving them all to the
// account that was lowest when the pass began.
class FairShareOrder final : public QueueOrder {
 public:
  std::string_view name() const override { return "fairshare"; }
  void sort(std::vector<QueuedJob>& jobs, const OrderContext& context) const override {
    LOOM_CHECK(context.fair_share != nullptr, "fair-share order without fair-share state");
    std::ranges::sort(jobs, fcfs_before);
    struct Queue {
      std::vector<QueuedJob> jobs;
      std::size_t next = 0;
      Resources ahead;
    };
    std::map<std::string_view, Queue> queues;
    for (const QueuedJob& job : jobs) queues[job.spec->account].jobs.push_back(job);
    // (weighted share, its next job's submit time and id, account): least first.
    using Head = std::tuple<double, Time, JobId, std::string_view>;
    std::priority_queue<Head, std::vector<Head>, std::greater<>> heads;
    auto push = [&](std::string_view account, const Queue& queue) {
      if (queue.next == queue.jobs.size()) return;
      const QueuedJob& job = queue.jobs[queue.next];
      heads.emplace(context.fair_share->weighted_share(account, queue.ahead), job.submit, job.id,
                    account);
    };
    for (const auto& [account, queue] : queues) push(account, queue);
    std::size_t i = 0;
    while (!heads.empty()) {
      const std::string_view account = std::get<3>(heads.top());
      heads.pop();
      Queue& queue = queues.at(account);
      const QueuedJob& job = queue.jobs[queue.next++];
      queue.ahead += requested(*job.request);
      jobs[i++] = job;
      push(account, queue);
    }
  }
};

class Multifactor final : public QueueOrder {
 public:
  explicit Multifactor(MultifactorWeights weights) : weights_(weights) {}
  std::string_view name() const override { return "priority"; }
  void sort(std::vector<QueuedJob>& jobs, const OrderContext& context) const override {
    std::vector<std::pair<double, QueuedJob>> keyed;
    keyed.reserve(jobs.size());
    for (const QueuedJob& job : jobs) keyed.emplace_back(priority(job, context), job);
    std::ranges::sort(keyed, [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : fcfs_before(a.second, b.second);
    });
    for (std::size_t i = 0; i < jobs.size(); ++i) jobs[i] = keyed[i].second;
  }

 private:
  double priority(const QueuedJob& job, const OrderContext& context) const {
    const double waited = static_cast<double>((context.now - job.submit).count());
    const double age = std::clamp(waited / static_cast<double>(weights_.max_age.count()), 0.0, 1.0);
    const double size = context.cluster_cores == 0
                            ? 0.0
                            : static_cast<double>(job.request->total_cores()) /
                                  static_cast<double>(context.cluster_cores);
    const double share =
        context.fair_share == nullptr ? 0.0 : context.fair_share->weighted_share(job.spec->account);
    return weights_.age * age + weights_.size * std::min(size, 1.0) +
           weights_.fair_share * std::exp2(-share) + weights_.user * job.spec->priority;
  }

  MultifactorWeights weights_;
};

}  // namespace

Resources requested(const Request& request) {
  return {request.total_cores(), request.mem_per_task * request.tasks,
          request.bb_per_node * request.nodes_min};
}

std::unique_ptr<QueueOrder> make_fcfs_order() { return std::make_unique<Fcfs>(); }
std::unique_ptr<QueueOrder> make_sjf_order() { return std::make_unique<ShortestFirst>(false); }
std::unique_ptr<QueueOrder> make_srtf_order() { return std::make_unique<ShortestFirst>(true); }
std::unique_ptr<QueueOrder> make_fair_share_order() { return std::make_unique<FairShareOrder>(); }
std::unique_ptr<QueueOrder> make_multifactor_order(MultifactorWeights weights) {
  return std::make_unique<Multifactor>(weights);
}

Result<std::unique_ptr<QueueOrder>> make_order(std::string_view name) {
  if (name == "fcfs") return make_fcfs_order();
  if (name == "sjf") return make_sjf_order();
  if (name == "srtf") return make_srtf_order();
  if (name == "fairshare") return make_fair_share_order();
  if (name == "priority") return make_multifactor_order();
  return make_error(
      ErrorCode::kInvalidArgument,
      fmt::format("unknown queue order \"{}\": expected fcfs, sjf, srtf, fairshare or priority",
                  name));
}

}  // namespace loom::sched
