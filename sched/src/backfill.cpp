#include "loom/sched/backfill.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
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
  std::string_view name() const override { return "none"; }
  std::unique_ptr<BackfillPass> begin(const Cluster&, std::span<const RunningJob>,
                                      Time) const override {
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
      for (const NodePlacement& np : placement.nodes)
        at_head_start_.try_emplace(np.node, cluster_.free(np.node));
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
      return ranks_fit(capacity, *request_, request_->ranks_per_node) >= request_->ranks_per_node
                 ? 1
                 : 0;
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

// What a reservation holds on one node over its interval, in counts.
struct Claim {
  Time start;
  Time end;
  NodeCapacity usage;  // domains, nvme: amounts held; held_exclusive: the whole node
};

// cap -= usage; false, leaving cap in an unspecified state, when it does not cover it.
bool subtract(NodeCapacity& cap, const NodeCapacity& usage) {
  if (cap.held_exclusive || (usage.held_exclusive && !cap.idle())) return false;
  for (std::size_t d = 0; d < cap.domains.size(); ++d) {
    if (cap.domains[d].cores < usage.domains[d].cores ||
        cap.domains[d].memory < usage.domains[d].memory)
      return false;
    cap.domains[d].cores -= usage.domains[d].cores;
    cap.domains[d].memory -= usage.domains[d].memory;
  }
  for (std::size_t i = 0; i < cap.nvme.size(); ++i) {
    if (cap.nvme[i] < usage.nvme[i]) return false;
    cap.nvme[i] -= usage.nvme[i];
  }
  ++cap.allocations;
  cap.held_exclusive = cap.held_exclusive || usage.held_exclusive;
  return true;
}

// before - after, component by component: what was taken.
NodeCapacity difference(const NodeCapacity& before, const NodeCapacity& after) {
  NodeCapacity usage = before;
  for (std::size_t d = 0; d < usage.domains.size(); ++d) {
    usage.domains[d].cores -= after.domains[d].cores;
    usage.domains[d].memory -= after.domains[d].memory;
  }
  for (std::size_t i = 0; i < usage.nvme.size(); ++i) usage.nvme[i] -= after.nvme[i];
  usage.allocations = 1;
  usage.held_exclusive = after.held_exclusive && !before.held_exclusive;
  return usage;
}

// Conservative backfill (Mu'alem and Feitelson): every blocked job, in queue order, gets a
// reservation at the earliest time that neither the running jobs nor the reservations
// before it stand in the way; a job starts now only if it breaks no reservation.
// Reservations hold specific nodes (their claims, in counts); a node's capacity over an
// interval is taken as its capacity at the start, with the running jobs due by then
// gone, less every claim overlapping the interval, which may start a job later than it
// could but never delays one.
class ConservativePass final : public BackfillPass {
 public:
  ConservativePass(const Cluster& cluster, std::span<const RunningJob> running, Time now,
                   std::size_t depth)
      : cluster_(cluster),
        running_(running),
        now_(now),
        depth_(depth),
        releases_(cluster.size()),
        claims_(cluster.size()),
        at_start_(cluster.size()),
        released_here_(cluster.size(), false),
        fit_(cluster.size()) {
    times_.push_back(now);
    for (std::size_t i = 0; i < cluster.size(); ++i) {
      const NodeId node(static_cast<NodeId::rep>(i));
      if (cluster.state(node) == NodeState::kUp) free_cores_[now] += cores_of(cluster.free(node));
    }
    for (const RunningJob& r : running) {  // in deadline order
      for (const NodePlacement& np : r.placement->nodes) {
        releases_[np.node.value()].emplace_back(r.deadline, &np);
        for (const RankPlacement& rank : np.ranks)
          free_cores_[std::max(r.deadline, now)] += static_cast<std::int64_t>(rank.cores.size());
      }
      if (r.deadline > times_.back()) times_.push_back(r.deadline);
    }
  }

  bool blocked(const QueuedJob& job) override {
    if (depth_ != 0 && ++planned_ > depth_) return false;  // later jobs wait for a pass
    const Request& r = *job.request;
    const unsigned per_node = r.ranks_per_node != 0 ? r.ranks_per_node : r.tasks;
    const std::int64_t needed = r.ranks_per_node != 0 ? r.nodes_min : r.tasks;
    // What a node holds toward the job from its capacity alone, before claims.
    auto counted = [&](const NodeCapacity& cap) -> std::int64_t {
      const unsigned fit = ranks_fit(cap, r, per_node);
      if (r.ranks_per_node != 0) return fit < per_node ? 0 : 1;
      return fit;
    };
    // Capacity at each candidate start, with the running jobs due by then gone: copied
    // only for the nodes those jobs touch; every other node reads its live free capacity.
    // Capacity only grows with the start, so a start at which the nodes hold too little
    // even before claims is passed over without a look at any node.
    for (std::size_t n : touched_) released_here_[n] = false;
    touched_.clear();
    std::int64_t unclaimed = 0;  // sum of fit_ over the nodes that are up
    for (std::size_t i = 0; i < cluster_.size(); ++i) {
      const NodeId node(static_cast<NodeId::rep>(i));
      fit_[i] = cluster_.state(node) == NodeState::kUp ? counted(cluster_.free(node)) : 0;
      unclaimed += fit_[i];
    }
    std::size_t released = 0;  // running_ is in deadline order
    for (Time start : times_) {
      for (; released < running_.size() && running_[released].deadline <= start; ++released) {
        for (const NodePlacement& np : running_[released].placement->nodes) {
          const std::size_t n = np.node.value();
          if (!released_here_[n]) {
            at_start_[n] = cluster_.free(np.node);  // reuses the storage of earlier calls
            released_here_[n] = true;
            touched_.push_back(n);
          }
          cluster_.give_back(at_start_[n], np);
          if (cluster_.state(np.node) != NodeState::kUp) continue;
          unclaimed -= fit_[n];
          fit_[n] = counted(at_start_[n]);
          unclaimed += fit_[n];
        }
      }
      if (unclaimed < needed) continue;
      const Time end = start + job.spec->walltime;
      if (fewest_free_cores(start, end) < static_cast<std::int64_t>(r.total_cores())) continue;
      usable_.clear();
      std::int64_t found = 0;
      for (std::size_t i = 0; i < cluster_.size() && found < needed; ++i) {
        if (fit_[i] == 0) continue;
        std::int64_t holds = fit_[i];
        if (overlaps_claim(i, start, end)) {
          scratch_ = capacity_at(i);
          holds = subtract_claims(scratch_, i, start, end) ? counted(scratch_) : 0;
        }
        if (holds == 0) continue;
        found += holds;
        usable_.push_back(i);
      }
      if (found < needed) continue;
      // A node's share is what the placer will ask of it: ranks_per_node on every node of a
      // fixed shape (the last node's fewer ranks included), the rest of a packed job.
      unsigned left = r.tasks;
      for (std::size_t n : usable_) {
        if (left == 0) break;
        NodeCapacity cap = capacity_at(n);
        (void)subtract_claims(cap, n, start, end);
        NodeCapacity after = cap;
        const unsigned taken =
            take_ranks(after, r, r.ranks_per_node != 0 ? r.ranks_per_node : left);
        left -= std::min(left, taken);
        claims_[n].push_back({start, end, difference(cap, after)});
        const std::int64_t held = cores_of(claims_[n].back().usage);
        free_cores_[start] -= held;
        free_cores_[end] += held;
      }
      if (auto at = std::ranges::lower_bound(times_, end); at == times_.end() || *at != end)
        times_.insert(at, end);
      reservations_.push_back({job.id, start});
      return true;
    }
    return true;  // does not fit even once everything has ended: nodes are down
  }

  bool may_start(const QueuedJob& job, const Placement& placement) override {
    const Time end = now_ + job.spec->walltime;
    for (const NodePlacement& np : placement.nodes) {
      const std::vector<Claim>& claims = claims_[np.node.value()];
      if (claims.empty()) continue;
      NodeCapacity live = cluster_.free(np.node);
      NodeCapacity after = live;
      cluster_.take(after, np);
      const NodeCapacity usage = difference(live, after);
      for (const Claim& claim : claims) {
        if (claim.start >= end) continue;  // the job is gone by then
        std::optional<NodeCapacity> cap = capacity_over(np.node, claim.start, claim.end);
        if (!cap || !subtract(*cap, usage)) return false;
      }
    }
    return true;
  }

  std::vector<Reservation> reservations() const override { return reservations_; }

 private:
  // Node n's capacity at the candidate start blocked() is at.
  const NodeCapacity& capacity_at(std::size_t n) const {
    return released_here_[n] ? at_start_[n] : cluster_.free(NodeId(static_cast<NodeId::rep>(n)));
  }

  static std::int64_t cores_of(const NodeCapacity& capacity) {
    std::int64_t cores = 0;
    for (const DomainCapacity& d : capacity.domains) cores += d.cores;
    return cores;
  }

  // The fewest cores free at once over [start, end), summed over the nodes: what a job's
  // cores can never exceed there, whatever their shape, so a start with fewer is passed
  // over without a look at any node. It counts a claim only while it holds, and the free
  // cores of an exclusive job's node: it may count more than blocked() finds, never less.
  std::int64_t fewest_free_cores(Time start, Time end) const {
    std::int64_t free = 0;
    auto it = free_cores_.begin();
    for (; it != free_cores_.end() && it->first <= start; ++it) free += it->second;
    std::int64_t fewest = free;
    for (; it != free_cores_.end() && it->first < end; ++it) {
      free += it->second;
      fewest = std::min(fewest, free);
    }
    return fewest;
  }

  bool overlaps_claim(std::size_t n, Time start, Time end) const {
    return std::ranges::any_of(claims_[n],
                               [&](const Claim& c) { return c.start < end && start < c.end; });
  }

  // cap less every claim on the node overlapping [start, end); false when they do not fit.
  bool subtract_claims(NodeCapacity& cap, std::size_t n, Time start, Time end) const {
    for (const Claim& claim : claims_[n]) {
      if (claim.start < end && start < claim.end && !subtract(cap, claim.usage)) return false;
    }
    return true;
  }

  // The node's capacity over [start, end): at start, with running jobs due by then gone,
  // less every claim overlapping the interval; nullopt when the claims do not fit.
  std::optional<NodeCapacity> capacity_over(NodeId node, Time start, Time end) const {
    NodeCapacity cap = cluster_.free(node);
    for (const auto& [deadline, np] : releases_[node.value()]) {
      if (deadline <= start) cluster_.give_back(cap, *np);
    }
    if (!subtract_claims(cap, node.value(), start, end)) return std::nullopt;
    return cap;
  }

  const Cluster& cluster_;
  std::span<const RunningJob> running_;
  Time now_;
  std::size_t depth_;        // blocked jobs planned at most; 0: every one
  std::size_t planned_ = 0;  // blocked jobs seen this pass
  // By node index: the running jobs' placements there, with their deadlines; the claims.
  std::vector<std::vector<std::pair<Time, const NodePlacement*>>> releases_;
  std::vector<std::vector<Claim>> claims_;
  // When capacity may grow, from now on, sorted and unique: the candidate starts.
  std::vector<Time> times_;
  // The cluster's free cores over time as changes: the nodes that are up now, the running
  // jobs' cores at their deadlines, the claims' while they hold (fewest_free_cores).
  std::map<Time, std::int64_t> free_cores_;
  std::vector<Reservation> reservations_;
  // blocked()'s scratch, kept between calls for their allocations: by node index, the
  // capacity at the candidate start where running jobs left it (where released_here_;
  // touched_ lists those), and what the node holds toward the job before claims.
  std::vector<NodeCapacity> at_start_;
  std::vector<bool> released_here_;
  std::vector<std::size_t> touched_;
  std::vector<std::int64_t> fit_;
  std::vector<std::size_t> usable_;
  NodeCapacity scratch_;
};

class ConservativeBackfill final : public BackfillPolicy {
 public:
  explicit ConservativeBackfill(std::size_t depth) : depth_(depth) {}
  std::string_view name() const override { return "conservative"; }
  std::unique_ptr<BackfillPass> begin(const Cluster& cluster, std::span<const RunningJob> running,
                                      Time now) const override {
    return std::make_unique<ConservativePass>(cluster, running, now, depth_);
  }

 private:
  std::size_t depth_;
};

}  // namespace

std::unique_ptr<BackfillPolicy> make_no_backfill() { return std::make_unique<NoBackfill>(); }
std::unique_ptr<BackfillPolicy> make_easy_backfill() { return std::make_unique<EasyBackfill>(); }
std::unique_ptr<BackfillPolicy> make_conservative_backfill(std::size_t depth) {
  return std::make_unique<ConservativeBackfill>(depth);
}

Result<std::unique_ptr<BackfillPolicy>> make_backfill(std::string_view name) {
  if (name == "none") return make_no_backfill();
  if (name == "easy") return make_easy_backfill();
  if (name == "conservative") return make_conservative_backfill();
  return make_error(
      ErrorCode::kInvalidArgument,
      fmt::format("unknown backfill policy \"{}\": expected none, easy or conservative", name));
}

}  // namespace loom::sched
