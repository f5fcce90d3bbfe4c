// HDF5 datasets staged as stored, through a real storage agent and stager, each staged object
// checked with h5diff against its source (a whole-file h5diff would fail by design when
// only some datasets are staged).
#include <hdf5.h>

#include <fstream>
#include <thread>

#include "loom/fabric/fabric.hpp"
#include "run.hpp"
#include "storage_fixture.hpp"

namespace loom::burstbuffer {
namespace {

using loom::testing::run;

// Writes a file with one dataset of each kind staging must carry.
void write_mixed(const fs::path& path) {
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  auto dataset = [&](const char* name, hid_t type, std::vector<hsize_t> dims, hid_t dcpl,
                     const void* data) {
    const hid_t space = dims.empty()
                            ? H5Screate(H5S_SCALAR)
                            : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    const hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    const hid_t d = H5Dcreate2(file, name, type, space, lcpl, dcpl, H5P_DEFAULT);
    if (data != nullptr) H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Pclose(lcpl);
    H5Sclose(space);
    return d;
  };
  auto string_attribute = [](hid_t object, const char* name, const char* value, bool variable) {
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, variable ? H5T_VARIABLE : std::strlen(value) + 1);
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (variable) {
      H5Awrite(a, type, &value);
    } else {
      H5Awrite(a, type, value);
    }
    H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
  };

  std::vector<std::int32_t> ints(std::size_t{100} * 200);
  for (std::size_t i = 0; i < ints.size(); ++i) ints[i] = static_cast<std::int32_t>(i * 7 - 3000);
  hid_t d = dataset("/contiguous", H5T_STD_I32LE, {100, 200}, H5P_DEFAULT, ints.data());
  string_attribute(d, "units", "counts", false);
  const double scale = 0.25;
  const hid_t scalar = H5Screate(H5S_SCALAR);
  const hid_t a = H5Acreate2(d, "scale", H5T_IEEE_F64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_DOUBLE, &scale);
  H5Aclose(a);
  H5Dclose(d);

