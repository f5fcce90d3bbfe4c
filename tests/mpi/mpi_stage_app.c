/* An MPI application of the kind Loom stages data for. Each rank reads its block of rows of
 * /fields/temperature and /fields/pressure from the HDF5 file staged into its node's burst
 * buffer ($LOOM_BB_DIR/in.h5), sums them, and sends them to rank 0, which writes out.h5 in
 * its burst buffer: both fields as gathered (so that h5diff against the source proves every
 * byte went storage -> slice -> ranks -> out.h5) and /results/sums. Each rank prints a line
 * as mpi_app does; rank 0 adds "total ...".
 *
 * `mpi_stage_app --make FILE ROWS COLS` writes such an input without MPI: temperature
 * chunked and gzip-compressed, pressure contiguous, and humidity, which jobs leave behind. */
#include <hdf5.h>
#include <mpi.h>
#include <stdlib.h>

#include "report.h"

static double temperature(long i, long j) { return 250.0 + 0.01 * (double)i + 0.001 * (double)j; }
static double pressure(long i, long j) { return 1000.0 - 0.02 * (double)i + 0.0005 * (double)j; }

static int make(const char* path, long rows, long cols) {
  double* values = malloc(sizeof(double) * (size_t)(rows * cols));
  if (values == NULL) return 1;
  hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t group = H5Gcreate2(file, "/fields", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols},
          chunk[2] = {(hsize_t)(rows < 64 ? rows : 64), (hsize_t)cols};
  hid_t space = H5Screate_simple(2, dims, NULL);
  hid_t chunked = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(chunked, 2, chunk);
  H5Pset_deflate(chunked, 4);
  const struct {
    const char* name;
    double (*f)(long, long);
    hid_t dcpl;
  } fields[] = {{"temperature", temperature, chunked},
                {"pressure", pressure, H5P_DEFAULT},
                {"humidity", pressure, H5P_DEFAULT}};
  herr_t status = 0;
  for (int k = 0; k < 3; ++k) {
    for (long i = 0; i < rows; ++i) {
      for (long j = 0; j < cols; ++j) values[i * cols + j] = fields[k].f(i, j);
    }
    hid_t set = H5Dcreate2(group, fields[k].name, H5T_IEEE_F64LE, space, H5P_DEFAULT,
                           fields[k].dcpl, H5P_DEFAULT);
    status |= H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
    status |= H5Dclose(set);
  }
  H5Pclose(chunked);
  H5Sclose(space);
  H5Gclose(group);
  status |= H5Fclose(file);
  free(values);
  return status < 0;
}

/* Rows [first, first + count) of a 2-D dataset of doubles. */
static int read_rows(hid_t file, const char* name, hsize_t first, hsize_t count, hsize_t cols,
                     double* out) {
  hid_t set = H5Dopen2(file, name, H5P_DEFAULT);
  if (set < 0) return -1;
  hid_t space = H5Dget_space(set);
  hsize_t start[2] = {first, 0}, block[2] = {count, cols};
  H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, block, NULL);
  hid_t memory = H5Screate_simple(2, block, NULL);
  herr_t status = H5Dread(set, H5T_NATIVE_DOUBLE, memory, space, H5P_DEFAULT, out);
  H5Sclose(memory);
  H5Sclose(space);
  H5Dclose(set);
  return status;
}

static void fail(int rank, const char* what) {
  fprintf(stderr, "mpi_stage_app: rank %d: %s\n", rank, what);
  MPI_Abort(MPI_COMM_WORLD, 2);
}

