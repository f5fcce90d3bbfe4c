// Random workloads on mixed clusters, checked after every pass by a brute-force recount
// that shares no code with the cluster's own bookkeeping.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>
#include <queue>
#include <random>
#include <set>
#include <string_view>
#include <tuple>

#include "loom/hwtopo/load.hpp"
#include "loom/sched/scheduler.hpp"

namespace loom::sched {
namespace {

Time at(std::int64_t seconds) { return Time(std::chrono::seconds(seconds)); }

struct Workload {
  Cluster cluster;
  std::vector<NodeId> nodes;
};

Workload mixed_cluster(std::mt19937& rng) {
  auto snc = std::make_shared<const hwtopo::Topology>(
      hwtopo::load_synthetic("pack:2 numa:2(memory=16GiB) core:8 pu:2").value());
  auto xml = std::make_shared<const hwtopo::Topology>(
      hwtopo::load_xml(LOOM_SHARED_DIR "/topologies/24em64t-2n6c2t-pci.xml").value());
  auto small = std::make_shared<const hwtopo::Topology>(
      hwtopo::load_synthetic("pack:1 numa:1(memory=8GiB) core:4 pu:1").value());
  Workload w;
  const int count = 6 + static_cast<int>(rng() % 6);
  for (int i = 0; i < count; ++i) {
    NodeSpec spec;
    spec.name = fmt::format("n{}", i);
    switch (i % 3) {
      case 0:
        spec.topology = snc;
        spec.nvme = {{"nvme0", 0, 1ull << 40}, {"nvme1", 3, 1ull << 40}};
        break;
      case 1:
        spec.topology = xml;
        spec.nvme = {{"nvme0", 1, 512ull << 30}};
        break;
      default:
        spec.topology = small;
        break;
    }
    w.nodes.push_back(w.cluster.add_node(std::move(spec)));
  }
  return w;
}

JobSpec random_job(std::mt19937& rng) {
  auto pick = [&](unsigned n) { return static_cast<unsigned>(rng() % n); };
  JobSpec spec;
  spec.tasks = 1 + pick(24);
  spec.cpus_per_task = 1 + pick(4);
  if (pick(4) == 0) spec.mem_per_task = Bytes((1 + pick(6)) * (1ull << 30));
  if (pick(4) == 0) spec.bb_per_node = Bytes((1 + pick(8)) * (64ull << 30));
  if (pick(5) == 0) spec.tasks_per_node = 1 + pick(8);
  if (pick(10) == 0) spec.exclusive = true;
  if (pick(10) == 0) spec.spread_numa = true;
  spec.walltime = std::chrono::seconds(10 + pick(500));
  spec.account = pick(2) == 0 ? "physics" : "chemistry";
  return spec;
}

// Recounts every running placement against the topologies and fails on any over-commitment
// or broken NUMA rule.
void check_invariants(const Cluster& cluster, const std::map<JobId, Placement>& running,
                      const std::map<JobId, JobSpec>& specs) {
  std::map<std::pair<std::uint32_t, unsigned>, JobId> core_owner;
  std::map<std::pair<std::uint32_t, unsigned>, std::uint64_t> memory_used;  // node, domain os
  std::map<std::pair<std::uint32_t, unsigned>, std::uint64_t> nvme_used;    // node, device
  std::map<std::uint32_t, std::set<JobId>> jobs_on;
  for (const auto& [id, placement] : running) {
    const JobSpec& spec = specs.at(id);
    for (const NodePlacement& np : placement.nodes) {
      const hwtopo::Topology& t = cluster.topology(np.node);
      jobs_on[np.node.value()].insert(id);
      std::size_t previous_domain = 0;
      for (const RankPlacement& rank : np.ranks) {
        ASSERT_EQ(rank.cores.size(), spec.cpus_per_task) << "job " << id.value();
        for (unsigned core : rank.cores) {
          ASSERT_LT(core, t.cores.size());
          auto [it, fresh] = core_owner.emplace(std::pair{np.node.value(), core}, id);
          ASSERT_TRUE(fresh) << "core " << core << " of " << cluster.name(np.node)
                             << " given to jobs " << it->second.value() << " and " << id.value();
        }
        memory_used[{np.node.value(), rank.numa}] += rank.memory_bytes;
        const hwtopo::NumaDomain* domain = t.find_numa(rank.numa);
        ASSERT_NE(domain, nullptr);
        if (!spec.spread_numa) {
          for (unsigned core : rank.cores) {
            ASSERT_EQ(t.cores[core].numa, rank.numa) << "a rank crosses NUMA domains";
          }
          const auto index = static_cast<std::size_t>(domain - t.numa_domains.data());
          ASSERT_GE(index, previous_domain) << "ranks are not packed domain by domain";
          previous_domain = index;
        }
      }
      if (np.nvme) nvme_used[{np.node.value(), *np.nvme}] += np.bb_bytes;
      if (spec.bb_per_node.count() > 0) {
        ASSERT_TRUE(np.nvme.has_value());
      }
    }
  }
  for (const auto& [key, used] : memory_used) {
    const hwtopo::NumaDomain* d = cluster.topology(NodeId(key.first)).find_numa(key.second);
    ASSERT_LE(used, d->memory_bytes) << "memory over-committed";
  }
  for (const auto& [key, used] : nvme_used) {
    ASSERT_LE(used, cluster.nvme(NodeId(key.first))[key.second].capacity_bytes)
        << "NVMe over-committed";
  }
  for (const auto& [node, jobs] : jobs_on) {
    for (JobId id : jobs) {
      if (specs.at(id).exclusive) {
        ASSERT_EQ(jobs.size(), 1u) << "an exclusive job shares a node";
      }
    }
  }
  // The cluster's own free counts agree with the recount.
  for (std::size_t n = 0; n < cluster.size(); ++n) {
    const NodeId node(static_cast<NodeId::rep>(n));
    unsigned used = 0;
    for (const auto& [key, _] : core_owner) used += key.first == n ? 1 : 0;
    unsigned free = 0;
    for (const DomainCapacity& d : cluster.free(node).domains) free += d.cores;
    unsigned total = 0;
    for (const DomainCapacity& d : cluster.total(node).domains) total += d.cores;
    ASSERT_EQ(free + used, total) << cluster.name(node);
  }
}

struct Outcome {
  std::size_t accepted = 0;
  std::size_t completed = 0;
  std::size_t preempted = 0;  // runs cut short, each run again later
  std::size_t reservations_checked = 0;
};

// Replays `count` random jobs; with check_easy, asserts that no job starts later than the
// reservation it got when it first became the blocked head. Draining a node breaks any
// reservation that counted on it, so nodes drain only when reservations are not checked.
Outcome replay(std::uint32_t seed, std::unique_ptr<QueueOrder> order, bool check_easy,
               std::unique_ptr<BackfillPolicy> backfill = make_easy_backfill()) {
  std::mt19937 rng(seed);
  Workload w = mixed_cluster(rng);
  Scheduler scheduler(w.cluster, {std::move(order), std::move(backfill)});
  std::map<JobId, JobSpec> specs;
  std::map<JobId, Placement> running;
  std::map<JobId, Time> first_reservation;
  // End time, job, run: a preempted run's end is stale once the job's run count moves on.
  using Event = std::tuple<std::int64_t, JobId, unsigned>;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> ends;
  std::map<JobId, unsigned> runs;
  Outcome outcome;
  std::int64_t now = 0;
  std::uint64_t next_id = 1;
  const std::uint64_t count = 300;
  while (next_id <= count || !ends.empty() || scheduler.pending_count() > 0) {
    const std::int64_t next_arrival =
        next_id <= count ? now + static_cast<std::int64_t>(rng() % 40) : INT64_MAX;
    if (next_arrival == INT64_MAX && ends.empty()) {
      // Only drained nodes stand between the queue and the end: bring them back.
      for (NodeId node : w.nodes)
        EXPECT_TRUE(w.cluster.set_state(node, NodeState::kUp).has_value());
    } else {
      now = ends.empty() ? next_arrival : std::min(next_arrival, std::get<0>(ends.top()));
    }
    while (!ends.empty() && std::get<0>(ends.top()) == now) {
      const auto [end, id, run] = ends.top();
      ends.pop();
      if (run != runs[id]) continue;
      scheduler.finished(id, JobEnd::kCompleted, at(now));
      running.erase(id);
      ++outcome.completed;
    }
    if (now == next_arrival) {
      JobSpec spec = random_job(rng);
      const JobId id(next_id++);
      if (scheduler.submit(id, spec, at(now))) specs.emplace(id, spec);
    }
    if (!check_easy && rng() % 50 == 0) {  // a node drains now and then, and comes back
      const NodeId node = w.nodes[rng() % w.nodes.size()];
      const NodeState state =
          w.cluster.state(node) == NodeState::kUp ? NodeState::kDrain : NodeState::kUp;
      EXPECT_TRUE(w.cluster.set_state(node, state).has_value());
    }
    PassResult pass = scheduler.schedule(at(now));
    for (const Started& s : pass.started) {
      for (const NodePlacement& np : s.placement.nodes) {
        EXPECT_EQ(w.cluster.state(np.node), NodeState::kUp) << "a job started on a node not up";
      }
      const JobSpec& spec = specs.at(s.id);
      const std::int64_t run =
          1 + static_cast<std::int64_t>(rng() % static_cast<unsigned>(spec.walltime.count()));
      ends.emplace(now + run, s.id, ++runs[s.id]);
      running.emplace(s.id, s.placement);
      if (auto it = first_reservation.find(s.id); check_easy && it != first_reservation.end()) {
        EXPECT_LE(now, it->second.time_since_epoch().count())
            << "job " << s.id.value() << " was delayed past its reservation";
        ++outcome.reservations_checked;
      }
    }
    for (const Preemption& p : pass.preempted) {  // killed at once, queued again
      ++runs[p.victim];
      running.erase(p.victim);
      scheduler.requeue(p.victim, at(now));
      ++outcome.preempted;
    }
    // The head's: the first blocked job in order. Later reservations are re-planned every
    // pass, and conservative backfill promises them nothing across passes.
    if (!pass.reservations.empty())
      first_reservation.try_emplace(pass.reservations[0].job, pass.reservations[0].start);
    check_invariants(w.cluster, running, specs);
    if (::testing::Test::HasFatalFailure()) return outcome;
  }
  outcome.accepted = specs.size();
  return outcome;
}

TEST(Invariants, RandomWorkloadsNeverOvercommitOrBreakNumaRules) {
  for (std::uint32_t seed = 1; seed <= 4; ++seed) {
    SCOPED_TRACE(seed);
    for (const char* order : {"fcfs", "sjf", "srtf", "fairshare", "priority"}) {
      Outcome outcome = replay(seed, make_order(order).value(), false);
      ASSERT_FALSE(::testing::Test::HasFatalFailure()) << order;
      EXPECT_GT(outcome.accepted, 200u) << order;
      EXPECT_EQ(outcome.completed, outcome.accepted) << order << ": every accepted job runs";
      EXPECT_EQ(outcome.preempted > 0, std::string_view(order) == "srtf") << order;
    }
  }
}

TEST(Invariants, ConservativeBackfillKeepsTheInvariantsAndTheHeadsReservation) {
  std::size_t checked = 0;
  for (std::uint32_t seed = 1; seed <= 4; ++seed) {
    SCOPED_TRACE(seed);
    Outcome outcome = replay(seed, make_fcfs_order(), true, make_conservative_backfill());
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    EXPECT_EQ(outcome.completed, outcome.accepted);
    checked += outcome.reservations_checked;
  }
  EXPECT_GT(checked, 50u) << "too few reservations to say anything";
}

TEST(Invariants, EasyNeverDelaysTheHeadJobsReservation) {
  std::size_t checked = 0;
  for (std::uint32_t seed = 1; seed <= 12; ++seed) {
    SCOPED_TRACE(seed);
    Outcome outcome = replay(seed, make_fcfs_order(), true);
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    checked += outcome.reservations_checked;
  }
  EXPECT_GT(checked, 100u) << "too few reservations to say anything";
}

}  // namespace
}  // namespace loom::sched
