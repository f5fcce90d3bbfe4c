#include "loom/sched/cluster.hpp"

#include <gtest/gtest.h>

#include "loom/hwtopo/load.hpp"

namespace loom::sched {
namespace {

// 2 packages x 2 NUMA domains x 16 cores, 64 GiB per domain; NVMe on domains 1 and 2.
std::shared_ptr<const hwtopo::Topology> dual_socket() {
  static auto topology = std::make_shared<const hwtopo::Topology>(
      hwtopo::load_synthetic("pack:2 numa:2(memory=64GiB) core:16 pu:2").value());
  return topology;
}

NodeSpec node(std::string name) {
  return {
      std::move(name), dual_socket(), {{"nvme0", 1, 3500ull << 30}, {"nvme1", 2, 3500ull << 30}}};
}

Request request(unsigned tasks, unsigned cpus, std::uint64_t mem = 0) {
  JobSpec spec;
  spec.tasks = tasks;
  spec.cpus_per_task = cpus;
  spec.mem_per_task = Bytes(mem);
  spec.walltime = std::chrono::minutes(10);
  return make_request(spec);
}

std::vector<unsigned> range(unsigned first, unsigned last) {
  std::vector<unsigned> out;
  for (unsigned i = first; i <= last; ++i) out.push_back(i);
  return out;
}

TEST(Place, RanksFillDomainByDomainWithMemoryOnTheirDomain) {
  Cluster cluster;
  cluster.add_node(node("n0"));
  auto p = cluster.place(request(4, 8, 4ull << 30));
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(p->nodes.size(), 1u);
  const auto& ranks = p->nodes[0].ranks;
  ASSERT_EQ(ranks.size(), 4u);
  EXPECT_EQ(ranks[0].cores, range(0, 7));
  EXPECT_EQ(ranks[0].numa, 0u);
  EXPECT_EQ(ranks[1].cores, range(8, 15));
  EXPECT_EQ(ranks[1].numa, 0u);
  EXPECT_EQ(ranks[2].cores, range(16, 23));
  EXPECT_EQ(ranks[2].numa, 1u);
  EXPECT_EQ(ranks[3].numa, 1u);
  EXPECT_EQ(ranks[3].memory_bytes, 4ull << 30);
}

TEST(Place, ARankStaysInOneDomainWhenItFitsThere) {
  Cluster cluster;
  NodeId n = cluster.add_node(node("n0"));
  // 12 cores: rank 0 takes 0-11 of domain 0; rank 1 does not fit the 4 left there.
  auto p = cluster.place(request(2, 12));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->nodes[0].ranks[1].cores, range(16, 27));
  EXPECT_EQ(p->nodes[0].ranks[1].numa, 1u);
  cluster.allocate(*p);
  EXPECT_EQ(cluster.free_cores(n, 0), range(12, 15));
}

TEST(Place, MemoryLimitsRanksPerDomain) {
  Cluster cluster;
  cluster.add_node(node("n0"));
  // 40 GiB per rank: one per 64 GiB domain, so four ranks use all four domains.
  auto p = cluster.place(request(4, 1, 40ull << 30));
  ASSERT_TRUE(p.has_value());
  for (unsigned i = 0; i < 4; ++i) EXPECT_EQ(p->nodes[0].ranks[i].numa, i);
  EXPECT_FALSE(cluster.place(request(5, 1, 40ull << 30)).has_value());
}

TEST(Place, TheSliceGoesOnTheDeviceLocalToMostRanks) {
  Cluster cluster;
  cluster.add_node(node("n0"));
  JobSpec spec;
  spec.tasks = 40;  // domains 0, 1 full (32 ranks), 8 on domain 2
  spec.bb_per_node = Bytes(1ull << 40);
  spec.walltime = std::chrono::minutes(1);
  auto p = cluster.place(make_request(spec));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->nodes[0].nvme, 0u);  // nvme0 is on domain 1 (16 ranks); nvme1 on domain 2 (8)
  EXPECT_EQ(p->nodes[0].bb_bytes, 1ull << 40);
}

TEST(Place, SmallJobsFillAPartlyUsedNodeFirst) {
  Cluster cluster;
  NodeId a = cluster.add_node(node("a"));
  NodeId b = cluster.add_node(node("b"));
  auto first = cluster.place(request(8, 1));
  ASSERT_TRUE(first.has_value());
  cluster.allocate(*first);
  EXPECT_EQ(first->nodes[0].node, a);
  auto second = cluster.place(request(8, 1));
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->nodes[0].node, a);  // best fit: a has 56 free, b 64
  auto big = cluster.place(request(64, 1));
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->nodes[0].node, b);
}

