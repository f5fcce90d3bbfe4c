// Every numeric field of a job at its limits, as a raw request (any client may send one):
// 0, negative, the largest its type holds, past what the cluster holds. Each is refused
// naming the field, before anything is stored, or accepted and runnable; none wraps around.
#include <cstdint>
#include <functional>
#include <limits>

#include "job_manager_fixture.hpp"

namespace loom::controller {
namespace {

using namespace loom::controller::testing;

constexpr std::uint32_t kMaxU32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t kMaxU64 = std::numeric_limits<std::uint64_t>::max();
constexpr std::int64_t kMaxI64 = std::numeric_limits<std::int64_t>::max();

struct Case {
  const char* what;
  std::function<void(v1::JobSpec&)> set;
  const char* refused;  // what the refusal says; nullptr: accepted
};

const Case kCases[] = {
    {"no task", [](v1::JobSpec& s) { s.set_tasks(0); }, "--ntasks must be at least 1"},
    {"tasks past the cluster", [](v1::JobSpec& s) { s.set_tasks(kMaxU32); },
     "ntasks 4294967295 of 1 cores exceeds what the whole cluster holds (8 tasks)"},
    {"no core", [](v1::JobSpec& s) { s.set_cpus_per_task(0); },
     "--cpus-per-task must be at least 1"},
    {"cores past the cluster", [](v1::JobSpec& s) { s.set_cpus_per_task(kMaxU32); },
     "cpus-per-task 4294967295 exceeds the largest NUMA domain (4 cores); ask for --spread-numa "
     "to cross domains"},
    {"tasks times cores past 32 bits",
     [](v1::JobSpec& s) {
       s.set_tasks(65536);
       s.set_cpus_per_task(65536);
     },
     "cpus-per-task 65536 exceeds the largest NUMA domain (4 cores); ask for --spread-numa to "
     "cross domains"},
    {"memory past the cluster", [](v1::JobSpec& s) { s.set_mem_per_task(kMaxU64); },
     "mem-per-task 16 EiB exceeds the largest NUMA domain's memory (1 GiB); ask for "
     "--spread-numa to cross domains"},
    {"memory times tasks past 64 bits",
     [](v1::JobSpec& s) {
       s.set_tasks(2);
       s.set_mem_per_task(kMaxU64 / 2 + 1);
     },
     "mem-per-task 8 EiB exceeds the largest NUMA domain's memory (1 GiB); ask for "
     "--spread-numa to cross domains"},
    {"burst buffer past the cluster", [](v1::JobSpec& s) { s.set_bb_per_node(kMaxU64); },
     "bb 16 EiB exceeds the largest NVMe device (100 MiB)"},
    {"no walltime", [](v1::JobSpec& s) { s.set_walltime_s(0); },
     "--time must be a positive walltime"},
    {"negative walltime", [](v1::JobSpec& s) { s.set_walltime_s(-1); },
     "--time must be a positive walltime"},
    {"walltime past any clock", [](v1::JobSpec& s) { s.set_walltime_s(kMaxI64); },
     "--time 106751991167300-15:30:07: at most 365-00:00:00"},
    {"walltime of a year", [](v1::JobSpec& s) { s.set_walltime_s(std::int64_t{365} * 86400); },
     nullptr},
    {"nodes past the cluster",
     [](v1::JobSpec& s) {
       s.set_tasks(2);
       s.set_nodes_min(2);
     },
     "nodes 2 exceeds the cluster's 1 nodes"},
    {"nodes_max at its largest", [](v1::JobSpec& s) { s.set_nodes_max(kMaxU32); }, nullptr},
    {"tasks per node that wraps the node count",
     [](v1::JobSpec& s) {
       s.set_tasks(2);
       s.set_tasks_per_node(kMaxU32);
     },
     // The node count once wrapped to 0, and the job was accepted.
     "4294967295 tasks per node of 1 cores fit on 0 of the cluster's nodes, and 1 are asked for "
     "(a node holds at most 8)"},
    {"priority at its lowest",
     [](v1::JobSpec& s) { s.set_priority(std::numeric_limits<std::int32_t>::min()); }, nullptr},
    {"priority at its highest",
     [](v1::JobSpec& s) { s.set_priority(std::numeric_limits<std::int32_t>::max()); }, nullptr},
    {"dependency on job 0", [](v1::JobSpec& s) { s.add_dependencies()->set_job(0); },
     "--dependency names job 0, which cannot exist"},
};

TEST_F(JobManagerTest, EveryNumericFieldAtItsLimitsIsRefusedNamingItOrRuns) {
  for (const Case& c : kCases) {
    v1::JobSpec s = spec(1);
    c.set(s);
    auto submitted = submit(kAlice, s, at(0));
    if (c.refused == nullptr) {
      EXPECT_TRUE(submitted.has_value()) << c.what << ": " << submitted.error().to_string();
      continue;
    }
    if (submitted.has_value()) {
      ADD_FAILURE() << c.what << ": accepted";
      continue;
    }
    EXPECT_EQ(submitted.error().code(), ErrorCode::kInvalidArgument) << c.what;
    EXPECT_EQ(submitted.error().message(), c.refused) << c.what;
  }
}

}  // namespace
}  // namespace loom::controller
