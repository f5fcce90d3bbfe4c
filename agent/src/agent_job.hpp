// A job as the agent runs it on this node; shared by the agent's threads.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "loom/agent/agent.hpp"
#include "loom/agent/job_storage.hpp"
#include "loom/agent/task.hpp"
#include "pmix_link.hpp"

namespace loom::agent {

struct Agent::Job {
  JobId id;
  v1::Launch launch;
  std::unique_ptr<JobStorage> storage;  // its slice and staging on this node
  std::mutex mutex;                     // guards tasks and daemon: kill() may come while they start
  // Its cgroup level, loom/<agent's level>/job_<id>/, removed once its tasks' cgroups
  // (the leaves, removed with the tasks below, destroyed first) are gone; kept when the
  // agent leaves the job running (tree reset).
  struct CgroupLevel {
    const CgroupTree* tree = nullptr;
    std::string name;
    ~CgroupLevel() {
      if (tree != nullptr) tree->remove_level(name);
    }
  } level;
  std::vector<Task> tasks;
  // An MPI job's node other than its first: Open MPI's daemon, all but its command line,
  // until mpirun asks for it through loom-rsh (exec()).
  std::optional<TaskSpec> daemon;
  // --mpi=pmix: the job's PMIx server here, and what it said of the ranks. Destroyed (the
  // server killed) once the ranks have ended, on the job's lane, never under `mutex`: its
  // reader may be waiting for it to end the ranks.
  std::unique_ptr<PmixLink> pmix;
  // What was reported when its tasks started here (the ranks' applied bindings); sent
  // again at each registration, for a controller that restarted before it stored it.
  v1::JobStarted started;
  std::atomic<bool> killed{false};  // a kill came: no staging starts or goes on
  std::atomic<bool> fenced{false};  // killed by the fence (agent.fence_after): NODE_FAIL
  // Set by a kill and by the agent's stop: a copy under way gives up.
  std::atomic<bool> interrupted{false};
  bool copies() const {
    return launch.spec().stage_in_files_size() > 0 || launch.spec().stage_out_files_size() > 0;
  }
};

}  // namespace loom::agent
