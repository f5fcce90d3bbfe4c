// Prints what the kernel says of this process's binding, for binding tests:
//   Cpus_allowed_list: <list>      (from /proc/self/status)
//   mempolicy: <bind|preferred|interleave|local|default> <nodes>   (from get_mempolicy())
#include <linux/mempolicy.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

int main() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("Cpus_allowed_list:")) {
      std::printf("Cpus_allowed_list: %s\n",
                  line.substr(line.find_first_not_of(" \t", 18)).c_str());
    }
  }
  int mode = -1;
  unsigned long mask[16] = {};
  constexpr unsigned long kMaxNode = sizeof(mask) * 8;
  if (::syscall(SYS_get_mempolicy, &mode, mask, kMaxNode, nullptr, 0UL) != 0) {
    std::perror("get_mempolicy");
    return 1;
  }
  const char* name = mode == MPOL_BIND         ? "bind"
                     : mode == MPOL_PREFERRED  ? "preferred"
                     : mode == MPOL_INTERLEAVE ? "interleave"
                     : mode == MPOL_LOCAL      ? "local"
                     : mode == MPOL_DEFAULT    ? "default"
                                               : "other";
  std::string nodes;
  for (unsigned long n = 0; n < kMaxNode; ++n) {
    if (mask[n / (8 * sizeof(unsigned long))] & (1UL << (n % (8 * sizeof(unsigned long))))) {
      if (!nodes.empty()) nodes += ",";
      nodes += std::to_string(n);
    }
  }
  std::printf("mempolicy: %s %s\n", name, nodes.c_str());
  return 0;
}
