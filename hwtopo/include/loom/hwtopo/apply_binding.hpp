// Binds the calling process to its PUs and its memory to one NUMA node (MPOL_BIND), then
// reads back what the kernel applied: a binding that did not take is an error, not a
// warning. The one way Loom binds: loom-keeper (a task, before exec), loom-rank (an MPI
// rank, before exec) and Binder::apply (`loom bind`). Header-only and without hwloc, so
// that the first two stay small programs.
#pragma once

#include <numaif.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <optional>
#include <span>
#include <string>

#include "loom/common/errno_text.hpp"

namespace loom::hwtopo {

// An empty string when bound as asked; else what failed, and why.
inline std::string apply_binding(std::span<const unsigned> pus, std::optional<unsigned> numa) {
  if (!pus.empty()) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    for (unsigned pu : pus) {
      // CPU_SET ignores what is past the set: a bind to fewer PUs than placed would pass.
      if (pu >= CPU_SETSIZE)
        return "PU " + std::to_string(pu) + " is beyond the largest this build binds to";
      CPU_SET(pu, &cpus);
    }
    cpu_set_t applied;
    if (::sched_setaffinity(0, sizeof(cpus), &cpus) != 0 ||
        ::sched_getaffinity(0, sizeof(applied), &applied) != 0) {
      return std::string("cannot bind to the placed PUs: ") + loom::errno_text(errno);
    }
    if (!CPU_EQUAL(&cpus, &applied)) return "the kernel applied other PUs than the placed ones";
  }
  if (numa) {
    constexpr std::size_t kBits = 8 * sizeof(unsigned long);
    std::array<unsigned long, 16> mask{};
    if (*numa >= mask.size() * kBits)
      return "NUMA node " + std::to_string(*numa) + " is beyond the largest this build binds to";
    mask.at(*numa / kBits) |= 1UL << (*numa % kBits);
    if (::syscall(SYS_set_mempolicy, MPOL_BIND, mask.data(), mask.size() * kBits) != 0) {
      // A kernel built without NUMA has one memory node, 0, which all memory comes from.
      if (errno == ENOSYS && *numa == 0) return {};
      return "cannot bind memory to NUMA " + std::to_string(*numa) + ": " + loom::errno_text(errno);
    }
    int mode = -1;
    std::array<unsigned long, 16> applied{};
    if (::syscall(SYS_get_mempolicy, &mode, applied.data(), applied.size() * kBits, nullptr, 0) !=
            0 ||
        mode != MPOL_BIND || mask != applied) {
      return "the kernel applied another memory policy than MPOL_BIND to the placed NUMA node";
    }
  }
  return {};
}

}  // namespace loom::hwtopo
