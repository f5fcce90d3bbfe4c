// An HDF5 external link named as a dataset made the storage agent read a file outside its
// export (issue 19). Staging datasets reads only the file named: links into other files and
// virtual datasets (whose data lies in other files) are refused, naming file and dataset.
#include <hdf5.h>

#include "storage_fixture.hpp"

namespace loom::burstbuffer {
namespace {

class Hdf5LinksTest : public DataPlaneTest {
 protected:
  void SetUp() override {
    DataPlaneTest::SetUp();
    fs::create_directories(outside_);
    const std::vector<double> values(64, 7.0);
    const hsize_t n = values.size();
    {  // Outside the export: what an external link or a virtual dataset would reach.
      const hid_t file =
          H5Fcreate((outside_ / "secret.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
      const hid_t space = H5Screate_simple(1, &n, nullptr);
      const hid_t set = H5Dcreate2(file, "/data", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT,
                                   H5P_DEFAULT, H5P_DEFAULT);
      H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
      H5Dclose(set);
      H5Sclose(space);
      H5Fclose(file);
    }
    const hid_t file =
        H5Fcreate((export_ / "links.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hid_t space = H5Screate_simple(1, &n, nullptr);
    const hid_t own =
        H5Dcreate2(file, "/own", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(own, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    H5Dclose(own);
    H5Lcreate_external((outside_ / "secret.h5").c_str(), "/data", file, "/ext", H5P_DEFAULT,
                       H5P_DEFAULT);
    H5Lcreate_external((outside_ / "secret.h5").c_str(), "/", file, "/extgroup", H5P_DEFAULT,
                       H5P_DEFAULT);
    H5Lcreate_soft("/ext", file, "/soft", H5P_DEFAULT, H5P_DEFAULT);
    const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_virtual(dcpl, space, (outside_ / "secret.h5").c_str(), "/data", space);
    const hid_t virt =
        H5Dcreate2(file, "/virtual", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Dclose(virt);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(file);
  }
  void TearDown() override {
    DataPlaneTest::TearDown();
    fs::remove_all(outside_);
  }
  Status stage(const std::string& dataset) {
    FileProgress progress;
    std::atomic<bool> cancelled{false};
    const std::vector<std::string> datasets{dataset};
    return stager_->fetch(remote(), "/links.h5", dir_fd_, "links.h5", progress, cancelled,
                          datasets);
  }
  fs::path outside_ = testing::temp_path("outside-export");
};

TEST_F(Hdf5LinksTest, LinksIntoAnotherFileAreRefusedNamingFileAndDataset) {
  for (const char* dataset : {"/ext", "/extgroup/data", "/soft"}) {
    SCOPED_TRACE(dataset);
    auto staged = stage(dataset);
    ASSERT_FALSE(staged);
    EXPECT_EQ(staged.error().code(), ErrorCode::kInvalidArgument) << staged.error().to_string();
    EXPECT_NE(staged.error().message().find("/links.h5"), std::string::npos)
        << staged.error().to_string();
    EXPECT_NE(staged.error().message().find("is an external link"), std::string::npos)
        << staged.error().to_string();
  }
  EXPECT_EQ(leftovers(local_, {}), std::vector<std::string>{});
}

TEST_F(Hdf5LinksTest, AVirtualDatasetIsRefusedAndTheFilesOwnDataStillStages) {
  auto virt = stage("/virtual");
  ASSERT_FALSE(virt);
  EXPECT_NE(virt.error().message().find("dataset /virtual is virtual"), std::string::npos)
      << virt.error().to_string();
  auto own = stage("/own");
  EXPECT_TRUE(own) << own.error().to_string();
}

}  // namespace
}  // namespace loom::burstbuffer
