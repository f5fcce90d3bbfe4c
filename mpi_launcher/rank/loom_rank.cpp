// loom-rank APP ARGS: what mpirun starts for each rank of a Loom job. It checks that its MPI
// world has the job's size (LOOM_NTASKS), finds its rank's binding in LOOM_RANK_BINDING (the
// node's ranks, set by the agent), applies it (PUs and memory; read back, a mismatch is an
// error), sets LOOM_RANK and LOOM_RANK_CORES, and execs the application. A rank with no
// binding fails loudly rather than run unbound.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <string>

#include "loom/launch/apply_binding.hpp"
#include "loom/launch/mpi.hpp"

namespace {

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "loom-rank: %s\n", message.c_str());
  std::exit(127);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) fail("usage: loom-rank APP ARGS (mpirun runs it for each rank of a Loom job)");
  const char* rank_text = std::getenv("OMPI_COMM_WORLD_RANK");
  if (rank_text == nullptr) rank_text = std::getenv("PMIX_RANK");
  if (rank_text == nullptr) fail("no OMPI_COMM_WORLD_RANK or PMIX_RANK: not started by mpirun as a rank");
  const char* bindings_text = std::getenv("LOOM_RANK_BINDING");
  if (bindings_text == nullptr) fail("no LOOM_RANK_BINDING: not started in a Loom job");
  auto bindings = loom::launch::decode_bindings(bindings_text);
  if (!bindings) fail(bindings.error().to_string());
  const unsigned rank = static_cast<unsigned>(std::strtoul(rank_text, nullptr, 10));
  // One world of the job's size: ranks that came up apart (singletons, or two worlds) are
  // an error, not a job that runs wrong.
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  const char* tasks = std::getenv("LOOM_NTASKS");
  if (size != nullptr && tasks != nullptr && std::string(size) != tasks) {
    fail("rank " + std::to_string(rank) + " is in an MPI world of " + size + " ranks; the job has " + tasks);
  }
  for (const loom::launch::RankBinding& b : *bindings) {
    if (b.rank != rank) continue;
    if (const std::string failed = loom::launch::apply_binding(b.pus, b.numa); !failed.empty()) {
      fail("rank " + std::to_string(rank) + ": " + failed);
    }
    std::string cores;
    for (unsigned pu : b.pus) cores += (cores.empty() ? "" : ",") + std::to_string(pu);
    ::setenv("LOOM_RANK", rank_text, 1);
    ::setenv("LOOM_RANK_CORES", cores.c_str(), 1);
    ::execvp(argv[1], argv + 1);
    fail(std::string("cannot run ") + argv[1] + ": " + std::strerror(errno));
  }
  fail("rank " + std::to_string(rank) + " has no binding on this node (LOOM_RANK_BINDING): mpirun placed it elsewhere than Loom");
}