int main(int argc, char** argv) {
  if (argc == 5 && strcmp(argv[1], "--make") == 0)
    return make(argv[2], atol(argv[3]), atol(argv[4]));
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const char* bb = getenv("LOOM_BB_DIR");
  if (bb == NULL) fail(rank, "no LOOM_BB_DIR: run it as a Loom job with --bb");
  char path[4096];
  snprintf(path, sizeof(path), "%s/in.h5", bb);
  hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) fail(rank, "cannot open in.h5 in LOOM_BB_DIR (was it staged in?)");
  hid_t set = H5Dopen2(file, "/fields/temperature", H5P_DEFAULT);
  if (set < 0) fail(rank, "in.h5 has no /fields/temperature");
  hsize_t dims[2];
  hid_t space = H5Dget_space(set);
  H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  H5Dclose(set);
  const hsize_t rows = dims[0], cols = dims[1];
  /* Rank r holds rows [r * rows / size, (r + 1) * rows / size). */
  int* counts = malloc(sizeof(int) * (size_t)size);
  int* offsets = malloc(sizeof(int) * (size_t)size);
  for (int r = 0; r < size; ++r) {
    const hsize_t first = rows * (hsize_t)r / (hsize_t)size,
                  next = rows * (hsize_t)(r + 1) / (hsize_t)size;
    counts[r] = (int)((next - first) * cols);
    offsets[r] = (int)(first * cols);
  }
  const hsize_t first = (hsize_t)offsets[rank] / cols, count = (hsize_t)counts[rank] / cols;
  double* t = malloc(sizeof(double) * (size_t)(count * cols + 1));
  double* p = malloc(sizeof(double) * (size_t)(count * cols + 1));
  if (read_rows(file, "/fields/temperature", first, count, cols, t) < 0 ||
      read_rows(file, "/fields/pressure", first, count, cols, p) < 0) {
    fail(rank, "cannot read its rows of /fields/temperature and /fields/pressure");
  }
  H5Fclose(file);
  double local[2] = {0, 0}, total[2] = {0, 0};
  for (hsize_t i = 0; i < count * cols; ++i) {
    local[0] += t[i];
    local[1] += p[i];
  }
  MPI_Reduce(local, total, 2, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
  double* all_t = NULL;
  double* all_p = NULL;
  if (rank == 0) {
    all_t = malloc(sizeof(double) * (size_t)(rows * cols));
    all_p = malloc(sizeof(double) * (size_t)(rows * cols));
  }
  MPI_Gatherv(t, counts[rank], MPI_DOUBLE, all_t, counts, offsets, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  MPI_Gatherv(p, counts[rank], MPI_DOUBLE, all_p, counts, offsets, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  char binding[2048];
  describe_binding(binding, sizeof(binding));
  printf("rank=%d size=%d %s rows=%llu-%llu\n", rank, size, binding, (unsigned long long)first,
         (unsigned long long)(first + count));
  if (rank == 0) {
    snprintf(path, sizeof(path), "%s/out.h5", bb);
    hid_t out = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t fields = H5Gcreate2(out, "/fields", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t results = H5Gcreate2(out, "/results", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t whole = H5Screate_simple(2, dims, NULL);
    herr_t status = 0;
    const struct {
      hid_t where;
      const char* name;
      double* values;
    } sets[] = {{fields, "temperature", all_t}, {fields, "pressure", all_p}};
    for (int k = 0; k < 2; ++k) {
      hid_t d = H5Dcreate2(sets[k].where, sets[k].name, H5T_IEEE_F64LE, whole, H5P_DEFAULT,
                           H5P_DEFAULT, H5P_DEFAULT);
      status |= H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, sets[k].values);
      status |= H5Dclose(d);
    }
    hsize_t two = 2;
    hid_t pair = H5Screate_simple(1, &two, NULL);
    hid_t sums =
        H5Dcreate2(results, "sums", H5T_IEEE_F64LE, pair, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    status |= H5Dwrite(sums, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, total);
    H5Dclose(sums);
    H5Sclose(pair);
    H5Sclose(whole);
    H5Gclose(results);
    H5Gclose(fields);
    status |= H5Fclose(out);
    if (status < 0) fail(rank, "cannot write out.h5");
    printf("total rows=%llu cols=%llu temperature=%.6f pressure=%.6f\n", (unsigned long long)rows,
           (unsigned long long)cols, total[0], total[1]);
  }
  fflush(stdout);
  MPI_Finalize();
  return 0;
}
