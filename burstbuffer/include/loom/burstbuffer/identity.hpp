// Acting as a user on files, from a daemon running as root: the calling thread's
// file-system uid and gid and its supplementary groups become the user's, so that the
// kernel checks permissions as it would for the user, and root's overrides
// (CAP_DAC_OVERRIDE and the like) do not apply. Only this thread: the raw system calls
// are used, not glibc's wrappers, which would change every thread of the process.
#pragma once

#include <sys/types.h>

#include <vector>

#include "loom/common/error.hpp"

namespace loom::burstbuffer {

// The uid's supplementary groups, as the password and group databases say, with `gid`
// first; only `gid` when the uid has no entry.
std::vector<gid_t> user_groups(uid_t uid, gid_t gid);

class FsIdentity {
 public:
  // With the uid's supplementary groups as the password and group databases say.
  static Result<FsIdentity> assume(uid_t uid, gid_t gid);
  FsIdentity(FsIdentity&& other) noexcept
      : groups_(std::move(other.groups_)), active_(other.active_) {
    other.active_ = false;
  }
  FsIdentity& operator=(FsIdentity&&) = delete;
  ~FsIdentity();  // root again

 private:
  explicit FsIdentity(std::vector<gid_t> groups) : groups_(std::move(groups)) {}
  std::vector<gid_t> groups_;  // the thread's own, restored at the end
  bool active_ = true;
};

}  // namespace loom::burstbuffer
