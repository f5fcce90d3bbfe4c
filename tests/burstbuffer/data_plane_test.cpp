// Staging's data plane for real: a StorageServer behind a gRPC server on loopback, a Stager
// pulling and pushing files over libfabric tcp;ofi_rxm, Munge credentials from munged.
#include <pwd.h>
#include <sys/stat.h>

#include <thread>

#include "loom/burstbuffer/slice.hpp"
#include "storage_fixture.hpp"

namespace loom::burstbuffer {
namespace {

namespace fs = std::filesystem;

TEST_F(DataPlaneTest, FilesOfEverySizeGoBothWaysByteIdentical) {
  fs::create_directories(export_ / "results");
  const std::uint64_t mib = 1 << 20;
  std::set<std::string> names;
  for (std::uint64_t size :
       {std::uint64_t{0}, std::uint64_t{1}, mib - 1, mib, mib + 1, 13 * mib + 12345}) {
    SCOPED_TRACE(size);
    const std::string name = "f" + std::to_string(size);
    names.insert(name);
    write_random(export_ / name, size, static_cast<unsigned>(size));
    ASSERT_TRUE(fetch("/" + name, name)) << fetch("/" + name, name).error().to_string();
    EXPECT_EQ(fs::file_size(local_ / name), size);
    EXPECT_EQ(file_crc(local_ / name), file_crc(export_ / name));
    auto stored = store(local_ / name, "/results/" + name);
    ASSERT_TRUE(stored) << stored.error().to_string();
    EXPECT_EQ(fs::file_size(export_ / "results" / name), size);
    EXPECT_EQ(file_crc(export_ / "results" / name), file_crc(export_ / name));
  }
  EXPECT_EQ(leftovers(export_ / "results", names), std::vector<std::string>{});
}

TEST_F(DataPlaneTest, AGibibyteRoundTrip) {
  const std::uint64_t size = std::uint64_t{1} << 30;
  write_random(export_ / "big", size, 11);
  FileProgress progress;
  std::atomic<bool> cancelled{false};
  auto fetched = stager_->fetch(remote(), "/big", dir_fd_, "big", progress, cancelled);
  ASSERT_TRUE(fetched) << fetched.error().to_string();
  EXPECT_EQ(progress.done.load(), size);
  EXPECT_EQ(progress.total.load(), size);
  auto stored = store(local_ / "big", "/big.back");
  ASSERT_TRUE(stored) << stored.error().to_string();
  const std::uint32_t crc = file_crc(export_ / "big");
  EXPECT_EQ(file_crc(local_ / "big"), crc);
  EXPECT_EQ(file_crc(export_ / "big.back"), crc);
}

TEST_F(DataPlaneTest, RefusesWhatIsOutsideTheExportOrMissing) {
  const fs::path secret = testing::temp_path("secret");
  { std::ofstream(secret) << "not exported"; }
  fs::create_symlink(secret, export_ / "link");
  auto through_link = fetch("/link", "link");
  ASSERT_FALSE(through_link);
  EXPECT_NE(through_link.error().message().find("symbolic link"), std::string::npos)
      << through_link.error().to_string();
  auto up = fetch("/../" + secret.filename().string(), "up");
  ASSERT_FALSE(up);
  EXPECT_NE(up.error().message().find("outside"), std::string::npos) << up.error().to_string();
  auto missing = fetch("/nope.h5", "nope.h5");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("/nope.h5"), std::string::npos);
  { std::ofstream(local_ / "out") << "data"; }
  auto no_dir = store(local_ / "out", "/no/such/dir/out");
  ASSERT_FALSE(no_dir);
  EXPECT_EQ(no_dir.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(leftovers(local_, {"out"}), std::vector<std::string>{});
  fs::remove(secret);
}

TEST_F(DataPlaneTest, ActsAsTheUserItIsAskedFor) {
  const passwd* alice = ::getpwnam("loom-alice");
  ASSERT_NE(alice, nullptr) << "scripts/install-deps.sh creates loom-alice";
  const uid_t uid = alice->pw_uid;
  const gid_t gid = alice->pw_gid;
  { std::ofstream(export_ / "roots") << "root's only"; }
  ::chmod((export_ / "roots").c_str(), 0600);
  Remote as_alice = remote();
  as_alice.uid = uid;
  as_alice.gid = gid;
  FileProgress progress;
  std::atomic<bool> cancelled{false};
  auto refused = stager_->fetch(as_alice, "/roots", dir_fd_, "roots", progress, cancelled);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied) << refused.error().to_string();
  // What the user writes is the user's.
  fs::create_directories(export_ / "alice");
  ::chown((export_ / "alice").c_str(), uid, gid);
  { std::ofstream(local_ / "mine") << "alice's"; }
  const int fd = ::open((local_ / "mine").c_str(), O_RDONLY);
  as_alice.credential = remote().credential;  // a credential is good for one call
  auto stored = stager_->store(as_alice, fd, "/alice/mine", progress, cancelled);
  ::close(fd);
  ASSERT_TRUE(stored) << stored.error().to_string();
  struct stat st {};
  ASSERT_EQ(::stat((export_ / "alice" / "mine").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, uid);
}

TEST_F(DataPlaneTest, AFullDestinationFailsAndLeavesNothing) {
  const fs::path image = testing::temp_path("small.img"), mount = testing::temp_path("small");
  auto slice = Slice::create({image, mount, 8 << 20, 0, 0, 0700, true});
  ASSERT_TRUE(slice) << slice.error().to_string();
  write_random(export_ / "big", 16 << 20, 3);
  const int slice_fd = ::open(mount.c_str(), O_PATH | O_DIRECTORY);
  FileProgress progress;
  std::atomic<bool> cancelled{false};
  auto full = stager_->fetch(remote(), "/big", slice_fd, "big", progress, cancelled);
  ::close(slice_fd);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code(), ErrorCode::kResourceExhausted) << full.error().to_string();
  EXPECT_NE(full.error().message().find("No space left"), std::string::npos);
  EXPECT_EQ(leftovers(mount, {}), std::vector<std::string>{});
  ASSERT_TRUE(slice->destroy());
}

TEST_F(DataPlaneTest, AConnectionCutMidTransferFailsAndLeavesNothing) {
  write_random(export_ / "big", 256 << 20, 5);
  FileProgress progress;
  std::atomic<bool> cancelled{false};
  Status result;
  std::atomic<bool> finished{false};
  std::thread copy([&] {
    result = stager_->fetch(remote(), "/big", dir_fd_, "big", progress, cancelled);
    finished.store(true);
  });
  // Cut once bytes are moving, not before: wait on the progress the copy reports.
  while (progress.done.load() == 0 && !finished.load()) std::this_thread::yield();
  stop_server();
  copy.join();
  ASSERT_FALSE(result);
  EXPECT_LT(progress.done.load(), progress.total.load());
  EXPECT_EQ(leftovers(local_, {}), std::vector<std::string>{});
  // Pushing to a storage agent that went away: the same.
  { std::ofstream(local_ / "out") << "data"; }
  auto gone = store(local_ / "out", "/out");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), ErrorCode::kUnavailable) << gone.error().to_string();
}

TEST_F(DataPlaneTest, CancelledCopiesLeaveNothing) {
  write_random(export_ / "big", 64 << 20, 9);
  FileProgress progress;
  std::atomic<bool> cancelled{true};
  auto result = stager_->fetch(remote(), "/big", dir_fd_, "big", progress, cancelled);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kCancelled);
  EXPECT_EQ(leftovers(local_, {}), std::vector<std::string>{});
}

}  // namespace
}  // namespace loom::burstbuffer
