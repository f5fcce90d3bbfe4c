// A real HDF5 file with 24 bytes changed crashed the root storage agent in libhdf5 (issue
// 19). Users' files are now read by loom-h5skeleton, as the user: here mutated copies of
// files the test makes (with the HDF5 API, and a netCDF-4 one with ncgen) are staged as
// loom-alice, with a fixed seed. Every staging either arrives h5diff-equal to its mutated
// source (where h5diff can read that) or fails naming the file, and the agent serves on.
// LOOM_FUZZ_MUTATIONS sets how many (100 here; scripts/fuzz-hdf5.sh runs more),
// LOOM_FUZZ_SEED the seed.
#include <fmt/format.h>
#include <hdf5.h>

#include <algorithm>
#include <cstdlib>
#include <random>

#include "run.hpp"
#include "storage_fixture.hpp"

namespace loom::burstbuffer {
namespace {

using loom::testing::run;

unsigned from_env(const char* name, unsigned otherwise) {
  const char* text = std::getenv(name);
  return text != nullptr ? static_cast<unsigned>(std::stoul(text)) : otherwise;
}

// Groups, a contiguous dataset past the size copied whole, a chunked and compressed one, a
// small one that travels in the skeleton, attributes, and a variable-length string.
void write_hdf5(const fs::path& path) {
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hid_t group = H5Gcreate2(file, "/fields", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  std::vector<double> values(20000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = 0.25 * static_cast<double>(i);
  const hsize_t n = values.size();
  const hid_t space = H5Screate_simple(1, &n, nullptr);
  const hid_t flat = H5Dcreate2(file, "/fields/flat", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(flat, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  const hsize_t chunk = 1000;
  H5Pset_chunk(dcpl, 1, &chunk);
  H5Pset_deflate(dcpl, 4);
  const hid_t packed =
      H5Dcreate2(file, "/fields/packed", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Dwrite(packed, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  const hsize_t few = 16;
  const hid_t small_space = H5Screate_simple(1, &few, nullptr);
  const hid_t small = H5Dcreate2(file, "/small", H5T_NATIVE_INT, small_space, H5P_DEFAULT,
                                 H5P_DEFAULT, H5P_DEFAULT);
  const std::vector<int> ints(few, 42);
  H5Dwrite(small, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, ints.data());
  const hid_t scalar = H5Screate(H5S_SCALAR);
  const hid_t units =
      H5Acreate2(flat, "units", H5T_NATIVE_DOUBLE, scalar, H5P_DEFAULT, H5P_DEFAULT);
  const double kelvin = 273.15;
  H5Awrite(units, H5T_NATIVE_DOUBLE, &kelvin);
  const hid_t text = H5Tcopy(H5T_C_S1);
  H5Tset_size(text, H5T_VARIABLE);
  const hid_t note = H5Dcreate2(file, "/note", text, scalar, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const char* said = "mutated, and still served";
  H5Dwrite(note, text, H5S_ALL, H5S_ALL, H5P_DEFAULT, static_cast<const void*>(&said));
  for (hid_t d : {flat, packed, small, note}) H5Dclose(d);
  H5Aclose(units);
  H5Tclose(text);
  for (hid_t s : {space, small_space, scalar}) H5Sclose(s);
  H5Pclose(dcpl);
  H5Gclose(group);
  H5Fclose(file);
}

// The staged dataset holds what HDF5 reads in the source: h5diff finds no difference in its
// data or in any attribute both have (attributes that reference other objects, such as
// netCDF's DIMENSION_LIST, are not carried, and h5diff counts them unequal), unless HDF5
// cannot read the source's data itself (a chunk that no longer inflates travels as stored).
void expect_as_read(const fs::path& source, const fs::path& staged, const std::string& dataset) {
  const testing::Completed diff =
      run({"h5diff", "-v", source.string(), staged.string(), dataset, dataset});
  if (diff.exit_code == 2 && run({"h5dump", "-d", dataset, source.string()}).exit_code != 0) return;
  const std::vector<std::string> said = testing::lines(diff.out);
  const auto counts = std::ranges::count_if(
      said, [](const std::string& l) { return l.ends_with("differences found"); });
  const auto none = std::ranges::count(said, std::string("0 differences found"));
  EXPECT_TRUE(diff.exit_code != 2 && counts > 0 && counts == none &&
              diff.out.find("Not comparable") == std::string::npos)
      << dataset << " (h5diff exit " << diff.exit_code << "): " << diff.out << diff.err;
}

class Hdf5FuzzTest : public DataPlaneTest {
 protected:
  void SetUp() override {
    DataPlaneTest::SetUp();
    alice_ = remote_as("loom-alice");
    write_hdf5(export_ / "base.h5");
    const fs::path cdl = export_ / "base.cdl";
    std::ofstream(cdl) << "netcdf base {\n"
                          "dimensions: time = 12 ; lat = 8 ;\n"
                          "variables: float temperature(time, lat) ;\n"
                          "  temperature:units = \"K\" ;\n"
                          "  int time(time) ;\n"
                          "data: time = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 ;\n"
                          "  temperature = 250.5, 251, 252, 253, 254, 255, 256, 257 ;\n"
                          "}\n";
    const testing::Completed made =
        run({"ncgen", "-k", "nc4", "-o", (export_ / "base.nc").string(), cdl.string()});
    ASSERT_EQ(made.exit_code, 0) << made.err;
    fs::remove(cdl);
  }
  // Stages `path`'s datasets as loom-alice into `name`.
  Status stage(const std::string& path, const std::vector<std::string>& datasets,
               const std::string& name) {
    FileProgress progress;
    std::atomic<bool> cancelled{false};
    return stager_->fetch(remote_as("loom-alice"), path, dir_fd_, name, progress, cancelled,
                          datasets);
  }
  // Who stages: uid and gid (each staging takes a fresh credential: Munge refuses a replay).
  Remote alice_;
};

TEST_F(Hdf5FuzzTest, EveryMutatedFileStagesAsItReadsOrFailsNamingItAndTheAgentServesOn) {
  const unsigned mutations = from_env("LOOM_FUZZ_MUTATIONS", 100);
  const unsigned seed = from_env("LOOM_FUZZ_SEED", 19);
  struct Base {
    std::string file;
    std::vector<std::string> datasets;
    std::string bytes;
  };
  std::vector<Base> bases = {{"base.h5", {"/fields/flat", "/fields/packed", "/small", "/note"}, {}},
                             {"base.nc", {"/temperature", "/time"}, {}}};
  for (Base& base : bases) {
    std::ifstream in(export_ / base.file, std::ios::binary);
    base.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::mt19937_64 random(seed);
  unsigned staged = 0, failed = 0, crashed = 0;
  for (unsigned i = 0; i < mutations; ++i) {
    const Base& base = bases[i % bases.size()];
    std::string bytes = base.bytes;
    // 24 bytes, half of them in the first 8 KiB, where the superblock and most of the
    // metadata lie: bytes of raw data change the data only.
    for (int k = 0; k < 24; ++k) {
      const std::size_t span =
          k % 2 == 0 ? std::min<std::size_t>(bytes.size(), 8192) : bytes.size();
      bytes[random() % span] = static_cast<char>(random() & 0xff);
    }
    const std::string name = fmt::format("mutant-{}-{}", i, base.file);
    const fs::path source = export_ / name;
    std::ofstream(source, std::ios::binary) << bytes;
    ASSERT_EQ(::chown(source.c_str(), alice_.uid, alice_.gid), 0);
    SCOPED_TRACE(fmt::format("mutation {} of {} (seed {})", i, base.file, seed));
    const Status status = stage("/" + name, base.datasets, name);
    if (!status) {
      ++failed;
      if (status.error().message().find("reading its HDF5 structure failed (SIG") !=
          std::string::npos)
        ++crashed;
      EXPECT_NE(status.error().to_string().find(name), std::string::npos)
          << status.error().to_string();
      EXPECT_FALSE(fs::exists(local_ / name)) << "a failed staging leaves nothing";
      continue;
    }
    ++staged;
    for (const std::string& dataset : base.datasets) expect_as_read(source, local_ / name, dataset);
    fs::remove(local_ / name);
    fs::remove(source);
  }
  std::cout << fmt::format(
      "{} mutations (seed {}): {} staged, {} failed naming the file ({} of them crashed or "
      "exhausted loom-h5skeleton)\n",
      mutations, seed, staged, failed, crashed);
  // The agent serves on: the files as made still stage whole.
  for (const Base& base : bases) {
    ASSERT_TRUE(stage("/" + base.file, base.datasets, base.file));
    for (const std::string& dataset : base.datasets)
      expect_as_read(export_ / base.file, local_ / base.file, dataset);
  }
}

}  // namespace
}  // namespace loom::burstbuffer
