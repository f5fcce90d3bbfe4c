// A preempted job's slices, kept on their nodes while it waits to run again: its next start
// on the node finds its slice as it left it (a checkpoint it wrote there, say), and the
// files staged in that it did not change are not staged again.
//
// A record beside the slice's image (DEVICE/.loom/job_ID.kept, root's, as the image is)
// says whose slice it is and what each staged file was when its copy ended. The controller
// does not count kept slices: they hold room it may give to other jobs, so a slice or a
// persistent buffer made on the device evicts them, oldest first, until the images there
// leave room for it. The controller drops a kept slice (DropSlice) once its job starts
// elsewhere or ends.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "loom/common/config.hpp"
#include "loom/common/error.hpp"

namespace loom::agent {

// A file in a slice, as a copy into it left it: a job that writes to it or replaces it
// changes its size, its modification time or its inode.
struct FileStamp {
  std::string name;  // in the slice's root
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::uint64_t inode = 0;
  friend bool operator==(const FileStamp&, const FileStamp&) = default;
};
// The stamp of `name` in the directory `dir`; nullopt unless it is a regular file there.
std::optional<FileStamp> stamp_of(int dir, const std::string& name);

struct KeptSlice {
  std::uint64_t job = 0;
  uid_t uid = 0;
  std::uint64_t bytes = 0;
  std::vector<FileStamp> staged;  // its stage-in files whose copies had ended
};

// The node's kept slices. Its calls are serialised: a claim and an eviction never race.
class KeptSlices {
 public:
  explicit KeptSlices(std::vector<Config::NvmeDevice> devices) : devices_(std::move(devices)) {}

  // Records the job's slice on `device` (mounted, as its job left it) as kept.
  Status keep(const std::filesystem::path& device, const KeptSlice& slice) const;
  // The job's kept slice and its device, taken back for the job's start here: its record
  // goes, and the slice is the running job's again. Nullopt when none is kept (or its
  // record cannot be read: the slice is then an orphan, removed like one).
  struct Claimed {
    std::filesystem::path device;
    KeptSlice slice;
  };
  std::optional<Claimed> claim(std::uint64_t job) const;
  // Runs `make`, which makes a slice or a buffer of `bytes` on `device`, once the images on
  // the device and those bytes fit its capacity: kept slices of other jobs are removed
  // for it first, oldest first.
  Status with_room(const std::filesystem::path& device, std::uint64_t bytes,
                   const std::function<Status()>& make) const;
  // Removes the job's kept slice, wherever it is.
  void drop(std::uint64_t job) const;
  // The jobs with a kept slice here.
  std::vector<std::uint64_t> jobs() const;

 private:
  void remove(const std::filesystem::path& device, std::uint64_t job) const;
  std::vector<Config::NvmeDevice> devices_;
  mutable std::mutex mutex_;
};

}  // namespace loom::agent
