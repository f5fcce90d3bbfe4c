// The HDF5 skeleton of a user's file holds their data (small datasets travel inside it,
// attributes too). Issue 19 found it written 0644 in /tmp, where another user read
// loom-alice's. It is now made in memory: nothing is created in the temporary directory.
#include <fmt/format.h>
#include <hdf5.h>
#include <sys/inotify.h>

#include <thread>

#include "run.hpp"
#include "storage_fixture.hpp"

namespace loom::burstbuffer {
namespace {

class SkeletonTest : public DataPlaneTest {
 protected:
  void SetUp() override {
    fs::create_directories(tmp_);
    fs::permissions(tmp_, fs::perms::all | fs::perms::sticky_bit);  // as /tmp is
    ::setenv("TMPDIR", tmp_.c_str(), 1);
    DataPlaneTest::SetUp();
  }
  void TearDown() override {
    DataPlaneTest::TearDown();
    ::unsetenv("TMPDIR");
    fs::remove_all(tmp_);
  }
  // A file with one dataset small enough to travel inside the skeleton.
  static void write_small_dataset(const fs::path& path) {
    const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t n = 1000;
    const hid_t space = H5Screate_simple(1, &n, nullptr);
    const hid_t set =
        H5Dcreate2(file, "/small", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    std::vector<double> values(n);
    for (std::size_t i = 0; i < n; ++i) values[i] = 0.5 * static_cast<double>(i);
    EXPECT_GE(H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
    H5Dclose(set);
    H5Sclose(space);
    H5Fclose(file);
  }
  fs::path tmp_ = testing::temp_path("tmpdir");
};

TEST_F(SkeletonTest, NothingOfAUsersFileIsWrittenToTheTemporaryDirectory) {
  write_small_dataset(export_ / "alice.h5");
  const int watch = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(watch, 0);
  ASSERT_GE(::inotify_add_watch(watch, tmp_.c_str(), IN_CREATE), 0);
  FileProgress progress;
  std::atomic<bool> cancelled{false};
  const std::vector<std::string> datasets{"/small"};
  auto fetched =
      stager_->fetch(remote(), "/alice.h5", dir_fd_, "alice.h5", progress, cancelled, datasets);
  ASSERT_TRUE(fetched) << fetched.error().to_string();
  char events[4096];
  const ssize_t n = ::read(watch, events, sizeof(events));
  std::string created;
  for (ssize_t at = 0; at < n;) {
    const auto* e = reinterpret_cast<const inotify_event*>(events + at);
    created += std::string(e->len > 0 ? e->name : "?") + " ";
    at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
  }
  EXPECT_EQ(created, "") << "created in the temporary directory while staging";
  ::close(watch);
  // The staged dataset is the source's (h5diff's own temporary files come after the watch).
  const testing::Completed diff =
      testing::run({"h5diff", (export_ / "alice.h5").string(), (local_ / "alice.h5").string(),
                    "/small", "/small"});
  EXPECT_EQ(diff.exit_code, 0) << diff.out << diff.err;
}

// Four hosts stage the same file's datasets at once (the main job): each skeleton is made in
// memory under a name of its own, or HDF5 refuses all but the first.
TEST_F(SkeletonTest, SkeletonsForSeveralStagersAtOnceAreEachMade) {
  write_small_dataset(export_ / "shared.h5");
  std::vector<std::unique_ptr<Stager>> stagers;
  stagers.reserve(4);
  for (int i = 0; i < 4; ++i) stagers.push_back(Stager::open(options()).value());
  std::vector<Status> results(stagers.size());
  std::vector<std::thread> threads;
  threads.reserve(stagers.size());
  for (std::size_t i = 0; i < stagers.size(); ++i) {
    threads.emplace_back([&, i] {
      FileProgress progress;
      std::atomic<bool> cancelled{false};
      const std::vector<std::string> datasets{"/small"};
      results[i] = stagers[i]->fetch(remote(), "/shared.h5", dir_fd_, fmt::format("copy{}.h5", i),
                                     progress, cancelled, datasets);
    });
  }
  for (std::thread& t : threads) t.join();
  for (const Status& r : results) EXPECT_TRUE(r) << r.error().to_string();
}

}  // namespace
}  // namespace loom::burstbuffer
