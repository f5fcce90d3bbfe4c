// A job's slice of a node's NVMe device: a filesystem of its own size, mounted for the job
// and owned by its user, so that a write past its capacity fails with ENOSPC. This kernel
// has no quota support; as LVM-backed burst buffers do, each slice is a loop-mounted image
// (ext4 without a journal or reserved blocks: scratch space, nearly all of it usable).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "loom/burstbuffer/names.hpp"
#include "loom/common/error.hpp"

namespace loom::burstbuffer {

struct SliceSpec {
  std::filesystem::path image;  // the backing file, on the node's NVMe device
  std::filesystem::path mount;  // where the job sees it (LOOM_BB_DIR)
  std::uint64_t bytes = 0;
  uid_t uid = 0;  // the job's user: owns the slice's root
  gid_t gid = 0;
  mode_t mode = 0700;
  // fallocate the image, so that its bytes are taken from the device at once. A device
  // that `loom up` simulates is a sparse image instead: its filesystem's size is what
  // makes it full, and the host's disk is used only as it fills.
  bool preallocate = true;
};

class Slice {
 public:
  // Makes the image, its filesystem, mounts it (nosuid, nodev) and hands its root to the
  // user. On failure nothing is left behind.
  static Result<Slice> create(const SliceSpec& spec);
  // A slice mounted before (an agent that restarted): its mount must be in place.
  static Result<Slice> find(const std::filesystem::path& image, const std::filesystem::path& mount);
  // A slice whose image is there but not mounted (the machine restarted, or `loom up` with
  // a state directory again): mounted again, contents as they were. Found if mounted.
  static Result<Slice> attach(const std::filesystem::path& image,
                              const std::filesystem::path& mount);

  Slice(Slice&& other) noexcept : image_(std::move(other.image_)), mount_(std::move(other.mount_)) {
    other.mount_.clear();
  }
  Slice& operator=(Slice&&) = delete;
  ~Slice();  // does not unmount: a slice outlives its agent until destroy()

  const std::filesystem::path& dir() const { return mount_; }
  // Unmounts (lazily if something still holds it) and removes the image and mount point.
  Status destroy();

 private:
  Slice(std::filesystem::path image, std::filesystem::path mount)
      : image_(std::move(image)), mount_(std::move(mount)) {}
  std::filesystem::path image_;
  std::filesystem::path mount_;
};

// The persistent buffers whose images are on the device: their slices (buffer_image).
std::vector<std::string> buffers_on(const std::filesystem::path& device);

// The jobs that have a slice image on the device.
std::vector<std::uint64_t> slices_on(const std::filesystem::path& device);
// The jobs that have a file DEVICE/.loom/job_ID`extension` (".img": slices_on).
std::vector<std::uint64_t> job_files_on(const std::filesystem::path& device,
                                        std::string_view extension);
// Unmounts and removes a job's slice, whatever state it was left in.
Status remove_slice(const std::filesystem::path& device, std::uint64_t job);

// Whether `dir` is a mount point (in this mount namespace).
bool is_mounted(const std::filesystem::path& dir);

// Opens `path` beneath the directory `root`, following no symlink and never leaving it
// (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): how an agent running as root opens
// anything in a slice or an export. The error names the path and why.
Result<int> open_beneath(int root, const std::filesystem::path& path, int flags, mode_t mode = 0);

}  // namespace loom::burstbuffer
