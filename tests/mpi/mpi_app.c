/* An MPI program as a Loom job runs it: an MPI_Allreduce over the world, then one line per
 * rank with what the kernel says of it (its CPUs, its memory policy), its host, and a file
 * it wrote in its burst buffer. The tests compare each line with `loom show --json`.
 * `mpi_app R`: rank R exits 3 after MPI_Finalize; `mpi_app abort R`: rank R calls
 * MPI_Abort(7) after the MPI_Allreduce instead. `mpi_app exit-early` leaves right after
 * MPI_Init, as a crashed rank would; `mpi_app barrier-forever` waits in MPI_Barrier for
 * ranks that will never come. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  struct timespec initialized;
  clock_gettime(CLOCK_REALTIME, &initialized);
  if (argc > 1 && strcmp(argv[1], "exit-early") == 0) _exit(0);
  if (argc > 1 && strcmp(argv[1], "barrier-forever") == 0) {
    MPI_Barrier(MPI_COMM_WORLD);
    for (;;) pause();
  }
  int rank = 0, size = 0, sum = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  char binding[2048];
  describe_binding(binding, sizeof(binding));
  const char* bb = getenv("LOOM_BB_DIR");
  const char* wrote = "none";
  if (bb != NULL) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/rank-%d", bb, rank);
    FILE* f = fopen(path, "w");
    wrote = f != NULL && fprintf(f, "%d\n", rank) > 0 && fclose(f) == 0 ? path : "failed";
  }
  printf("rank=%d size=%d sum=%d %s bb=%s init_ns=%lld\n", rank, size, sum, binding, wrote,
         (long long)initialized.tv_sec * 1000000000LL + initialized.tv_nsec);
  fflush(stdout);
  if (argc > 2 && strcmp(argv[1], "abort") == 0 && rank == atoi(argv[2]))
    MPI_Abort(MPI_COMM_WORLD, 7);
  MPI_Finalize();
  return argc == 2 && rank == atoi(argv[1]) ? 3 : 0;
}