TEST(Place, TasksPerNodeSpreadsOverNodes) {
  Cluster cluster;
  for (int i = 0; i < 4; ++i) cluster.add_node(node("n" + std::to_string(i)));
  JobSpec spec;
  spec.tasks = 10;
  spec.tasks_per_node = 4;
  spec.walltime = std::chrono::minutes(1);
  auto p = cluster.place(make_request(spec));
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(p->nodes.size(), 3u);
  EXPECT_EQ(p->nodes[0].ranks.size(), 4u);
  EXPECT_EQ(p->nodes[2].ranks.size(), 2u);
  EXPECT_EQ(p->nodes[2].ranks.back().rank, 9u);
  spec.tasks_per_node = 0;
  spec.nodes_min = 4;  // -N 4 -n 10: 3, 3, 2, 2 as Slurm's block distribution
  p = cluster.place(make_request(spec));
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(p->nodes.size(), 4u);
  EXPECT_EQ(p->nodes[1].ranks.size(), 3u);
  EXPECT_EQ(p->nodes[2].ranks.size(), 2u);
}

TEST(Place, SpreadNumaLetsARankCrossDomains) {
  Cluster cluster;
  cluster.add_node(node("n0"));
  JobSpec spec;
  spec.cpus_per_task = 24;
  spec.spread_numa = true;
  spec.walltime = std::chrono::minutes(1);
  auto p = cluster.place(make_request(spec));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->nodes[0].ranks[0].cores, range(0, 23));
  EXPECT_EQ(p->nodes[0].ranks[0].numa, 0u);  // 16 of its cores are on domain 0
}

TEST(Place, ExclusiveJobsTakeWholeIdleNodes) {
  Cluster cluster;
  NodeId a = cluster.add_node(node("a"));
  NodeId b = cluster.add_node(node("b"));
  auto small = cluster.place(request(1, 1));
  cluster.allocate(*small);
  JobSpec spec;
  spec.exclusive = true;
  spec.walltime = std::chrono::minutes(1);
  auto p = cluster.place(make_request(spec));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->nodes[0].node, b);
  cluster.allocate(*p);
  auto another = cluster.place(request(1, 1));
  ASSERT_TRUE(another.has_value());
  EXPECT_EQ(another->nodes[0].node, a);  // b's 63 free cores are the exclusive job's
}

TEST(Place, DrainedNodesTakeNothingNew) {
  Cluster cluster;
  NodeId a = cluster.add_node(node("a"));
  NodeId b = cluster.add_node(node("b"));
  ASSERT_TRUE(cluster.set_state(a, NodeState::kDrain).has_value());
  auto p = cluster.place(request(1, 1));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->nodes[0].node, b);
  ASSERT_TRUE(cluster.set_state(b, NodeState::kDown).has_value());
  EXPECT_FALSE(cluster.place(request(1, 1)).has_value());
}

TEST(Place, ReleaseGivesEverythingBack) {
  Cluster cluster;
  NodeId n = cluster.add_node(node("n0"));
  JobSpec spec;
  spec.tasks = 5;
  spec.cpus_per_task = 3;
  spec.mem_per_task = Bytes(1ull << 30);
  spec.bb_per_node = Bytes(1ull << 30);
  spec.walltime = std::chrono::minutes(1);
  auto p = cluster.place(make_request(spec));
  ASSERT_TRUE(p.has_value());
  cluster.allocate(*p);
  EXPECT_NE(cluster.free(n), cluster.total(n));
  cluster.release(*p);
  EXPECT_EQ(cluster.free(n), cluster.total(n));
}

TEST(CheckFeasible, NamesWhatCanNeverFit) {
  Cluster cluster;
  cluster.add_node(node("n0"));
  auto fail = [&](const Request& r) {
    auto status = cluster.check_feasible(r);
    EXPECT_FALSE(status.has_value());
    return status ? std::string() : status.error().message();
  };
  EXPECT_EQ(fail(request(1, 20)),
            "cpus-per-task 20 exceeds the largest NUMA domain (16 cores); ask for --spread-numa "
            "to cross domains");
  EXPECT_EQ(fail(request(1, 1, 65ull << 30)),
            "mem-per-task 65 GiB exceeds the largest NUMA domain's memory (64 GiB); ask for "
            "--spread-numa to cross domains");
  EXPECT_EQ(fail(request(65, 1)),
            "ntasks 65 of 1 cores exceeds what the whole cluster holds (64 tasks)");
  JobSpec spec;
  spec.bb_per_node = Bytes(4ull << 40);
  spec.walltime = std::chrono::minutes(1);
  EXPECT_EQ(fail(make_request(spec)), "bb 4 TiB exceeds the largest NVMe device (3.42 TiB)");
  spec = {};
  spec.tasks = 4;
  spec.nodes_min = 2;
  spec.walltime = std::chrono::minutes(1);
  EXPECT_EQ(fail(make_request(spec)), "nodes 2 exceeds the cluster's 1 nodes");
  spec.cpus_per_task = 20;
  spec.spread_numa = true;
  spec.nodes_min = 0;
  spec.tasks = 4;
  spec.tasks_per_node = 4;
  EXPECT_EQ(fail(make_request(spec)),
            "4 tasks per node of 20 cores fit on 0 of the cluster's nodes, and 1 are asked for (a "
            "node holds at most 3)");
  EXPECT_TRUE(cluster.check_feasible(request(64, 1)).has_value());
}

}  // namespace
}  // namespace loom::sched
