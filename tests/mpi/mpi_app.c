/* An MPI program as a Loom job runs it: an MPI_Allreduce over the world, then one line per
 * rank with what the kernel says of it (its CPUs, its memory policy), its host, and a file
 * it wrote in its burst buffer. The tests compare each line with `loom show --json`. */
#define _GNU_SOURCE
#include <mpi.h>
#include <numaif.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  struct timespec initialized;
  clock_gettime(CLOCK_REALTIME, &initialized);
  int rank = 0, size = 0, sum = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  cpu_set_t cpus;
  sched_getaffinity(0, sizeof(cpus), &cpus);
  char list[1024] = {0};
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &cpus)) snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%d", list[0] ? "," : "", c);
  }
  int mode = -1;
  unsigned long nodes[16] = {0};
  syscall(SYS_get_mempolicy, &mode, nodes, sizeof(nodes) * 8, NULL, 0);
  char numa[256] = {0};
  for (int n = 0; n < 64; ++n) {
    if (nodes[0] & (1ul << n)) snprintf(numa + strlen(numa), sizeof(numa) - strlen(numa), "%s%d", numa[0] ? "," : "", n);
  }
  const char* bb = getenv("LOOM_BB_DIR");
  const char* wrote = "none";
  if (bb != NULL) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/rank-%d", bb, rank);
    FILE* f = fopen(path, "w");
    wrote = f != NULL && fprintf(f, "%d\n", rank) > 0 && fclose(f) == 0 ? path : "failed";
  }
  printf("rank=%d size=%d sum=%d host=%s cpus=%s mempolicy=%s numa=%s bb=%s init_ns=%lld\n", rank, size, sum, host, list,
         mode == MPOL_BIND ? "bind" : "other", numa, wrote,
         (long long)initialized.tv_sec * 1000000000LL + initialized.tv_nsec);
  fflush(stdout);
  MPI_Finalize();
  return argc > 1 && rank == atoi(argv[1]) ? 3 : 0;  /* `mpi_app R`: rank R exits 3 */
}