  // 3-D chunked with a fill value, half written: some chunks never allocated.
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  const hsize_t chunk3[] = {5, 10, 10};
  H5Pset_chunk(dcpl, 3, chunk3);
  const float fill = -1;
  H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &fill);
  d = dataset("/grid/chunked", H5T_IEEE_F32LE, {20, 30, 40}, dcpl, nullptr);
  std::vector<float> half(std::size_t{10} * 30 * 40);
  for (std::size_t i = 0; i < half.size(); ++i) half[i] = static_cast<float>(i) / 3;
  const hsize_t start[] = {0, 0, 0}, count[] = {10, 30, 40};
  const hid_t file_space = H5Dget_space(d);
  H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, nullptr, count, nullptr);
  const hid_t memory = H5Screate_simple(3, count, nullptr);
  H5Dwrite(d, H5T_NATIVE_FLOAT, memory, file_space, H5P_DEFAULT, half.data());
  H5Sclose(memory);
  H5Sclose(file_space);
  H5Dclose(d);
  H5Pclose(dcpl);
  const hid_t grid = H5Gopen2(file, "/grid", H5P_DEFAULT);
  string_attribute(grid, "description", "a grid of the domain", true);
  H5Gclose(grid);

  // Compressed: shuffle + gzip, and szip where the library has it.
  std::vector<double> smooth(std::size_t{64} * 64);
  for (std::size_t i = 0; i < smooth.size(); ++i) smooth[i] = static_cast<double>(i % 64) * 0.5;
  for (const char* name : {"/grid/deep/gzip", "/grid/deep/szip"}) {
    const bool szip = std::string_view(name).ends_with("szip");
    if (szip && H5Zfilter_avail(H5Z_FILTER_SZIP) <= 0) continue;
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    const hsize_t chunk2[] = {16, 16};
    H5Pset_chunk(dcpl, 2, chunk2);
    if (szip) {
      H5Pset_szip(dcpl, H5_SZIP_NN_OPTION_MASK, 8);
    } else {
      H5Pset_shuffle(dcpl);
      H5Pset_deflate(dcpl, 6);
    }
    H5Dclose(dataset(name, H5T_IEEE_F64LE, {64, 64}, dcpl, smooth.data()));
    H5Pclose(dcpl);
  }

  dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_layout(dcpl, H5D_COMPACT);
  const std::int16_t small[] = {1, -2, 3, -4, 5, -6};
  H5Dclose(dataset("/compact", H5T_STD_I16BE, {6}, dcpl, small));
  H5Pclose(dcpl);

  hid_t fixed = H5Tcopy(H5T_C_S1);
  H5Tset_size(fixed, 8);
  const char names[3][8] = {"alpha", "beta", "gamma"};
  H5Dclose(dataset("/strings/fixed", fixed, {3}, H5P_DEFAULT, names));
  H5Tclose(fixed);
  hid_t variable = H5Tcopy(H5T_C_S1);
  H5Tset_size(variable, H5T_VARIABLE);
  const char* words[] = {"a", "variable-length", "string dataset"};
  H5Dclose(dataset("/strings/variable", variable, {3}, H5P_DEFAULT, words));
  H5Tclose(variable);

  struct Record {
    std::int32_t a;
    double b;
    char c[4];
  };
  const hid_t compound = H5Tcreate(H5T_COMPOUND, sizeof(Record));
  H5Tinsert(compound, "a", HOFFSET(Record, a), H5T_NATIVE_INT32);
  H5Tinsert(compound, "b", HOFFSET(Record, b), H5T_NATIVE_DOUBLE);
  const hid_t four = H5Tcopy(H5T_C_S1);
  H5Tset_size(four, 4);
  H5Tinsert(compound, "c", HOFFSET(Record, c), four);
  const Record records[] = {{1, 1.5, "one"}, {2, 2.5, "two"}};
  H5Dclose(dataset("/compound", compound, {2}, H5P_DEFAULT, records));
  H5Tclose(four);
  H5Tclose(compound);

  const hid_t sequence = H5Tvlen_create(H5T_NATIVE_INT);
  int first[] = {1, 2, 3}, second[] = {4};
  hvl_t sequences[] = {{3, first}, {1, second}};
  H5Dclose(dataset("/sequences", sequence, {2}, H5P_DEFAULT, sequences));
  H5Tclose(sequence);

  H5Dclose(dataset("/never_written", H5T_STD_U8LE, {1000}, H5P_DEFAULT, nullptr));
  H5Sclose(scalar);
  H5Fclose(file);
}

const std::vector<std::string> kMixed = {"/contiguous", "/grid/chunked",  "/grid/deep/gzip",
                                         "/compact",    "/strings/fixed", "/strings/variable",
                                         "/compound",   "/sequences",     "/never_written"};

// h5diff's verdict on one object of two files: 0 when they are the same.
int h5diff(const fs::path& a, const fs::path& b, const std::string& object) {
  const loom::testing::Completed done = run({"h5diff", a.string(), b.string(), object, object});
  if (done.exit_code != 0) ADD_FAILURE() << "h5diff " << object << ":\n" << done.out << done.err;
  return done.exit_code;
}

class Hdf5StagingTest : public DataPlaneTest {
 protected:
  Status fetch_datasets(const std::string& path, const std::vector<std::string>& datasets,
                        const std::string& name, std::vector<std::string>* notes = nullptr) {
    FileProgress progress;
    std::atomic<bool> cancelled{false};
    return stager_->fetch(remote(), path, dir_fd_, name, progress, cancelled, datasets, notes);
  }
};

