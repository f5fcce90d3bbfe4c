/* What the kernel says of the calling process, as the MPI test programs print it:
 * "host=H cpus=0,1 mempolicy=bind numa=0". */
#pragma once
/* Needs _GNU_SOURCE (sched_getaffinity, CPU_ISSET): tests/mpi/CMakeLists.txt defines it. */
#include <numaif.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline void describe_binding(char* out, size_t size) {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  cpu_set_t cpus;
  sched_getaffinity(0, sizeof(cpus), &cpus);
  char list[1024] = {0};
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &cpus))
      snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%d", list[0] ? "," : "", c);
  }
  int mode = -1;
  unsigned long nodes[16] = {0};
  syscall(SYS_get_mempolicy, &mode, nodes, sizeof(nodes) * 8, NULL, 0);
  char numa[256] = {0};
  for (int n = 0; n < 64; ++n) {
    if (nodes[0] & (1ul << n))
      snprintf(numa + strlen(numa), sizeof(numa) - strlen(numa), "%s%d", numa[0] ? "," : "", n);
  }
  snprintf(out, size, "host=%s cpus=%s mempolicy=%s numa=%s", host, list,
           mode == MPOL_BIND ? "bind" : "other", numa);
}
