// Users' HDF5 files are read by loom-h5skeleton, not by an agent (issue 19: a damaged file
// crashed the root agent inside libhdf5). Watched here while it reads a file of many
// datasets on the storage side, and while it places their data in the skeleton the stager
// fetched (which came from the user's file, and which the user can write): it runs as the
// file's user, undumpable, with its descriptors only; and when it dies of a signal, that
// staging fails naming the file and the next one is served.
#include <fmt/format.h>
#include <hdf5.h>

#include <csignal>
#include <future>
#include <optional>
#include <sstream>
#include <thread>

#include "loom/burstbuffer/identity.hpp"
#include "loom/common/unique_fd.hpp"
#include "storage_fixture.hpp"

namespace loom::burstbuffer {
namespace {

constexpr int kDatasets = 4000;

// Datasets enough that reading them takes loom-h5skeleton a while.
void write_many(const fs::path& path) {
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t n = 4;
  const hid_t space = H5Screate_simple(1, &n, nullptr);
  const std::vector<int> values{1, 2, 3, 4};
  for (int i = 0; i < kDatasets; ++i) {
    const hid_t set = H5Dcreate2(file, fmt::format("/d{}", i).c_str(), H5T_NATIVE_INT, space,
                                 H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(set, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    H5Dclose(set);
  }
  H5Sclose(space);
  H5Fclose(file);
}

// This process's child running loom-h5skeleton, once it runs as `uid`: the storage side's,
// or with `placing` the stager's (loom-h5skeleton --place).
std::optional<pid_t> reader_as(uid_t uid, const std::future<Status>& staging,
                               bool placing = false) {
  const std::string parent = std::to_string(::getpid());
  while (staging.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) {
    for (const auto& entry : fs::directory_iterator("/proc")) {
      std::istringstream status(testing::proc_file(entry.path() / "status"));
      std::string line, name, ppid, uids;
      while (std::getline(status, line)) {
        if (line.starts_with("Name:")) name = line.substr(line.find_first_not_of(" \t", 5));
        if (line.starts_with("PPid:")) ppid = line.substr(line.find_first_not_of(" \t", 5));
        if (line.starts_with("Uid:")) uids = line.substr(line.find_first_not_of(" \t", 4));
      }
      // The name is cut at 15 characters; the real, effective, saved and file uids.
      if (name != "loom-h5skeleto" && name != "loom-h5skeleton") continue;
      const std::string cmdline = testing::proc_file(entry.path() / "cmdline");
      if (ppid == parent && uids == fmt::format("{0}\t{0}\t{0}\t{0}", uid) &&
          (cmdline.find("--place") != std::string::npos) == placing)
        return static_cast<pid_t>(std::stoi(entry.path().filename().string()));
    }
  }
  return std::nullopt;
}

// The descriptors 0-4 of the process at `proc`, which it was given; any other is one it
// opened itself, on `file` (HDF5 opens its file again by name), never one of the caller's.
std::vector<int> given_descriptors(const fs::path& proc, const fs::path& file) {
  std::vector<int> given;
  for (const auto& entry : fs::directory_iterator(proc / "fd")) {
    const int fd = std::stoi(entry.path().filename().string());
    if (fd <= 4) {
      given.push_back(fd);
    } else {
      EXPECT_EQ(fs::read_symlink(entry.path()), file) << "the caller's descriptors stay its own";
    }
  }
  std::ranges::sort(given);
  return given;
}

class SkeletonReaderTest : public DataPlaneTest {
 protected:
  void SetUp() override {
    DataPlaneTest::SetUp();
    alice_ = remote_as("loom-alice");
    write_many(export_ / "many.h5");
    ASSERT_EQ(::chown((export_ / "many.h5").c_str(), alice_.uid, alice_.gid), 0);
    for (int i = 0; i < kDatasets; ++i) datasets_.push_back(fmt::format("/d{}", i));
  }
  // Stages into `dir` as root, or into alice's directory as her, as an agent does.
  std::future<Status> stage(const std::string& name, bool as_alice = false) {
    return std::async(std::launch::async, [this, name, as_alice]() -> Status {
      FileProgress progress;
      std::atomic<bool> cancelled{false};
      std::optional<FsIdentity> alice;
      if (as_alice) alice.emplace(LOOM_TRY(FsIdentity::assume(alice_.uid, alice_.gid)));
      return stager_->fetch(remote_as("loom-alice"), "/many.h5",
                            as_alice ? alice_dir_.get() : dir_fd_, name, progress, cancelled,
                            datasets_);
    });
  }
  // A directory of alice's, as her slice is.
  UniqueFd alice_dir() {
    fs::create_directories(local_ / "alice");
    EXPECT_EQ(::chown((local_ / "alice").c_str(), alice_.uid, alice_.gid), 0);
    return UniqueFd(::open((local_ / "alice").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  }
  // Who stages: uid and gid (each staging takes a fresh credential: Munge refuses a replay).
  Remote alice_;
  std::vector<std::string> datasets_;
  UniqueFd alice_dir_;
};

TEST_F(SkeletonReaderTest, ItReadsAsTheUserWithNothingOfTheAgentsAndItsCrashFailsOnlyItsStaging) {
  std::future<Status> staging = stage("crashed.h5");
  const std::optional<pid_t> reader = reader_as(alice_.uid, staging);
  ASSERT_TRUE(reader) << "no loom-h5skeleton ran as loom-alice while the file was read";
  ASSERT_EQ(::kill(*reader, SIGSTOP), 0);  // held while it is looked at
  const fs::path proc = fs::path("/proc") / std::to_string(*reader);
  // 0-4 as given, and what it opened itself: HDF5 opens the source again by its name.
  const fs::path source = fs::read_symlink(proc / "fd" / "3");
  EXPECT_EQ(given_descriptors(proc, source), (std::vector<int>{0, 1, 2, 3, 4}));
  const testing::Completed peek =
      testing::run({"runuser", "-u", "loom-alice", "--", "cat", (proc / "environ").string()});
  EXPECT_NE(peek.exit_code, 0) << "undumpable: its user may not read its memory or ptrace it";
  ASSERT_EQ(::kill(*reader, SIGABRT), 0);  // as std::terminate ends it
  ASSERT_EQ(::kill(*reader, SIGCONT), 0);

  const Status crashed = staging.get();
  ASSERT_FALSE(crashed) << "a reader that died cannot have described the file";
  EXPECT_NE(
      crashed.error().to_string().find("/many.h5: reading its HDF5 structure failed (SIGABRT)"),
      std::string::npos)
      << crashed.error().to_string();
  EXPECT_FALSE(fs::exists(local_ / "crashed.h5"));
  const Status served = stage("served.h5").get();
  ASSERT_TRUE(served) << served.error().to_string();
  const testing::Completed diff =
      testing::run({"h5diff", (export_ / "many.h5").string(), (local_ / "served.h5").string()});
  EXPECT_EQ(diff.exit_code, 0) << diff.out << diff.err;
}

// The skeleton the stager fetched came from the user's file: loom-h5skeleton --place opens
// it, as the skeleton's owner, with the plan, its answer and the skeleton as descriptors;
// the stager itself writes bytes only. Its crash fails that staging alone.
TEST_F(SkeletonReaderTest, TheStagersSkeletonIsOpenedAsItsOwnerAndItsCrashFailsOnlyItsStaging) {
  alice_dir_ = alice_dir();
  std::future<Status> staging = stage("crashed.h5", true);
  const std::optional<pid_t> placer = reader_as(alice_.uid, staging, true);
  ASSERT_TRUE(placer) << "no loom-h5skeleton --place ran as loom-alice";
  ASSERT_EQ(::kill(*placer, SIGSTOP), 0);
  const fs::path proc = fs::path("/proc") / std::to_string(*placer);
  const fs::path skeleton = fs::read_symlink(proc / "fd" / "4");
  EXPECT_EQ(skeleton, local_ / "alice" / ".crashed.h5.loom-partial");
  EXPECT_EQ(given_descriptors(proc, skeleton), (std::vector<int>{0, 1, 2, 4}));
  // As a skeleton made to crash HDF5 would (SIGABRT: AddressSanitizer's builds handle
  // SIGSEGV themselves, and exit 1).
  ASSERT_EQ(::kill(*placer, SIGABRT), 0);
  ASSERT_EQ(::kill(*placer, SIGCONT), 0);

  const Status crashed = staging.get();
  ASSERT_FALSE(crashed);
  EXPECT_NE(crashed.error().to_string().find(
                "/many.h5 (skeleton): placing its datasets in the skeleton failed (SIGABRT)"),
            std::string::npos)
      << crashed.error().to_string();
  EXPECT_FALSE(fs::exists(local_ / "alice" / "crashed.h5"));
  EXPECT_FALSE(fs::exists(skeleton));
  const Status served = stage("served.h5", true).get();
  ASSERT_TRUE(served) << served.error().to_string();
  EXPECT_EQ(fs::status(local_ / "alice" / "served.h5").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  const testing::Completed diff = testing::run(
      {"h5diff", (export_ / "many.h5").string(), (local_ / "alice" / "served.h5").string()});
  EXPECT_EQ(diff.exit_code, 0) << diff.out << diff.err;
}

}  // namespace
}  // namespace loom::burstbuffer