TEST_F(Hdf5StagingTest, EveryKindOfDatasetArrivesAsStored) {
  write_mixed(export_ / "mixed.h5");
  ASSERT_TRUE(fetch("/mixed.h5", "whole.h5"));
  std::vector<std::string> objects = kMixed;
  if (H5Zfilter_avail(H5Z_FILTER_SZIP) > 0) objects.emplace_back("/grid/deep/szip");
  const auto registered = fabric::MemoryRegion::live_count();
  auto all = fetch_datasets("/mixed.h5", objects, "subset.h5");
  ASSERT_TRUE(all) << all.error().to_string();
  EXPECT_EQ(fabric::MemoryRegion::live_count(), registered)
      << "every lease's registration is closed once its copy is done";
  for (const std::string& object : objects) {
    EXPECT_EQ(h5diff(export_ / "mixed.h5", local_ / "whole.h5", object), 0);
    EXPECT_EQ(h5diff(export_ / "mixed.h5", local_ / "subset.h5", object), 0);
  }
  EXPECT_EQ(h5diff(export_ / "mixed.h5", local_ / "subset.h5", "/grid"), 0)
      << "the group, its attribute and what it holds";
  // One dataset alone: only it (and its groups) in the file, compressed chunks still compressed.
  ASSERT_TRUE(fetch_datasets("/mixed.h5", {"/grid/deep/gzip"}, "one.h5"));
  EXPECT_EQ(h5diff(export_ / "mixed.h5", local_ / "one.h5", "/grid/deep/gzip"), 0);
  const loom::testing::Completed listed = run({"h5ls", "-r", (local_ / "one.h5").string()});
  const std::vector<std::string> listing = loom::testing::lines(listed.out);
  ASSERT_EQ(listing.size(), 4u) << listed.out;  // /, /grid, /grid/deep, /grid/deep/gzip
  EXPECT_EQ(listing[3].substr(0, listing[3].find(' ')), "/grid/deep/gzip") << listed.out;
  const loom::testing::Completed filters =
      run({"h5dump", "-p", "-H", "-d", "/grid/deep/gzip", (local_ / "one.h5").string()});
  EXPECT_NE(filters.out.find("DEFLATE"), std::string::npos) << filters.out;
  EXPECT_NE(filters.out.find("SHUFFLE"), std::string::npos) << filters.out;
  EXPECT_LT(fs::file_size(local_ / "one.h5"), 64u * 64 * 8) << "smaller than the data uncompressed";
}

TEST_F(Hdf5StagingTest, NetCdf4VariablesArriveWithTheirData) {
  const fs::path cdl = local_ / "climate.cdl";
  std::ofstream(cdl)
      << "netcdf climate {\n"
         "dimensions: time = UNLIMITED ; lat = 3 ; lon = 4 ;\n"
         "variables:\n"
         "  double time(time) ; time:units = \"hours since 2026-01-01\" ;\n"
         "  float lat(lat) ; float lon(lon) ;\n"
         "  float temperature(time, lat, lon) ; temperature:units = \"K\" ;\n"
         "data:\n"
         "  time = 0, 6 ; lat = -10, 0, 10 ; lon = 0, 90, 180, 270 ;\n"
         "  temperature = 270, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281,\n"
         "                282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293 ;\n"
         "}\n";
  const loom::testing::Completed made =
      run({"ncgen", "-k", "nc4", "-o", (export_ / "climate.nc").string(), cdl.string()});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  ASSERT_TRUE(fetch("/climate.nc", "whole.nc"));
  for (const char* object : {"/temperature", "/time", "/lat", "/lon"}) {
    EXPECT_EQ(h5diff(export_ / "climate.nc", local_ / "whole.nc", object), 0);
  }
  std::vector<std::string> notes;
  auto subset = fetch_datasets("/climate.nc", {"/temperature"}, "temperature.nc", &notes);
  ASSERT_TRUE(subset) << subset.error().to_string();
  // Its dimension scales are not staged with it: what referenced them is said, the data is exact.
  ASSERT_FALSE(notes.empty());
  EXPECT_NE(notes[0].find("DIMENSION_LIST"), std::string::npos) << notes[0];
  // h5diff compares the data and every attribute both have, finding no difference; it
  // reports the files unequal only for the attribute that was not carried.
  const loom::testing::Completed diff =
      run({"h5diff", "-v", (export_ / "climate.nc").string(), (local_ / "temperature.nc").string(),
           "/temperature", "/temperature"});
  EXPECT_EQ(diff.exit_code, 1) << diff.out << diff.err;
  const std::vector<std::string> compared = loom::testing::lines(diff.out);
  EXPECT_EQ(std::count(compared.begin(), compared.end(), "0 differences found"), 3)
      << diff.out;  // data, units, _Netcdf4Coordinates
  EXPECT_EQ(std::count_if(compared.begin(), compared.end(),
                          [](const std::string& l) { return l.ends_with("differences found"); }),
            3)
      << diff.out;
}

