// A job's end on this node: its tasks watched until they exit, stage-out, teardown, and the
// end recorded and reported; and the kills that hasten it.
#include <spdlog/spdlog.h>

#include <csignal>

#include "agent_job.hpp"
#include "controller_link.hpp"
#include "loom/common/printable.hpp"

namespace loom::agent {

// A job that copies files waits behind other copies (the stager takes one at a time); no
// other job waits behind a copy.
WorkPool& Agent::lane(const Job& job) { return job.copies() ? copies_ : work_; }

// Without a thread: each task's keeper is watched by pidfd, and once all have exited the
// job is completed on its lane.
void Agent::watch(const std::shared_ptr<Job>& job) {
  std::vector<std::optional<UniqueFd>> exits;
  {
    std::lock_guard lock(job->mutex);
    for (const Task& task : job->tasks) exits.push_back(task.exit_fd());
  }
  auto left = std::make_shared<std::atomic<std::size_t>>(exits.size() + 1);
  auto exited = [this, job, left] {
    if (left->fetch_sub(1) == 1) lane(*job).post([this, job] { complete(job); });
  };
  for (std::size_t i = 0; i < exits.size(); ++i) {
    auto task_exited = [this, job, i, exited] {
      if (job->pmix) rank_exited(*job, i);
      exited();
    };
    if (exits[i]) {
      watcher_->watch(std::move(*exits[i]), task_exited);
    } else {
      task_exited();  // it had exited already
    }
  }
  exited();
}

// An MPI rank's end (--mpi=pmix), seen as it comes: the first that fails the job ends the
// others, as mpirun does, and its status is the job's.
void Agent::rank_exited(Job& job, std::size_t index) {
  std::unique_lock lock(job.mutex);
  const std::optional<ExitStatus> status = job.tasks[index].status_written();
  const std::uint32_t rank = job.launch.ranks(static_cast<int>(index)).rank();
  lock.unlock();
  if (status && job.pmix->rank_ended(rank, *status)) end_ranks(job);
}

void Agent::end_ranks(Job& job) {
  std::lock_guard lock(job.mutex);
  for (Task& task : job.tasks) (void)task.kill();
}

// Collects the tasks' ends (the first failing rank's status is the job's), stages out
// unless the job was killed (cancelled, past its walltime, failed elsewhere), removes the
// slice and reports the end. An agent stopping leaves the job as recorded.
void Agent::complete(const std::shared_ptr<Job>& job) {
  if (stopped_.load()) return;
  v1::JobEnded e;
  e.set_job(job->id.value());
  for (Task& task : job->tasks) {
    auto status = task.wait();
    if (!status) {  // its keeper vanished, or wrote no status: it is lost
      if (e.error().empty()) {
        e.set_error(valid_utf8(status.error().to_string()));
        e.set_reason(v1::REASON_LAUNCH_FAILED);
      }
      if (e.exit_code() == 0) e.set_exit_code(127);
      continue;
    }
    if (status->exit_code != 0 && e.exit_code() == 0) {
      e.set_exit_code(status->exit_code);
      if (status->signal) e.set_signal(*status->signal);
    }
    if (status->out_of_memory) e.set_out_of_memory(true);
    v1::Usage* usage = e.mutable_usage();
    usage->set_cpu_seconds(usage->cpu_seconds() + status->usage.cpu_seconds);
    if (status->usage.memory_peak_bytes) {
      usage->set_memory_peak_bytes(
          std::max(usage->memory_peak_bytes(), *status->usage.memory_peak_bytes));
    }
  }
  if (job->pmix) {
    // Its first failing rank's status, in the order they failed: the ranks it ended fail
    // after it, by SIGKILL.
    if (const std::optional<RankFailure> failure = job->pmix->failure();
        failure && e.reason() == v1::REASON_NONE) {
      e.set_exit_code(failure->exit_code);
      if (failure->signal) {
        e.set_signal(*failure->signal);
      } else {
        e.clear_signal();
      }
      e.set_reason(failure->reason);
      e.set_error(failure->detail);
    }
    job->pmix.reset();  // the server goes with its ranks
  }
  fenced_end(*job, e);
  if (!job->killed.load() && job->storage->stages_out()) {
    // Recorded first: an agent stopped during the copy leaves it to the next one, which
    // stages out again (into a temporary name, renamed once whole) and reports this end.
    std::optional<JobRecord> record = records_.load(job->id);
    if (!record) record.emplace().id = job->id;  // lost meanwhile: the end is what matters
    record->launch = job->launch;
    record->staging_out = e;
    save(*record);
    stage_out(job, std::move(e));
    return;
  }
  if (auto removed = job->storage->teardown(); !removed)
    spdlog::error("job {}: removing its slice: {}", job->id.value(), removed.error().to_string());
  finish(job->id, e);
}

// The job's files out of its slice, then the slice removed and the end reported; a
// failure that is the first of the job's is its end. An agent stopping leaves the job as
// recorded.
void Agent::stage_out(const std::shared_ptr<Job>& job, v1::JobEnded e) {
  send_staging(*job, /*out=*/true);
  Status staged = job->storage->stage_out(job->interrupted);
  if (stopped_.load()) return;
  send_staging(*job, /*out=*/true);
  if (!staged && e.error().empty() && !job->killed.load()) {
    e.set_error(valid_utf8(staged.error().message()));
    e.set_reason(v1::REASON_STAGE_OUT_FAILED);
  }
  if (auto removed = job->storage->teardown(); !removed)
    spdlog::error("job {}: removing its slice: {}", job->id.value(), removed.error().to_string());
  finish(job->id, e);
}

// A job that cannot run here: what started of it is killed, its slice removed, and it
// ends failed with why.
void Agent::abandon(Job& job, v1::Reason reason, const std::string& error) {
  for (Task& task : job.tasks) (void)task.kill();
  for (Task& task : job.tasks) (void)task.wait();
  job.pmix.reset();
  (void)job.storage->teardown();
  v1::JobEnded e;
  e.set_job(job.id.value());
  e.set_exit_code(127);            // it ran nothing, as a shell says of a command it cannot run
  e.set_error(valid_utf8(error));  // it may name the user's command or paths, which are bytes
  e.set_reason(reason);
  finish(job.id, e);
}

// Killed before its ranks started (while staging in): it ends as a SIGTERMed job would.
void Agent::end_killed(Job& job) {
  v1::JobEnded e;
  e.set_job(job.id.value());
  e.set_exit_code(128 + SIGTERM);
  e.set_signal(SIGTERM);
  fenced_end(job, e);
  finish(job.id, e);
}

// The job's processes here are all gone: recorded, then reported (again at every
// registration until the controller says Forget).
void Agent::finish(JobId id, const v1::JobEnded& e) {
  JobRecord record;
  if (auto found = records_.load(id)) {
    record = std::move(*found);
  } else {
    record.id = id;  // a record lost meanwhile: the end is what matters now
  }
  record.launching.reset();
  record.ended = e;
  save(record);
  {
    std::lock_guard lock(jobs_mutex_);
    jobs_.erase(id);
    ended_[id] = e;
    // A SIGKILL still due is this run's: a requeued job may run here again, with its id.
    std::erase_if(kill_at_, [&](const auto& due) { return due.second == id; });
  }
  v1::FromAgent message;
  *message.mutable_ended() = e;
  link_->write(message);
}

void Agent::forget(JobId id) {
  std::lock_guard lock(jobs_mutex_);
  ended_.erase(id);
  records_.remove(id);
}

// SIGTERM now and SIGKILL after the grace period; at once without one. With `finish` the
// job ended well elsewhere (its mpirun): what is left here stops, and the job's end here
// goes on as if its tasks had ended (stage-out included). With `keep_slice` (preempted and
// requeued) its slice stays for its next start.
void Agent::kill(const v1::Kill& k) {
  const JobId id(k.job());
  const std::chrono::seconds grace(k.grace_s());
  std::lock_guard lock(jobs_mutex_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  const std::shared_ptr<Job> job = it->second;
  if (k.keep_slice()) job->storage->keep_slice();
  if (!k.finish()) {
    job->killed.store(true);
    job->interrupted.store(true);
  }
  std::lock_guard tasks(job->mutex);
  if (job->daemon) {  // nothing started here yet, and nothing will
    job->daemon.reset();
    work_.post([this, job] {
      if (auto removed = job->storage->teardown(); !removed) {
        spdlog::error("job {}: removing its slice: {}", job->id.value(),
                      removed.error().to_string());
      }
      end_killed(*job);
    });
    return;
  }
  if (grace.count() == 0) {
    for (Task& task : job->tasks) (void)task.kill();
    return;
  }
  for (Task& task : job->tasks) task.terminate();
  kill_at_.emplace(std::chrono::steady_clock::now() + grace, id);
  wake_.notify_all();
}

// Not fatal: the job runs on, but a restart of this agent would lose it (said so).
void Agent::save(const JobRecord& record) const {
  if (auto saved = records_.save(record); !saved) spdlog::error("{}", saved.error().to_string());
}

void Agent::send_staging(const Job& job, bool out) {
  v1::FromAgent message;
  *message.mutable_staging() = job.storage->report();
  if (out) message.mutable_staging()->set_out(true);
  if (message.staging().files_size() > 0) link_->write(message);
}

}  // namespace loom::agent
