// What an agent finds when it starts: the jobs an agent before it left, and what no job
// holds any more (cgroups, slices, shared-memory directories).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "agent_job.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/launch/plan.hpp"

namespace loom::agent {

// The state directory's records: jobs still running are adopted and watched again; ends
// not yet acknowledged are reported at the next registration.
void Agent::recover() {
  std::vector<std::shared_ptr<Job>> adopted;
  std::vector<std::pair<std::shared_ptr<Job>, v1::JobEnded>> staging_out;
  for (JobRecord& record : records_.load_all()) {
    const JobId id = record.id;
    if (record.launching) {
      // The agent before this one stopped while starting the job: whatever of it started
      // is killed, and the job reported failed here.
      const std::string level = launch::job_cgroup(o_.cgroup, id);
      for (std::uint32_t rank : *record.launching) {
        if (auto cgroup = cgroups_.open(fmt::format("{}/rank_{}", level, rank)))
          (void)cgroup->kill_all();
      }
      cgroups_.remove_level(level);
      v1::JobEnded e;
      e.set_job(id.value());
      e.set_exit_code(127);
      e.set_error("the agent stopped while starting the job");
      e.set_reason(v1::REASON_LAUNCH_FAILED);
      finish(id, e);
      continue;
    }
    if (record.ended) {
      std::lock_guard lock(jobs_mutex_);
      ended_[id] = *record.ended;
      continue;
    }
    auto job = make_job(record.launch);
    job->id = id;
    job->started = record.started;
    if (record.staging_out) {
      spdlog::info("job {}: its ranks had ended; staging out again", id.value());
      std::lock_guard lock(jobs_mutex_);
      jobs_[id] = job;
      staging_out.emplace_back(job, *record.staging_out);
      continue;
    }
    if (record.daemon) {
      abandon(*job, v1::REASON_LAUNCH_FAILED,
              "its agent restarted before Open MPI's daemon started here");
      continue;
    }
    std::string lost;
    for (const auto& [rank, tr] : record.ranks) {
      auto task = Task::adopt(cgroups_, tr);
      if (!task) {
        lost = task.error().to_string();
        continue;
      }
      job->tasks.push_back(std::move(*task));
    }
    if (!lost.empty()) {
      abandon(*job, v1::REASON_LAUNCH_FAILED, "lost by an agent restart: " + lost);
      continue;
    }
    if (record.pmix_server) {
      // Its ranks need it still; what it reported went with the agent before this one.
      if (auto server = Task::adopt(cgroups_, *record.pmix_server)) {
        job->pmix = PmixLink::adopt(std::move(*server), o_.name);
      } else {
        spdlog::warn("job {}: its PMIx server: {}", id.value(), server.error().to_string());
      }
    }
    spdlog::info("job {}: {} rank(s) still running, adopted", id.value(), job->tasks.size());
    {
      std::lock_guard lock(jobs_mutex_);
      jobs_[id] = job;
    }
    adopted.push_back(job);
  }
  // Persistent buffers are mounted again where a restart of the machine unmounted them.
  for (const Config::NvmeDevice& device : o_.nvme) {
    for (const std::string& slice : burstbuffer::buffers_on(device.path)) {
      if (auto b = burstbuffer::Slice::attach(burstbuffer::buffer_image(device.path, slice),
                                              burstbuffer::buffer_mount(device.path, slice));
          !b) {
        spdlog::error("burst buffer {} on {}: {}", slice, device.path, b.error().to_string());
      }
    }
  }
  sweep_orphans();
  // Watched only now: a job that ends at once must not be gone when the sweep looks.
  for (const std::shared_ptr<Job>& job : adopted) watch(job);
  for (auto& [job, e] : staging_out)
    copies_.post([this, job, e = std::move(e)] { stage_out(job, e); });
}

// Cgroups no adopted task holds, slices and shared-memory directories no job here holds
// (nor keeps, for a preempted job's next start): left by a launch cut short, or a teardown
// interrupted.
void Agent::sweep_orphans() {
  std::vector<std::string> held;
  std::set<JobId> running;
  {
    std::lock_guard lock(jobs_mutex_);
    for (const auto& [id, job] : jobs_) {
      running.insert(id);
      for (const Task& task : job->tasks) held.push_back(task.record().cgroup_name);
      if (job->pmix) held.push_back(job->pmix->server().record().cgroup_name);
    }
  }
  for (const std::string& name : cgroups_.sweep(o_.cgroup, held))
    spdlog::info("killed and removed the orphaned cgroup loom/{}", name);
  const std::vector<std::uint64_t> kept = kept_->jobs();
  for (const Config::NvmeDevice& device : o_.nvme) {
    for (std::uint64_t orphan : burstbuffer::slices_on(device.path)) {
      if (running.contains(JobId(orphan)) || std::ranges::find(kept, orphan) != kept.end())
        continue;
      if (auto removed = burstbuffer::remove_slice(device.path, orphan); !removed) {
        spdlog::error("cannot remove job {}'s orphaned slice on {}: {}", orphan, device.path,
                      removed.error().to_string());
      } else {
        spdlog::info("removed job {}'s orphaned slice on {}", orphan, device.path);
      }
    }
  }
  for (std::uint64_t orphan : shm_jobs_on(o_.shm_dir)) {
    if (running.contains(JobId(orphan))) continue;
    if (auto removed = remove_shm_job_dir(o_.shm_dir, orphan); !removed) {
      spdlog::error("job {}'s orphaned shared-memory directory: {}", orphan,
                    removed.error().to_string());
    } else {
      spdlog::info("removed job {}'s orphaned shared-memory directory in {}", orphan,
                   o_.shm_dir.string());
    }
  }
}

}  // namespace loom::agent
