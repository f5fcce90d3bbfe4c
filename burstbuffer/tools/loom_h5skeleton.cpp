// loom-h5skeleton: parses HDF5 files that came from users, as the user, so that a file made
// to crash or exhaust the HDF5 library costs only this process (src/skeleton_reader.hpp).
// Not run by hand. The storage agent spawns it with the source file as descriptor 3 and the
// skeleton to write as 4; the stager with the plan on stdin and the fetched skeleton as 4.
// Its answer (a loom.v1.DescribeReply) goes to stdout, an error to stderr; it has nothing
// else.
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
    "       loom-h5skeleton --place UID GID < PLAN 4<> SKELETON\n"
    "Staging's reader of users' HDF5 files, not run by hand. As UID (GID, and the\n"
    "comma-separated GROUPS), writes the skeleton of DATASETs of SOURCE into SKELETON and\n"
    "where their raw data lies (a loom.v1.DescribeReply) to stdout. With --place, as UID\n"
    "and GID alone, allocates in SKELETON the raw data PLAN lists (a loom.v1.DescribeReply)\n"
    "and writes where each part goes there, as a plan, to stdout.\n";

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
// read its memory. Run by the user already (loom stage), it stays as it is.
void become(uid_t uid, gid_t gid, const std::vector<gid_t>& groups) {
  if (::geteuid() != 0 && ::getuid() == uid && ::getgid() == gid) {
    (void)::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    return;
  }
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

// The limits both uses run under; a skeleton being made is bounded in size too.
void limit_self() {
#ifndef __SANITIZE_ADDRESS__  // AddressSanitizer's shadow alone is terabytes of address space
  limit(RLIMIT_AS, SkeletonLimits::kMemory, SkeletonLimits::kMemory);
#endif
  // SIGXCPU at the soft limit; SIGKILL a second later should it be caught.
  limit(RLIMIT_CPU, SkeletonLimits::kCpuSeconds, SkeletonLimits::kCpuSeconds + 1);
  limit(RLIMIT_CORE, 0, 0);  // a crash leaves no core of the user's data behind
}

[[noreturn]] void answer(const SkeletonPlan& plan) {
  if (!to_message(plan).SerializeToFileDescriptor(1))
    fail(ErrorCode::kInternal,
         fmt::format("loom-h5skeleton: writing the answer: {}", errno_text(errno)));
  // Not exit(): nothing is left to flush, and what atexit would run has nothing to add (a
  // sanitizer's leak check cannot even stop the threads of an undumpable process).
  std::_Exit(0);
}

// --place UID GID: the stager's skeleton, which may be as large as the datasets it holds
// (no file-size limit: the job's slice bounds it).
[[noreturn]] void place(uid_t uid, gid_t gid) {
  become(uid, gid, {});
  limit_self();
  v1::DescribeReply plan;
  if (!plan.ParseFromFileDescriptor(0))
    fail(ErrorCode::kInvalidArgument, "loom-h5skeleton: the plan on stdin does not parse");
  const Result<SkeletonPlan> placed = place_raw_data("/proc/self/fd/4", from_message(plan));
  if (!placed) fail(placed.error().code(), placed.error().to_string());
  answer(*placed);
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
  if (argc == 4 && std::string(argv[1]) == "--place")
    place(number<uid_t>(argv[2]), number<gid_t>(argv[3]));
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
  limit_self();
  limit(RLIMIT_FSIZE, SkeletonLimits::kFileSize, SkeletonLimits::kFileSize);
  const std::vector<std::string> datasets(argv + 4, argv + argc);
  const Result<SkeletonPlan> plan = write_skeleton("/proc/self/fd/3", datasets, 4);
  if (!plan) fail(plan.error().code(), plan.error().to_string());
  answer(*plan);
}
