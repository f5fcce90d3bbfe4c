// The controller's durable state. The controller is the only writer; every change is
// committed (and fsynced) before it is acknowledged or acted on. Changes that arrive
// together go in one transaction (a group commit), never through a weaker `synchronous`.
//
// An interface, so that a replicated store (ZooKeeper, as Mesos does) can take its place.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "loom/common/error.hpp"
#include "loom/common/ids.hpp"
#include "loom/controller/reason.hpp"
#include "loom/proto/agent.pb.h"
#include "loom/proto/types.pb.h"

namespace loom::controller {

struct NewJob {
  std::string user;
  std::uint32_t uid = 0;
  std::int64_t submit_time = 0;  // seconds since the epoch
  v1::JobSpec spec;
};

// A transition: the fields to set on a job; unset optionals are left as they are.
// How a running job being killed ends once its processes are gone: CANCELLED (a cancel, a
// preemption that cancels) or PENDING (a preemption that requeues), with the reason.
struct Killing {
  v1::JobState state = v1::CANCELLED;
  Reason reason;
};

struct JobUpdate {
  JobId id;
  v1::JobState state = v1::PENDING;
  Reason reason;
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::optional<std::int64_t> start_time;
  std::optional<std::int64_t> end_time;
  std::optional<v1::Placement> placement;
  std::optional<std::string> staging;  // a serialized loom.v1.StagingReport
  std::optional<std::string> usage;    // a serialized loom.v1.Usage
  // Stored until the job is PENDING again (requeued) or ends; nullopt keeps what is.
  std::optional<Killing> killing;
};

struct JobRow {
  JobId id;
  std::string user;
  std::uint32_t uid = 0;
  v1::JobState state = v1::PENDING;
  Reason reason;
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::int64_t submit_time = 0;
  std::optional<std::int64_t> start_time;
  std::optional<std::int64_t> end_time;
  v1::JobSpec spec;
  v1::Placement placement;
  std::optional<JobId> array_job;  // an array's element: the array's id, and its index
  std::uint32_t array_index = 0;
  v1::StagingReport staging;       // what it staged, as its agents last reported
  std::optional<v1::Usage> usage;  // what its processes used, once it has ended
  std::optional<Killing> killing;  // set while a running job is being killed
};

struct NodeRow {
  std::string name;
  std::string topology_json;  // hwtopo's JSON
  std::optional<std::string> drain_reason;
  std::string nvme_json = "[]";  // [{"path", "numa", "capacity"}]
};

// A persistent burst buffer: a named slice on one node's device, owned by a user, that
// outlives jobs until destroyed. Each user names their own: loom-alice's and loom-bob's
// `scratch` are two buffers.
struct BufferRow {
  std::string name;
  std::string slice;  // its name on its node's device (burstbuffer::buffer_mount)
  std::string user;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::string node;
  std::string nvme;  // the device's path on the node
  std::uint64_t bytes = 0;
  std::int64_t created = 0;  // seconds since the epoch
  std::string account;       // charged for its bytes; empty: none
};

struct HistoryQuery {
  std::int64_t since = 0;
  std::int64_t until = std::numeric_limits<std::int64_t>::max();
  std::string user;
  JobId after{0};
  std::size_t limit = 1000;
};

// Accounts' decayed fair-share averages (sched::FairShare) as of `at`, seconds since the
// epoch.
struct StoredUsage {
  std::map<std::string, double> averages;
  std::int64_t at = 0;
};

class Store {
 public:
  virtual ~Store() = default;
  // Inserts jobs in one transaction and returns their ids, in order and consecutive;
  // durable on return. As an array, job i is element i + 1 of an array whose id is the
  // first job's.
  virtual Result<std::vector<JobId>> insert_jobs(std::span<const NewJob> jobs, bool as_array) = 0;
  // Applies transitions in one transaction; durable on return. An unknown id fails the
  // whole batch.
  virtual Status update_jobs(std::span<const JobUpdate> updates) = 0;
  // The jobs not yet ended and those ended at or after `ended_since` (seconds since the
  // epoch: 0 for every job; kUnfinished for none that ended), in id order.
  static constexpr std::int64_t kUnfinished = std::numeric_limits<std::int64_t>::max();
  virtual Result<std::vector<JobRow>> load_jobs(std::int64_t ended_since) const = 0;
  // One job, whatever its state; nullopt when there is none.
  virtual Result<std::optional<JobRow>> load_job(JobId id) const = 0;
  // The record `loom acct` reads: in id order after `query.after`, at most `query.limit`
  // jobs not ended before `query.since` and submitted by `query.until` (seconds since the
  // epoch), of `query.user` when it is not empty.
  virtual Result<std::vector<JobRow>> load_history(const HistoryQuery& query) const = 0;

  // Nodes, by name, as their agents registered them: a restarted controller knows its
  // nodes (DOWN until they re-register), and a drain outlives the node's agent.
  virtual Status save_node(const std::string& name, const std::string& topology_json,
                           const std::string& nvme_json) = 0;
  // Drains a known node (a reason) or resumes it (nullopt); durable on return.
  virtual Status set_drain(const std::string& node, const std::optional<std::string>& reason) = 0;
  virtual Result<std::vector<NodeRow>> load_nodes() const = 0;

  // Persistent burst buffers; a user takes a name once, and a slice is taken once
  // (kAlreadyExists).
  virtual Status save_buffer(const BufferRow& buffer) = 0;
  virtual Status delete_buffer(std::uint32_t uid, const std::string& name) = 0;
  virtual Result<std::vector<BufferRow>> load_buffers() const = 0;

  // Accounts' fair-share usage, replaced whole; none stored: empty, at 0.
  virtual Status save_usage(const StoredUsage& usage) = 0;
  virtual Result<StoredUsage> load_usage() const = 0;

  // Group commit: the writes between begin_batch() and end_batch() are one transaction,
  // durable (one fsync) once end_batch() returns; each write inside still succeeds or
  // fails whole, and is visible to the reads that follow it. A write the store refuses
  // (kNotFound, kAlreadyExists) takes back only itself; any other failure of a write inside
  // (the disk's) fails the whole batch too. An error from end_batch() means none of the
  // batch is stored: its caller must not act on any of it.
  virtual Status begin_batch() = 0;
  virtual Status end_batch() = 0;

  // Whether the store can be written now (an error says why: a full disk, an I/O error, a
  // read-only file): a durable write that changes nothing the controller reads. Outside a
  // batch, or it is not durable until the batch is.
  virtual Status probe() = 0;
};

// SQLite in WAL mode with synchronous=FULL, one file `state.db` under state_dir (created
// 0700). The schema is versioned: an older one is migrated, a newer one refused.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& state_dir);

// The schema version this build writes.
int store_schema_version();

}  // namespace loom::controller
