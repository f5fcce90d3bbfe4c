// Real slices: loop-mounted images, as root (as the agent runs), written to as loom-alice.
#include "loom/burstbuffer/slice.hpp"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <vector>

#include "temp.hpp"

namespace loom::burstbuffer {
namespace {

namespace fs = std::filesystem;

class SliceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "slices are mounted by the agent, as root";
    for (auto [name, user] : {std::pair{"loom-alice", &alice_}, std::pair{"loom-bob", &bob_}}) {
      const passwd* pw = ::getpwnam(name);  // a static buffer: copied before the next call
      ASSERT_NE(pw, nullptr) << "scripts/install-deps.sh creates " << name;
      *user = {pw->pw_uid, pw->pw_gid};
    }
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  SliceSpec spec(std::uint64_t bytes) const {
    return {dir_ / "nvme0" / "job_1.img",
            dir_ / "bb" / "job_1",
            bytes,
            alice_.uid,
            alice_.gid,
            0700,
            true};
  }

  // As `user`, writes `bytes` to `file` (1 MiB at a time); returns the errno that stopped
  // it, or 0 when all were written.
  struct User {
    uid_t uid = 0;
    gid_t gid = 0;
  };

  static int write_as(const User& user, const fs::path& file, std::uint64_t bytes) {
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) return -1;
    const pid_t pid = ::fork();
    if (pid == 0) {
      int result = 0;
      if (::setgroups(0, nullptr) != 0 || ::setgid(user.gid) != 0 || ::setuid(user.uid) != 0)
        result = -2;
      const int fd = result == 0 ? ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
      if (result == 0 && fd < 0) result = errno;
      std::vector<char> chunk(1 << 20, 'x');
      for (std::uint64_t done = 0; result == 0 && done < bytes; done += chunk.size()) {
        if (::write(fd, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size()))
          result = errno;
      }
      if (result == 0 && ::fsync(fd) != 0) result = errno;
      (void)::write(pipe_fds[1], &result, sizeof(result));
      ::_exit(0);
    }
    ::close(pipe_fds[1]);
    int result = -3;
    (void)::read(pipe_fds[0], &result, sizeof(result));
    ::close(pipe_fds[0]);
    ::waitpid(pid, nullptr, 0);
    return result;
  }

  fs::path dir_ = loom::testing::temp_path("bb");
  User alice_, bob_;
};

TEST_F(SliceTest, ASliceIsTheUsersAndHoldsItsSizeAndNoMore) {
  auto slice = Slice::create(spec(32u << 20));
  ASSERT_TRUE(slice.has_value()) << slice.error().to_string();
  EXPECT_TRUE(is_mounted(slice->dir()));
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "nvme0" / "job_1.img").c_str(), &st), 0);
  EXPECT_GE(std::uint64_t(st.st_blocks) * 512, 32u << 20)
      << "its bytes are taken from the device at once (mkfs punched no holes in them)";
  ASSERT_EQ(::stat(slice->dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, alice_.uid);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(write_as(alice_, slice->dir() / "fits", 24u << 20), 0)
      << "most of the 32 MiB is usable";
  EXPECT_EQ(write_as(alice_, slice->dir() / "overflows", 16u << 20), ENOSPC)
      << "a write past the slice fails";
  EXPECT_EQ(write_as(bob_, slice->dir() / "intruder", 1), EACCES)
      << "another user cannot write in it";
  ASSERT_TRUE(slice->destroy().has_value());
  EXPECT_FALSE(is_mounted(dir_ / "bb" / "job_1"));
  EXPECT_FALSE(fs::exists(dir_ / "bb" / "job_1"));
  EXPECT_FALSE(fs::exists(dir_ / "nvme0" / "job_1.img")) << "teardown leaves nothing";
}

TEST_F(SliceTest, AMountedSliceIsFoundAgainAfterARestart) {
  {
    auto slice = Slice::create(spec(8u << 20));
    ASSERT_TRUE(slice.has_value()) << slice.error().to_string();
  }  // the agent that made it is gone; the slice stays
  auto found = Slice::find(dir_ / "nvme0" / "job_1.img", dir_ / "bb" / "job_1");
  ASSERT_TRUE(found.has_value()) << found.error().to_string();
  ASSERT_TRUE(found->destroy().has_value());
  EXPECT_FALSE(Slice::find(dir_ / "nvme0" / "job_1.img", dir_ / "bb" / "job_1").has_value());
}

TEST_F(SliceTest, ASliceThatCannotBeMadeLeavesNothing) {
  auto tiny = Slice::create(spec(1000));
  ASSERT_FALSE(tiny.has_value());
  EXPECT_EQ(tiny.error().message(), "a slice needs at least 1 MiB");
  SliceSpec huge = spec(std::uint64_t{1} << 60);  // more than any disk here
  auto refused = Slice::create(huge);
  ASSERT_FALSE(refused.has_value());
  EXPECT_FALSE(fs::exists(huge.image));
  EXPECT_FALSE(fs::exists(huge.mount));
}

// A job that turns a file in its slice into a symlink to /etc/shadow gets an error from the
// agent, not the file; nor does a path climb out with "..".
TEST_F(SliceTest, OpeningBeneathARootFollowsNoSymlinkAndNeverLeavesIt) {
  const fs::path root = dir_ / "export";
  fs::create_directories(root / "data");
  { std::ofstream(root / "data" / "in.h5") << "hdf5"; }
  fs::create_symlink("/etc/shadow", root / "data" / "out.h5");
  fs::create_symlink(root / "data", root / "link");
  const int root_fd = ::open(root.c_str(), O_DIRECTORY | O_PATH | O_CLOEXEC);
  ASSERT_GE(root_fd, 0);
  auto good = open_beneath(root_fd, "/data/in.h5", O_RDONLY);
  ASSERT_TRUE(good.has_value()) << good.error().to_string();
  ::close(*good);
  EXPECT_EQ(open_beneath(root_fd, "data/out.h5", O_RDONLY).error().message(),
            "refusing data/out.h5: it is or goes through a symbolic link");
  EXPECT_EQ(open_beneath(root_fd, "link/in.h5", O_RDONLY).error().message(),
            "refusing link/in.h5: it is or goes through a symbolic link");
  EXPECT_EQ(open_beneath(root_fd, "../../etc/passwd", O_RDONLY).error().message(),
            "refusing ../../etc/passwd: it leads outside the directory it must stay in");
  EXPECT_EQ(open_beneath(root_fd, "data/missing", O_RDONLY).error().code(), ErrorCode::kNotFound);
  ::close(root_fd);
}

}  // namespace
}  // namespace loom::burstbuffer
