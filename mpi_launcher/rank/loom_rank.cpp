// loom-rank APP ARGS: what mpirun starts for each rank of a Loom job. It checks that its MPI
// world has the job's size (LOOM_NTASKS), finds its rank's binding in LOOM_RANK_BINDING (the
// node's ranks, set by the agent), applies it (PUs and memory; read back, a mismatch is an
// error), sends its output to its own files when the job asked for a file per rank (%t),
// sets LOOM_RANK and LOOM_RANK_CORES, and execs the application. A rank with no
// binding fails loudly rather than run unbound.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "loom/common/errno_text.hpp"
#include "loom/hwtopo/apply_binding.hpp"
#include "loom/launch/mpi.hpp"

namespace {

[[noreturn]] void fail(const std::string& message) {
  (void)std::fprintf(stderr, "loom-rank: %s\n", message.c_str());
  std::exit(127);
}

// A file per rank (-o/-e with %t): LOOM_RANK_OUTPUT and LOOM_RANK_ERROR are the job's
// patterns, %t this rank. Opened as the user, appended to, as the agent opens a job's files.
void redirect_output(const std::string& rank) {
  const char* output = std::getenv("LOOM_RANK_OUTPUT");
  const char* error = std::getenv("LOOM_RANK_ERROR");
  if (output == nullptr || error == nullptr) return;
  auto path_of = [&](std::string pattern) {
    for (std::size_t at = pattern.find("%t"); at != std::string::npos;
         at = pattern.find("%t", at + rank.size())) {
      pattern.replace(at, 2, rank);
    }
    return pattern;
  };
  const std::string out = path_of(output), err = path_of(error);
  const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (out_fd < 0) fail("cannot open " + out + ": " + loom::errno_text(errno));
  const int err_fd =
      err == out ? out_fd : ::open(err.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (err_fd < 0) fail("cannot open " + err + ": " + loom::errno_text(errno));
  if (::dup2(out_fd, STDOUT_FILENO) < 0 || ::dup2(err_fd, STDERR_FILENO) < 0)
    fail(std::string("dup2: ") + loom::errno_text(errno));
  ::unsetenv("LOOM_RANK_OUTPUT");
  ::unsetenv("LOOM_RANK_ERROR");
}

}  // namespace

constexpr const char* kUsage =
    "usage: loom-rank APP ARGS...\n"
    "What mpirun runs for each rank of a Loom MPI job (loom submit --mpi), not by hand: it finds\n"
    "the rank's cores and NUMA domain in LOOM_RANK_BINDING, binds itself there (checked), opens\n"
    "the rank's own output files when the job asked for %t, sets LOOM_RANK and LOOM_RANK_CORES\n"
    "and execs APP. A rank it cannot bind fails rather than run unbound.\n";

// Errors are Results; an exception that escapes is a bug, and terminate()'s core dump is
// how it should be seen.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  if (argc == 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    (void)std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc < 2) fail("usage: loom-rank APP ARGS (mpirun runs it for each rank of a Loom job)");
  const char* rank_text = std::getenv("OMPI_COMM_WORLD_RANK");
  if (rank_text == nullptr) rank_text = std::getenv("PMIX_RANK");
  if (rank_text == nullptr)
    fail("no OMPI_COMM_WORLD_RANK or PMIX_RANK: not started by mpirun as a rank");
  const char* bindings_text = std::getenv("LOOM_RANK_BINDING");
  if (bindings_text == nullptr) fail("no LOOM_RANK_BINDING: not started in a Loom job");
  auto bindings = loom::launch::decode_bindings(bindings_text);
  if (!bindings) fail(bindings.error().to_string());
  const auto rank = static_cast<unsigned>(std::strtoul(rank_text, nullptr, 10));
  // One world of the job's size: ranks that came up apart (singletons, or two worlds) are
  // an error, not a job that runs wrong.
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  const char* tasks = std::getenv("LOOM_NTASKS");
  if (size != nullptr && tasks != nullptr && std::string(size) != tasks) {
    fail("rank " + std::to_string(rank) + " is in an MPI world of " + size +
         " ranks; the job has " + tasks);
  }
  for (const loom::launch::RankBinding& b : *bindings) {
    if (b.rank != rank) continue;
    if (const std::string failed = loom::hwtopo::apply_binding(b.pus, b.numa); !failed.empty()) {
      fail("rank " + std::to_string(rank) + ": " + failed);
    }
    std::string cores;
    for (unsigned pu : b.pus) cores += (cores.empty() ? "" : ",") + std::to_string(pu);
    redirect_output(rank_text);
    ::setenv("LOOM_RANK", rank_text, 1);
    ::setenv("LOOM_RANK_CORES", cores.c_str(), 1);
    ::execvp(argv[1], argv + 1);
    fail(std::string("cannot run ") + argv[1] + ": " + loom::errno_text(errno));
  }
  fail("rank " + std::to_string(rank) +
       " has no binding on this node (LOOM_RANK_BINDING): mpirun placed it elsewhere than Loom");
}
