// A storage agent and a stager for real: a StorageServer behind a gRPC server on loopback,
// a Stager over libfabric tcp;ofi_rxm, Munge credentials from munged.
#pragma once

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <set>

#include "loom/burstbuffer/data_plane.hpp"
#include "loom/common/crc32c.hpp"
#include "loom/common/munge.hpp"
#include "run.hpp"
#include "temp.hpp"

namespace loom::burstbuffer {

namespace fs = std::filesystem;

inline DataPlaneOptions options() {
  DataPlaneOptions o;
  o.fabric = {"tcp;ofi_rxm", "lo"};
  o.range = std::size_t{1} << 20;  // small ranges: many in flight even for small files
  o.buffers = 4;
  o.h5skeleton = testing::built("burstbuffer/loom-h5skeleton");
  return o;
}

inline void write_random(const fs::path& path, std::uint64_t size, unsigned seed) {
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

inline std::uint32_t file_crc(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  std::vector<std::byte> chunk(8 << 20);
  std::uint32_t crc = 0;
  for (ssize_t n; (n = ::read(fd, chunk.data(), chunk.size())) > 0;)
    crc = crc32c(std::span(chunk.data(), static_cast<std::size_t>(n)), crc);
  ::close(fd);
  return crc;
}

// Files whose name is not one the test expects: what a failed copy must not leave.
inline std::vector<std::string> leftovers(const fs::path& dir,
                                          const std::set<std::string>& expected) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!expected.contains(e.path().filename().string()))
      out.push_back(e.path().filename().string());
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
    fs::remove_all(journal_);
  }

  void start_server() {
    auto storage = StorageServer::open({export_, "storage0", journal_}, options());
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

  // remote(), on behalf of `user` (a root credential may name the user, as the agent's does).
  Remote remote_as(const std::string& user) const {
    Remote as_user = remote();
    const passwd* pw = ::getpwnam(user.c_str());
    EXPECT_NE(pw, nullptr) << user << ": scripts/install-deps.sh makes the tests' users";
    if (pw != nullptr) {
      as_user.uid = pw->pw_uid;
      as_user.gid = pw->pw_gid;
    }
    return as_user;
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
  fs::path journal_ = testing::temp_path("storage-writes");
  std::unique_ptr<StorageServer> storage_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<Stager> stager_;
  int dir_fd_ = -1;
};

}  // namespace loom::burstbuffer
