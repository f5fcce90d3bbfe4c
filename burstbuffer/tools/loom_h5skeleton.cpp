// loom-h5skeleton: reads the HDF5 structure of a user's file for the storage agent, as the
// user, so that a file made to crash or exhaust the HDF5 library costs only this process
// (src/skeleton_reader.hpp). Not run by hand: the agent spawns it with the source file as
// descriptor 3, the skeleton to write as 4, its answer (a loom.v1.DescribeReply) to go to
// stdout and an error to stderr, and nothing else.
#include <fmt/format.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <string>
#include <vector>

#include "loom/burstbuffer/hdf5_plan.hpp"
#include "loom/common/errno_text.hpp"
#include "skeleton_reader.hpp"

namespace {

using namespace loom;
using namespace loom::burstbuffer;

constexpr const char* kUsage =
    "usage: loom-h5skeleton UID GID GROUPS DATASET... 3< SOURCE 4<> SKELETON\n"
    "The storage agent's reader of users' HDF5 files, not run by hand: as UID (GID, and the\n"
    "comma-separated GROUPS), writes the skeleton of DATASETs of SOURCE into SKELETON and\n"
    "where their raw data lies (a loom.v1.DescribeReply) to stdout.\n";

[[noreturn]] void fail(ErrorCode code, const std::string& message) {
  (void)std::fprintf(stderr, "%s\n", message.c_str());
  std::_Exit(exit_status_of(code));
}

template <typename T>
T number(std::string_view text) {
  T value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size())
    fail(ErrorCode::kInvalidArgument, fmt::format("loom-h5skeleton: {} is not a number", text));
  return value;
}

// The user's identity for good (real, effective and saved), before anything is read. A
// change of credentials also leaves this process undumpable: its user cannot ptrace it or
// read its memory.
void become(uid_t uid, gid_t gid, const std::vector<gid_t>& groups) {
  if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(gid, gid, gid) != 0 ||
      ::setresuid(uid, uid, uid) != 0 || ::getuid() != uid || ::geteuid() != uid) {
    fail(ErrorCode::kPermissionDenied,
         fmt::format("loom-h5skeleton: cannot become uid {}: {}", uid, errno_text(errno)));
  }
  (void)::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

void limit(int resource, rlim_t soft, rlim_t hard) {
  const rlimit limits{soft, hard};
  if (::setrlimit(resource, &limits) != 0)
    fail(ErrorCode::kInternal, fmt::format("loom-h5skeleton: setrlimit: {}", errno_text(errno)));
}

v1::DescribeReply reply_of(const SkeletonPlan& plan) {
  v1::DescribeReply reply;
  reply.set_copied_bytes(plan.copied_bytes);
  for (const std::string& note : plan.notes) reply.add_notes(note);
  for (const DatasetPlan& p : plan.datasets) {
    v1::DatasetExtents* e = reply.add_datasets();
    e->set_path(p.path);
    e->set_kind(p.kind == DatasetPlan::Kind::kContiguous ? v1::DatasetExtents::CONTIGUOUS
                : p.kind == DatasetPlan::Kind::kChunked  ? v1::DatasetExtents::CHUNKED
                                                         : v1::DatasetExtents::COPIED);
    e->set_address(p.address);
    e->set_size(p.size);
    for (const ChunkExtent& c : p.chunks) {
      v1::Chunk* chunk = e->add_chunks();
      for (std::uint64_t x : c.coords) chunk->add_coords(x);
      chunk->set_filter_mask(c.filter_mask);
      chunk->set_address(c.address);
      chunk->set_size(c.size);
    }
  }
  return reply;
}

}  // namespace

// Errors are Results; an exception that escapes (bad_alloc under the memory limit) ends
// this process with SIGABRT, which the agent reports as the file's failure.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  if (argc > 1 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    (void)std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc < 5) {
    (void)std::fputs(kUsage, stderr);
    return 2;
  }
  std::vector<gid_t> groups;
  for (std::string_view rest = argv[3]; !rest.empty();) {
    const std::size_t comma = rest.find(',');
    groups.push_back(number<gid_t>(rest.substr(0, comma)));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  become(number<uid_t>(argv[1]), number<gid_t>(argv[2]), groups);
#ifndef __SANITIZE_ADDRESS__  // AddressSanitizer's shadow alone is terabytes of address space
  limit(RLIMIT_AS, SkeletonLimits::kMemory, SkeletonLimits::kMemory);
#endif
  limit(RLIMIT_FSIZE, SkeletonLimits::kFileSize, SkeletonLimits::kFileSize);
  // SIGXCPU at the soft limit; SIGKILL a second later should it be caught.
  limit(RLIMIT_CPU, SkeletonLimits::kCpuSeconds, SkeletonLimits::kCpuSeconds + 1);
  limit(RLIMIT_CORE, 0, 0);  // a crash leaves no core of the user's data behind
  const std::vector<std::string> datasets(argv + 4, argv + argc);
  const Result<SkeletonPlan> plan = write_skeleton("/proc/self/fd/3", datasets, 4);
  if (!plan) fail(plan.error().code(), plan.error().to_string());
  if (!reply_of(*plan).SerializeToFileDescriptor(1))
    fail(ErrorCode::kInternal,
         fmt::format("loom-h5skeleton: writing the answer: {}", errno_text(errno)));
  // Not exit(): nothing is left to flush, and what atexit would run has nothing to add (a
  // sanitizer's leak check cannot even stop the threads of an undumpable process).
  std::_Exit(0);
}
