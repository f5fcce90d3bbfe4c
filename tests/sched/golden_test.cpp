// Golden tests, as Fluxion's t/t3001-resource-basic.t: a cluster and a job list in
// (golden/NAME.json), every start, reservation and end out, diffed against the checked-in
// golden/NAME.expected. LOOM_UPDATE_GOLDEN=1 rewrites the expectations; read the diff.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "loom/common/bytes.hpp"
#include "loom/common/duration.hpp"
#include "loom/common/index_list.hpp"
#include "loom/hwtopo/load.hpp"
#include "loom/sched/scheduler.hpp"

namespace loom::sched {
namespace {

using nlohmann::json;

const std::filesystem::path kGoldenDir = LOOM_SOURCE_DIR "/tests/sched/golden";

std::shared_ptr<const hwtopo::Topology> topology(const std::string& source) {
  auto t = source.starts_with("xml:")
               ? hwtopo::load_xml(std::filesystem::path(LOOM_SHARED_DIR "/topologies") /
                                  source.substr(4))
               : hwtopo::load_synthetic(source);
  EXPECT_TRUE(t.has_value()) << source << ": " << t.error().to_string();
  return std::make_shared<const hwtopo::Topology>(std::move(t).value());
}

std::uint64_t bytes(const json& j, const char* key) {
  return j.contains(key) ? parse_bytes(j[key].get<std::string>()).value().count() : 0;
}

JobSpec job_spec(const json& j) {
  JobSpec spec;
  spec.tasks = j.value("tasks", 1u);
  spec.cpus_per_task = j.value("cpus_per_task", 1u);
  spec.tasks_per_node = j.value("tasks_per_node", 0u);
  spec.nodes_min = j.value("nodes", 0u);
  spec.mem_per_task = Bytes(bytes(j, "mem_per_task"));
  spec.bb_per_node = Bytes(bytes(j, "bb"));
  spec.walltime = parse_duration(j.at("walltime").get<std::string>()).value();
  spec.exclusive = j.value("exclusive", false);
  spec.spread_numa = j.value("spread_numa", false);
  spec.account = j.value("account", "default");
  spec.priority = j.value("priority", 0);
  for (const json& d : j.value("afterok", json::array()))
    spec.dependencies.push_back({DependencyKind::kAfterOk, JobId(d.get<std::uint64_t>())});
  return spec;
}

std::string render(const Cluster& cluster, const Placement& p) {
  std::string out;
  for (const NodePlacement& np : p.nodes) {
    out += fmt::format("\n    {}:", cluster.name(np.node));
    for (const RankPlacement& r : np.ranks) {
      out += fmt::format(" r{} cores {} numa {}", r.rank, format_index_list(r.cores), r.numa);
      if (r.memory_bytes) out += fmt::format(" mem {}", format_bytes(Bytes(r.memory_bytes)));
      out += ";";
    }
    if (np.nvme)
      out += fmt::format(" slice {} {}", cluster.nvme(np.node)[*np.nvme].name,
                         format_bytes(Bytes(np.bb_bytes)));
    if (np.exclusive) out += " exclusive";
  }
  return out;
}

// Runs the scenario in simulated time: jobs arrive at "submit", run for "run" seconds
// (default: their walltime), and every event is followed by a scheduling pass.
std::string run_scenario(const json& scenario) {
  Cluster cluster;
  for (const json& group : scenario.at("nodes")) {
    auto t = topology(group.at("topology").get<std::string>());
    std::vector<NvmeDevice> nvme;
    for (const json& d : group.value("nvme", json::array())) {
      nvme.push_back(
          {d.at("name").get<std::string>(),
           d.contains("numa") ? std::optional<unsigned>(d["numa"].get<unsigned>()) : std::nullopt,
           bytes(d, "capacity")});
    }
    const unsigned count = group.value("count", 1u);
    for (unsigned i = 0; i < count; ++i) {
      cluster.add_node({fmt::format("{}{}", group.at("name").get<std::string>(), i), t, nvme});
    }
  }
  Scheduler scheduler(cluster, {make_order(scenario.value("order", "fcfs")).value(),
                                make_backfill(scenario.value("backfill", "easy")).value()});
  std::vector<std::pair<std::int64_t, json>> arrivals;
  for (const json& j : scenario.at("jobs")) arrivals.emplace_back(j.value("submit", 0), j);
  std::ranges::stable_sort(arrivals,
                           [](const auto& a, const auto& b) { return a.first < b.first; });
  std::map<std::uint64_t, std::int64_t> run_of;
  using Event = std::pair<std::int64_t, std::uint64_t>;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> ends;
  std::ostringstream out;
  std::size_t next = 0;
  while (next < arrivals.size() || !ends.empty()) {
    std::int64_t now = next < arrivals.size() ? arrivals[next].first : ends.top().first;
    if (!ends.empty()) now = std::min(now, ends.top().first);
    const Time t{std::chrono::seconds(now)};
    while (!ends.empty() && ends.top().first == now) {
      out << fmt::format("t={} end job {}\n", now, ends.top().second);
      scheduler.finished(JobId(ends.top().second), JobEnd::kCompleted, t);
      ends.pop();
    }
    for (; next < arrivals.size() && arrivals[next].first == now; ++next) {
      const json& j = arrivals[next].second;
      const std::uint64_t id = j.at("id").get<std::uint64_t>();
      JobSpec spec = job_spec(j);
      run_of[id] = j.value("run", static_cast<std::int64_t>(spec.walltime.count()));
      if (auto status = scheduler.submit(JobId(id), std::move(spec), t); !status) {
        out << fmt::format("t={} refuse job {}: {}\n", now, id, status.error().message());
      }
    }
    PassResult pass = scheduler.schedule(t);
    for (const Started& s : pass.started) {
      out << fmt::format("t={} start job {}{}\n", now, s.id.value(), render(cluster, s.placement));
      ends.emplace(now + run_of.at(s.id.value()), s.id.value());
    }
    for (const Reservation& r : pass.reservations) {
      out << fmt::format("t={} reserve job {} at t={}\n", now, r.job.value(),
                         r.start.time_since_epoch().count());
    }
    for (JobId id : pass.never_satisfiable)
      out << fmt::format("t={} never job {}\n", now, id.value());
  }
  return out.str();
}

std::string read(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(Golden, PlacementsMatchTheCheckedInExpectations) {
  std::vector<std::filesystem::path> inputs;
  for (const auto& entry : std::filesystem::directory_iterator(kGoldenDir)) {
    if (entry.path().extension() == ".json") inputs.push_back(entry.path());
  }
  std::ranges::sort(inputs);
  ASSERT_GE(inputs.size(), 4u);
  const bool update = std::getenv("LOOM_UPDATE_GOLDEN") != nullptr;
  for (const auto& input : inputs) {
    SCOPED_TRACE(input.filename().string());
    const std::string actual = run_scenario(json::parse(read(input)));
    auto expected_path = input;
    expected_path.replace_extension(".expected");
    if (update) std::ofstream(expected_path) << actual;
    EXPECT_EQ(actual, read(expected_path));
  }
}

}  // namespace
}  // namespace loom::sched
