// The job manager's tests' fixture: a controller on a state directory of its own, with one
// node of 8 cores and a 100 MiB NVMe device, reopened to play a restart.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "loom/controller/job_manager.hpp"
#include "loom/hwtopo/json.hpp"
#include "loom/hwtopo/load.hpp"
#include "temp.hpp"

namespace loom::controller::testing {

inline sched::Time at(std::int64_t s) { return sched::Time(std::chrono::seconds(s)); }

inline Ending exited(int code) {
  Ending e;
  e.exit_code = code;
  return e;
}
inline Ending killed_by(int signal) {
  Ending e;
  e.exit_code = 128 + signal;
  e.signal = signal;
  return e;
}

inline const Caller kAlice{1001, "loom-alice", false, 1001};
inline const Caller kBob{1002, "loom-bob", false, 1002};
inline const Caller kAdmin{0, "root", true};

inline v1::JobSpec spec(unsigned tasks, std::int64_t walltime_s = 600) {
  v1::JobSpec s;
  s.set_name("t");
  s.set_tasks(tasks);
  s.set_cpus_per_task(1);
  s.set_walltime_s(walltime_s);
  s.add_argv("/bin/true");
  return s;
}

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }
  void TearDown() override {
    manager_.reset();
    std::filesystem::remove_all(dir_);
  }
  // A controller (re)starting on the same state directory, with one node of 8 cores.
  void reopen(sched::Time now = at(0)) {
    manager_.reset();
    cluster_ = sched::Cluster();
    auto store = open_sqlite_store(dir_);
    ASSERT_TRUE(store.has_value()) << store.error().to_string();
    auto manager = JobManager::open(std::move(*store), cluster_, {}, now, [this] { ++changes_; });
    ASSERT_TRUE(manager.has_value()) << manager.error().to_string();
    manager_ = std::move(*manager);
    join("n0");
  }
  // n0's agent registers: 8 cores in 2 domains, a 100 MiB NVMe device on domain 1.
  void join(const std::string& name) {
    auto node = manager_->joined(
        name, hwtopo::to_json(hwtopo::load_synthetic("pack:1 numa:2 core:4 pu:1").value()),
        {{"/nvme-" + name, 1u, std::uint64_t{100} << 20}});
    ASSERT_TRUE(node.has_value()) << node.error().to_string();
  }
  JobRow row(JobId id) { return manager_->show(kAdmin, id).value(); }
  // An agent's report that it started the job's ranks, without their binding.
  static v1::JobStarted start_of(JobId id) {
    v1::JobStarted report;
    report.set_job(id.value());
    return report;
  }
  Result<JobId> submit(const Caller& caller, const v1::JobSpec& s, sched::Time now) {
    std::vector<JobId> ids = LOOM_TRY(manager_->submit(caller, s, 0, now));
    return ids.at(0);
  }

  std::filesystem::path dir_ = loom::testing::temp_path("state");
  sched::Cluster cluster_;
  std::unique_ptr<JobManager> manager_;
  int changes_ = 0;  // on_change calls
};

}  // namespace loom::controller::testing
