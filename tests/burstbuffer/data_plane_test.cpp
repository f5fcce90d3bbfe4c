// Staging's data plane for real: a StorageServer behind a gRPC server on loopback, a Stager
// pulling and pushing files over libfabric tcp;ofi_rxm, Munge credentials from munged.
#include "loom/burstbuffer/data_plane.hpp"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <thread>

#include "loom/burstbuffer/identity.hpp"
#include "loom/burstbuffer/slice.hpp"
#include "loom/common/crc32c.hpp"
#include "loom/common/munge.hpp"
#include "temp.hpp"

namespace loom::burstbuffer {
namespace {

namespace fs = std::filesystem;

DataPlaneOptions options() {
  DataPlaneOptions o;
  o.fabric = {"tcp;ofi_rxm", "lo"};
  o.range = std::size_t{1} << 20;  // small ranges: many in flight even for small files
  o.buffers = 4;
  return o;
}

void write_random(const fs::path& path, std::uint64_t size, unsigned seed) {
  std::mt19937_64 random(seed);
  std::ofstream out(path, std::ios::binary);
  std::vector<std::uint64_t> chunk(1 << 17);
  for (std::uint64_t done = 0; done < size;) {
    for (auto& word : chunk) word = random();
    const std::uint64_t n = std::min<std::uint64_t>(size - done, chunk.size() * 8);
    out.write(reinterpret_cast<const char*>(chunk.data()), static_cast<std::streamsize>(n));
    done += n;
  }
}

std::uint32_t file_crc(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  std::vector<std::byte> chunk(8 << 20);
  std::uint32_t crc = 0;
  for (ssize_t n; (n = ::read(fd, chunk.data(), chunk.size())) > 0;) crc = crc32c(std::span(chunk.data(), static_cast<std::size_t>(n)), crc);
  ::close(fd);
  return crc;
}

// Files whose name is not one the test expects: what a failed copy must not leave.
std::vector<std::string> leftovers(const fs::path& dir, const std::set<std::string>& expected) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!expected.contains(e.path().filename().string())) out.push_back(e.path().filename().string());
  }
  return out;
}

class DataPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "a storage agent runs as root";
    fs::create_directories(export_);
    fs::create_directories(local_);
    start_server();
    auto stager = Stager::open(options());
    ASSERT_TRUE(stager) << stager.error().to_string();
    stager_ = std::move(*stager);
    dir_fd_ = ::open(local_.c_str(), O_PATH | O_DIRECTORY);
  }
  void TearDown() override {
    ::close(dir_fd_);
    stop_server();
    fs::remove_all(export_);
    fs::remove_all(local_);
  }

  void start_server() {
    auto storage = StorageServer::open(export_, options());
    ASSERT_TRUE(storage) << storage.error().to_string();
    storage_ = std::move(*storage);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(storage_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = "127.0.0.1:" + std::to_string(port);
  }
  void stop_server() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    storage_.reset();
  }

  Remote remote() const {
    auto credential = munge_credential();
    EXPECT_TRUE(credential) << credential.error().to_string();
    return {address_, credential.value_or(""), 0, 0};
  }

  Status fetch(const std::string& path, const std::string& name) {
    FileProgress progress;
    std::atomic<bool> cancelled{false};
    return stager_->fetch(remote(), path, dir_fd_, name, progress, cancelled);
  }
  Status store(const fs::path& local, const std::string& path) {
    FileProgress progress;
    std::atomic<bool> cancelled{false};
    const int fd = ::open(local.c_str(), O_RDONLY);
    Status s = stager_->store(remote(), fd, path, progress, cancelled);
    ::close(fd);
    return s;
  }

  fs::path export_ = testing::temp_path("export");
  fs::path local_ = testing::temp_path("local");
  std::unique_ptr<StorageServer> storage_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<Stager> stager_;
  int dir_fd_ = -1;
};

TEST_F(DataPlaneTest, FilesOfEverySizeGoBothWaysByteIdentical) {
  fs::create_directories(export_ / "results");
  const std::uint64_t mib = 1 << 20;
  std::set<std::string> names;
  for (std::uint64_t size : {std::uint64_t{0}, std::uint64_t{1}, mib - 1, mib, mib + 1, 13 * mib + 12345}) {
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
  EXPECT_NE(through_link.error().message().find("symbolic link"), std::string::npos) << through_link.error().to_string();
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
  struct stat st{};
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
