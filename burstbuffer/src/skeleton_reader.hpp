// Users' HDF5 files are parsed by loom-h5skeleton (tools/loom_h5skeleton.cpp), never by an
// agent: a file made to crash the HDF5 library, or to spin in it, must not take the agent
// (root) with it, nor run code with its rights. It has two uses: the storage agent's
// Describe writes the skeleton of a user's file (describe_as_user), and the stager places
// the datasets' raw data in the skeleton it fetched (place_as_owner), a file that came from
// the user's file and that the user can write. The program is spawned for each, with the
// files it works on and two memfds for its answer as its only descriptors; it takes the
// user's identity before it reads anything and limits its own memory, CPU time and (making
// a skeleton) file sizes. A file that crashes it, or outlasts kTimeout, fails that one
// staging, naming the file; everybody else is served.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <span>
#include <string>

#include "loom/burstbuffer/skeleton_plan.hpp"
#include "loom/common/error.hpp"
#include "loom/proto/storage.pb.h"

namespace loom::burstbuffer {

// The limits loom-h5skeleton sets on itself, and the wall time it is given.
struct SkeletonLimits {
  static constexpr rlim_t kMemory = rlim_t{4} << 30;    // RLIMIT_AS
  static constexpr rlim_t kFileSize = rlim_t{4} << 30;  // RLIMIT_FSIZE: the skeleton
  static constexpr rlim_t kCpuSeconds = 60;             // RLIMIT_CPU
  static constexpr std::chrono::seconds kTimeout{120};  // then SIGKILL
};

// What write_skeleton() says of `source` (a descriptor opened as the user) for `datasets`,
// as a DescribeReply without its handle and size; the skeleton is written into
// `skeleton`. `program` is loom-h5skeleton. Errors say what failed; the caller names the file.
Result<v1::DescribeReply> describe_as_user(const std::filesystem::path& program, uid_t uid,
                                           gid_t gid, int source, int skeleton,
                                           std::span<const std::string> datasets);

// place_raw_data() in the skeleton open read-write as `skeleton`, run as the file's owner:
// the plan with each address where that data goes in the skeleton. An answer that does not
// parse is an error; what it says is the caller's to check (described_plan.hpp).
Result<SkeletonPlan> place_as_owner(const std::filesystem::path& program, int skeleton,
                                    const SkeletonPlan& plan);

// The exit status by which loom-h5skeleton says that write_skeleton() failed with `code`
// (its message on stderr), and back: 64 on, clear of 0, 1 and a shell's 126 to 128+.
inline constexpr int kFirstErrorStatus = 64;
inline int exit_status_of(ErrorCode code) { return kFirstErrorStatus + static_cast<int>(code); }
inline std::optional<ErrorCode> error_code_of(int exit_status) {
  const int code = exit_status - kFirstErrorStatus;
  if (code < 0 || code > static_cast<int>(ErrorCode::kUnauthenticated)) return std::nullopt;
  return static_cast<ErrorCode>(code);
}

}  // namespace loom::burstbuffer
