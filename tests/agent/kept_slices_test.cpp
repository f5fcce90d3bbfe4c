// A node's kept slices: a preempted job takes its own back, with the stamps of the files
// staged into it; a slice made on a device evicts kept slices, oldest first and only as
// many as it needs, and never a slice a job holds. The images here are sparse files, not
// mounted: what is counted is their size, as on a device.
#include "loom/agent/kept_slices.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "loom/burstbuffer/slice.hpp"
#include "loom/common/unique_fd.hpp"
#include "temp.hpp"

namespace loom::agent {
namespace {

namespace fs = std::filesystem;
constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;

class KeptSlicesTest : public ::testing::Test {
 protected:
  void SetUp() override { fs::create_directories(device_ / ".loom"); }
  void TearDown() override { fs::remove_all(device_); }
  // A job's slice image of `bytes` on the device, as a slice's would be.
  void image(std::uint64_t job, std::uint64_t bytes) const {
    const fs::path path = burstbuffer::slice_image(device_, job);
    std::ofstream(path) << "";
    fs::resize_file(path, bytes);
  }
  bool has_image(std::uint64_t job) const {
    return fs::exists(burstbuffer::slice_image(device_, job));
  }
  KeptSlice kept(std::uint64_t job, std::uint64_t bytes) const {
    return {job, 1000, bytes, {{"in.h5", 5, 123456789, 42}}};
  }
  // Whether with_room ran the make it was given.
  bool made(std::uint64_t bytes) const {
    bool ran = false;
    EXPECT_TRUE(kept_.with_room(device_, bytes, [&]() -> Status {
      ran = true;
      return {};
    }));
    return ran;
  }

  fs::path device_ = loom::testing::temp_path("nvme");
  KeptSlices kept_{{{device_.string(), 100 * kMiB, std::nullopt}}};
};

TEST_F(KeptSlicesTest, AJobTakesItsKeptSliceBackWithItsStampsOnce) {
  image(7, 10 * kMiB);
  ASSERT_TRUE(kept_.keep(device_, kept(7, 10 * kMiB)));
  EXPECT_EQ(kept_.jobs(), std::vector<std::uint64_t>{7});
  EXPECT_EQ(fs::status(device_ / ".loom" / "job_7.kept").permissions(),
            fs::perms::owner_read | fs::perms::owner_write)
      << "root's alone: it names the user's files";
  EXPECT_FALSE(kept_.claim(8)) << "another job's";

  const std::optional<KeptSlices::Claimed> claimed = kept_.claim(7);
  ASSERT_TRUE(claimed);
  EXPECT_EQ(claimed->device, device_);
  EXPECT_EQ(claimed->slice.uid, 1000u);
  EXPECT_EQ(claimed->slice.bytes, 10 * kMiB);
  EXPECT_EQ(claimed->slice.staged, kept(7, 0).staged);
  EXPECT_TRUE(has_image(7)) << "the slice is the job's again";
  EXPECT_FALSE(kept_.claim(7)) << "taken once";
  EXPECT_TRUE(kept_.jobs().empty());
}

TEST_F(KeptSlicesTest, ASliceMadeEvictsTheOldestKeptSlicesItNeedsAndNoJobsSlice) {
  image(1, 40 * kMiB);  // a running job's: no record
  image(2, 30 * kMiB);
  ASSERT_TRUE(kept_.keep(device_, kept(2, 30 * kMiB)));
  image(3, 20 * kMiB);
  ASSERT_TRUE(kept_.keep(device_, kept(3, 20 * kMiB)));

  EXPECT_TRUE(made(10 * kMiB));
  EXPECT_TRUE(has_image(2) && has_image(3)) << "90 + 10 MiB fit the 100 MiB device";
  EXPECT_TRUE(made(30 * kMiB));
  EXPECT_FALSE(has_image(2)) << "the oldest kept slice made room";
  EXPECT_TRUE(has_image(3)) << "60 + 30 MiB fit: the newer one stays";
  EXPECT_EQ(kept_.jobs(), std::vector<std::uint64_t>{3});
  EXPECT_TRUE(made(70 * kMiB));
  EXPECT_FALSE(has_image(3));
  EXPECT_TRUE(has_image(1)) << "a running job's slice is never evicted";
  EXPECT_TRUE(kept_.jobs().empty());
}

TEST_F(KeptSlicesTest, ADroppedSliceIsGoneWithItsRecord) {
  image(4, kMiB);
  ASSERT_TRUE(kept_.keep(device_, kept(4, kMiB)));
  kept_.drop(4);
  EXPECT_FALSE(has_image(4));
  EXPECT_TRUE(kept_.jobs().empty());
  EXPECT_FALSE(kept_.claim(4));
}

TEST_F(KeptSlicesTest, ARecordThatCannotBeReadIsNoKeptSlice) {
  image(5, kMiB);
  std::ofstream(device_ / ".loom" / "job_5.kept") << "{\"job\": 5";
  EXPECT_FALSE(kept_.claim(5));
  EXPECT_FALSE(fs::exists(device_ / ".loom" / "job_5.kept"));
  EXPECT_FALSE(has_image(5)) << "the job's start makes its slice anew";
}

// What a job changes in a staged file, or puts in its place, changes its stamp.
TEST_F(KeptSlicesTest, AStampChangesWhenTheFileIsWrittenOrReplaced) {
  const UniqueFd dir(::open(device_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir);
  std::ofstream(device_ / "in.h5") << "staged";
  const std::optional<FileStamp> before = stamp_of(dir.get(), "in.h5");
  ASSERT_TRUE(before);
  EXPECT_EQ(before->size, 6u);
  EXPECT_EQ(stamp_of(dir.get(), "in.h5"), before);

  std::ofstream(device_ / "in.h5", std::ios::app) << "!";
  EXPECT_NE(stamp_of(dir.get(), "in.h5"), before);
  std::ofstream(device_ / "other") << "staged";
  fs::rename(device_ / "other", device_ / "in.h5");
  EXPECT_NE(stamp_of(dir.get(), "in.h5")->inode, before->inode);
  fs::remove(device_ / "in.h5");
  fs::create_symlink("/etc/passwd", device_ / "in.h5");
  EXPECT_FALSE(stamp_of(dir.get(), "in.h5")) << "a link is no staged file";
}

}  // namespace
}  // namespace loom::agent