TEST_F(Hdf5StagingTest, RefusalsNameTheFileAndTheDatasetAndLeaveNothing) {
  write_mixed(export_ / "mixed.h5");
  auto missing = fetch_datasets("/mixed.h5", {"/contiguous", "/grid/nothing"}, "x.h5");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("/mixed.h5"), std::string::npos)
      << missing.error().message();
  EXPECT_NE(missing.error().message().find("/grid/nothing"), std::string::npos)
      << missing.error().message();
  auto group = fetch_datasets("/mixed.h5", {"/grid"}, "x.h5");
  ASSERT_FALSE(group);
  EXPECT_NE(group.error().message().find("/grid is not a dataset"), std::string::npos)
      << group.error().message();
  // Object references do not survive a subset.
  const hid_t file = H5Fopen((export_ / "mixed.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  hobj_ref_t reference;
  H5Rcreate(&reference, file, "/contiguous", H5R_OBJECT, -1);
  const hsize_t one = 1;
  const hid_t space = H5Screate_simple(1, &one, nullptr);
  const hid_t d =
      H5Dcreate2(file, "/refs", H5T_STD_REF_OBJ, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, H5T_STD_REF_OBJ, H5S_ALL, H5S_ALL, H5P_DEFAULT, &reference);
  H5Dclose(d);
  H5Sclose(space);
  H5Fclose(file);
  auto refs = fetch_datasets("/mixed.h5", {"/refs"}, "x.h5");
  ASSERT_FALSE(refs);
  EXPECT_NE(refs.error().message().find("dataset /refs holds object or region references"),
            std::string::npos)
      << refs.error().message();
  { std::ofstream(export_ / "text.h5") << "not HDF5"; }
  auto text = fetch_datasets("/text.h5", {"/x"}, "x.h5");
  ASSERT_FALSE(text);
  EXPECT_NE(text.error().message().find("not an HDF5 file"), std::string::npos)
      << text.error().message();
  EXPECT_EQ(leftovers(local_, {}), std::vector<std::string>{});
}

TEST_F(Hdf5StagingTest, AConnectionCutMidDatasetFailsAndLeavesNothing) {
  // 256 chunks of 1 MiB: the cut comes while chunks are moving.
  const hid_t file =
      H5Fcreate((export_ / "big.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t dims[] = {256, 262144}, chunk[] = {1, 262144};
  const hid_t space = H5Screate_simple(2, dims, nullptr);
  const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, 2, chunk);
  const hid_t d =
      H5Dcreate2(file, "/data", H5T_NATIVE_FLOAT, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  std::vector<float> values(std::size_t{256} * 262144, 1.5f);
  H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  H5Dclose(d);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Fclose(file);
  FileProgress progress;
  std::atomic<bool> cancelled{false}, finished{false};
  Status result;
  const std::vector<std::string> datasets{"/data"};
  std::thread copy([&] {
    result = stager_->fetch(remote(), "/big.h5", dir_fd_, "big.h5", progress, cancelled, datasets);
    finished.store(true);
  });
  // Past the skeleton (a few KiB), into the chunks: then the storage agent goes away.
  while (progress.done.load() < (std::uint64_t{1} << 20) && !finished.load())
    std::this_thread::yield();
  stop_server();
  copy.join();
  ASSERT_FALSE(result);
  EXPECT_LT(progress.done.load(), progress.total.load());
  EXPECT_EQ(leftovers(local_, {}), std::vector<std::string>{});
}

}  // namespace
}  // namespace loom::burstbuffer
