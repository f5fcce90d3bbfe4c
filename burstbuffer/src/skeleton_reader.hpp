// Users' HDF5 files are parsed by loom-h5skeleton (tools/loom_h5skeleton.cpp), never by the
// storage agent: a file made to crash the HDF5 library, or to spin in it, must not take the
// agent (root) with it, nor run code with its rights. The program is spawned for each
// Describe with the source file, the skeleton and two memfds for its answer as its only
// descriptors; it takes the user's identity before it reads anything and limits its own
// memory, CPU time and file sizes. A file that crashes it, or outlasts kTimeout, fails that
// one staging, naming the file; everybody else is served.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <span>
#include <string>

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
