// A job's storage on one node: its burst-buffer slice, and the files staged into it before
// the ranks start and out of it after they end; and an MPI job's shared-memory directory.
//
// Slices live on the node's NVMe devices (burstbuffer::slice_image and slice_mount).
// Everything the agent, running as root, does in a slice it
// does with the job user's file-system identity, opening beneath the slice's root and
// following no symlink: a job that turns out.h5 into a link to /etc/shadow gets an error.
#pragma once

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "loom/agent/kept_slices.hpp"
#include "loom/burstbuffer/data_plane.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/common/error.hpp"
#include "loom/proto/agent.pb.h"
#include "loom/proto/types.pb.h"

namespace loom::agent {

// The agent's one Stager, opened at the first staging; copies take it in turn.
class StagerPool {
 public:
  explicit StagerPool(burstbuffer::DataPlaneOptions options) : options_(std::move(options)) {}
  // Runs `copy` with the stager, opening it first if needed.
  Status with(const std::function<Status(burstbuffer::Stager&)>& copy);

 private:
  burstbuffer::DataPlaneOptions options_;
  std::mutex mutex_;
  std::unique_ptr<burstbuffer::Stager> stager_;
};

// An MPI job's directory under agent.shm_dir (`base`, root's, 0711): BASE/job_ID, the
// user's, 0700. Open MPI's session directory and shared-memory segments go there, so that
// a job killed mid-run leaves nothing in /dev/shm or /tmp once it is removed.
std::filesystem::path shm_job_dir(const std::filesystem::path& base, std::uint64_t job);
// Makes `base` (root's, 0711), or checks the one there: /dev/shm is anyone's, and a base a
// user made first (which failed every MPI job of the node) is refused, naming its owner.
Status make_shm_base(const std::filesystem::path& base);
// The jobs that have one under base.
std::vector<std::uint64_t> shm_jobs_on(const std::filesystem::path& base);
Status remove_shm_job_dir(const std::filesystem::path& base, std::uint64_t job);

// Why a job's storage failed it: its end's reason (LAUNCH_FAILED for the slice or the
// shared-memory directory, STAGE_IN_FAILED for a copy) and the error, the reason's detail.
struct StorageFailure {
  v1::Reason reason;
  Error error;
};

class JobStorage {
 public:
  JobStorage(v1::Launch launch, std::string node, std::filesystem::path shm_base,
             std::shared_ptr<StagerPool> stagers, std::shared_ptr<const KeptSlices> kept);

  // Makes an MPI job's shared-memory directory; creates the slice (if the job has one) and
  // stages every --stage-in file into it. A slice kept here from the job's run before its
  // preemption is taken back instead, and the files staged into it that the job did not
  // change are not staged again ("kept" in their notes). On failure they are gone again,
  // and the failure is the job's reason: STAGE_IN_FAILED, "storage:/in.h5 into node0's
  // slice: ...".
  std::expected<void, StorageFailure> prepare(const std::atomic<bool>& cancelled);
  // What the ranks see: LOOM_BB_DIR and LOOM_STAGED_FILES; for an MPI job, where Open MPI
  // puts its session directory and shared-memory segments.
  std::map<std::string, std::string> environment() const;
  // Whether this node stages out: the job has --stage-out, and this is its first node (or
  // any, with --stage-out-all).
  bool stages_out() const;
  // Stages out every --stage-out file ("NAME.NODE" with --stage-out-all). The first
  // failure is the job's STAGE_OUT_FAILED: "out.h5 from node0's slice to storage:/r/: ...".
  Status stage_out(const std::atomic<bool>& cancelled);
  // The job was preempted and requeued: teardown() keeps its slice for its next start.
  void keep_slice() { keep_.store(true); }
  // Removes the shared-memory directory, and the slice, or keeps it after keep_slice().
  Status teardown();

  // The staging as it stands, for the controller.
  v1::StagingReport report() const;
  bool staging() const { return staging_.load(); }  // a copy is under way

 private:
  struct File {
    v1::StagingFile shown;
    std::shared_ptr<burstbuffer::FileProgress> progress;
    std::chrono::steady_clock::time_point started, ended;  // ended: while running, unset
    std::optional<FileStamp> stamp;                        // a stage-in's, once it is whole
  };
  // Takes back the job's slice if it was kept here, whole and as this launch wants it (else
  // it is removed): the stamps of the files staged into it.
  std::vector<FileStamp> reclaim();
  std::vector<FileStamp> stamps() const;
  Status copy(File& file,
              const std::function<Status(burstbuffer::Stager&, burstbuffer::FileProgress&)>& body);
  Result<burstbuffer::Remote> remote(const std::string& node) const;
  Status make_shm_dir() const;

  v1::Launch launch_;
  std::string node_;
  std::filesystem::path shm_base_;
  std::shared_ptr<StagerPool> stagers_;
  std::shared_ptr<const KeptSlices> kept_;
  std::optional<burstbuffer::Slice> slice_;
  std::atomic<bool> keep_{false};
  std::uint32_t gid_ = 0;
  std::vector<std::string> staged_;  // paths in the slice
  mutable std::mutex mutex_;         // guards files_' shown fields
  std::vector<File> files_;
  std::atomic<bool> staging_{false};
};

}  // namespace loom::agent
