// A job as its node's agent records it (agent.state_dir/job_ID.json), for the agent after
// it: being launched (which ranks), running (each task's keeper), staging out (the end its
// ranks made), or ended (its end, kept until the controller acknowledges it).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <utility>
#include <vector>

#include "loom/agent/task.hpp"
#include "loom/common/error.hpp"
#include "loom/common/ids.hpp"
#include "loom/proto/agent.pb.h"

namespace loom::agent {

struct JobRecord {
  JobId id;
  v1::Launch launch;
  // Set while its ranks are being started: an agent that stops then leaves this, and the
  // next one kills what started and fails the job.
  std::optional<std::vector<std::uint32_t>> launching;
  std::vector<std::pair<std::uint32_t, TaskRecord>> ranks;  // rank, and its task's keeper
  v1::JobStarted started;                 // as reported: sent again at each registration
  bool daemon = false;                    // an MPI job's node waiting for Open MPI's daemon
  std::optional<TaskRecord> pmix_server;  // --mpi=pmix: the job's PMIx server here
  // Set once its ranks have ended and it stages out: the end they made. An agent that
  // stops during the copy leaves this, and the next one stages out again and reports it.
  std::optional<v1::JobEnded> staging_out;
  std::optional<v1::JobEnded> ended;
};

class JobRecords {
 public:
  // The directory, made mode 0700 when missing.
  static Result<JobRecords> open(std::filesystem::path dir);

  // Written whole, then renamed: a crash leaves the old record or the new one.
  Status save(const JobRecord& record) const;
  // The job's record; nullopt when it has none, or one that cannot be read.
  std::optional<JobRecord> load(JobId id) const;
  void remove(JobId id) const;
  // Every record. One that does not parse or lacks what a record has (a disk that filled,
  // a hand edit) is set aside as job_ID.json.bad, logged with why: it must not stop the
  // agent from starting, nor be read again at every start.
  std::vector<JobRecord> load_all() const;

 private:
  explicit JobRecords(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::filesystem::path path(JobId id) const;
  std::filesystem::path dir_;
};

}  // namespace loom::agent
