#include "loom/sched/backfill.hpp"

#include <fmt/format.h>

#include <unordered_map>

namespace loom::sched {

namespace {

class NoBackfillPass final : public BackfillPass {
 public:
  bool blocked(const QueuedJob&) override { return false; }
  bool may_start(const QueuedJob&, const Placement&) override { return true; }
  std::vector<Reservation> reservations() const override { return {}; }
};

class NoBackfill final : public BackfillPolicy {
 public:
  std::string_view name() const override { return "fcfs"; }
  std::unique_ptr<BackfillPass> begin(const Cluster&, std::span<const RunningJob>, Time) const override {
    return std::make_unique<NoBackfillPass>();
  }
};

// The head job's view of the cluster at its reservation time T: each node's capacity
// once every running job due by T has ended. Nodes no such job touches are not copied:
// their capacity at T is their live free capacity, which already counts every job started
// this pass.
class EasyPass final : public BackfillPass {
 public:
  EasyPass(const Cluster& cluster, std::span<const RunningJob> running, Time now)
      : cluster_(cluster), running_(running), now_(now) {}

  bool blocked(const QueuedJob& job) override {
    if (!head_) plan(job);
    return true;
  }

  bool may_start(const QueuedJob& job, const Placement& placement) override {
    if (!head_) return true;
    if (now_ + job.spec->walltime <= head_->start) {
      // Gone before the head starts, so its nodes' capacity at T is what they have free
      // now: pin that before the job takes it, or a later job would be judged against a
      // capacity this one only borrows.
      for (const NodePlacement& np : placement.nodes) at_head_start_.try_emplace(np.node, cluster_.free(np.node));
      return true;
    }
    // Still running at T: it must leave the head enough room there.
    std::int64_t loss = 0;
    std::vector<std::pair<NodeCapacity*, NodeCapacity>> updates;
    for (const NodePlacement& np : placement.nodes) {
      auto it = at_head_start_.find(np.node);
      NodeCapacity after = it != at_head_start_.end() ? it->second : cluster_.free(np.node);
      const std::int64_t before = score(np.node, after);
      cluster_.take(after, np);
      loss += before - score(np.node, after);
      if (it != at_head_start_.end()) updates.emplace_back(&it->second, std::move(after));
    }
    if (score_ - loss < needed_) return false;
    score_ -= loss;
    for (auto& [capacity, after] : updates) *capacity = std::move(after);
    return true;
  }

  std::vector<Reservation> reservations() const override {
    if (!head_) return {};
    return {*head_};
  }

 private:
  // How much of the head's need a node covers: for a fixed ranks-per-node shape, 1 if it
  // holds a node's share; for a packed job, the ranks it holds.
  std::int64_t score(NodeId node, const NodeCapacity& capacity) const {
    if (cluster_.state(node) != NodeState::kUp) return 0;
    if (request_->ranks_per_node != 0) {
      return ranks_fit(capacity, *request_, request_->ranks_per_node) >= request_->ranks_per_node ? 1 : 0;
    }
    return ranks_fit(capacity, *request_, request_->tasks);
  }

  void plan(const QueuedJob& job) {
    request_ = job.request;
    needed_ = request_->ranks_per_node != 0 ? request_->nodes_min : request_->tasks;
    score_ = 0;
    for (std::size_t i = 0; i < cluster_.size(); ++i) {
      const NodeId node(static_cast<NodeId::rep>(i));
      score_ += score(node, cluster_.free(node));
    }
    for (const RunningJob& r : running_) {
      for (const NodePlacement& np : r.placement->nodes) {
        auto [it, inserted] = at_head_start_.try_emplace(np.node, cluster_.free(np.node));
        const std::int64_t before = score(np.node, it->second);
        cluster_.give_back(it->second, np);
        score_ += score(np.node, it->second) - before;
      }
      if (score_ >= needed_) {
        head_ = Reservation{job.id, std::max(r.deadline, now_)};
        return;
      }
    }
    // Even with every running job gone it does not fit (nodes drained or down): it holds
    // no reservation and blocks nobody.
    at_head_start_.clear();
  }

  const Cluster& cluster_;
  std::span<const RunningJob> running_;
  Time now_;
  std::optional<Reservation> head_;
  const Request* request_ = nullptr;
  std::unordered_map<NodeId, NodeCapacity> at_head_start_;
  std::int64_t needed_ = 0;
  std::int64_t score_ = 0;  // sum of score() over the nodes at T
};

class EasyBackfill final : public BackfillPolicy {
 public:
  std::string_view name() const override { return "easy"; }
  std::unique_ptr<BackfillPass> begin(const Cluster& cluster, std::span<const RunningJob> running,
                                      Time now) const override {
    return std::make_unique<EasyPass>(cluster, running, now);
  }
};

}  // namespace

std::unique_ptr<BackfillPolicy> make_no_backfill() { return std::make_unique<NoBackfill>(); }
std::unique_ptr<BackfillPolicy> make_easy_backfill() { return std::make_unique<EasyBackfill>(); }

Result<std::unique_ptr<BackfillPolicy>> make_backfill(std::string_view name) {
  if (name == "fcfs") return make_no_backfill();
  if (name == "easy") return make_easy_backfill();
  return make_error(ErrorCode::kInvalidArgument,
                    fmt::format("unknown backfill policy \"{}\": expected fcfs or easy", name));
}

}  // namespace loom::sched
