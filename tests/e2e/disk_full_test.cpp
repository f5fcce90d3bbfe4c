// The controller's state directory fills up while a job runs: the job's end cannot be
// stored, so loomctld stops with status 1 (loom up restarts it, as systemd's
// Restart=on-failure does), and the job's agent keeps the end until a controller has
// stored it. Restarted on the full disk, the controller answers reads, says the state cannot
// be written, and refuses changes. Once there is room again the job ends as it ended,
// having run once.
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "local_cluster.hpp"

namespace loom::testing {
namespace {

namespace fs = std::filesystem;

TEST(DiskFull, AnEndThatCannotBeStoredIsOwedUntilThereIsRoomAndTheJobRanOnce) {
  ASSERT_EQ(::geteuid(), 0u);
  const fs::path jobs = temp_path("jobs");
  fs::create_directories(jobs);
  ::chmod(jobs.c_str(), 01777);
  fs::path state;  // the controller's: a small filesystem of this test's own
  auto cluster = std::make_unique<LocalCluster>(
      1, "pack:1 numa:1 core:2 pu:1", "", std::vector<std::string>{},
      [&state](const fs::path& dir) {
        state = dir / "controller";
        fs::create_directories(state);
        ASSERT_EQ(
            ::mount("tmpfs", state.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0700"),
            0);
      });
  // Before the cluster goes (declared after it): what it removes is then a plain directory.
  struct Unmount {
    const fs::path& at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{state};

  Completed submitted = cluster->loom(
      "loom-alice",
      {"submit", "-o", "out.txt", "--", "sh", "-c",
       "echo ran >> runs.txt; echo start; while [ ! -e release ]; do sleep 0.05; done"},
      jobs.string());
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  const std::string id = lines(submitted.out).at(0);
  LocalCluster::wait_for(jobs / "out.txt", "start");

  // Fill it: the next write of the state fails.
  {
    std::ofstream filler(state / "filler", std::ios::binary);
    const std::string block(1 << 16, 'x');
    while (filler.write(block.data(), static_cast<std::streamsize>(block.size())) &&
           filler.flush()) {
    }
  }
  struct statvfs fs_info {};
  ASSERT_EQ(::statvfs(state.c_str(), &fs_info), 0);
  ASSERT_EQ(fs_info.f_bavail, 0u) << "the state's filesystem is full";

  std::ofstream(jobs / "release") << "";
  cluster->wait_log("loomctld exited with status 1; restarting it");

  // Restarted on the full disk: it answers reads, says why it takes no change, and waits.
  Completed read_only;
  for (const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
       std::chrono::steady_clock::now() < deadline;) {
    read_only = cluster->loom("loom-alice", {"show", id, "--json"}, jobs.string());
    if (read_only.exit_code == 0) break;  // the controller is up again
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(read_only.exit_code, 0) << read_only.err;
  EXPECT_EQ(nlohmann::json::parse(read_only.out)["state"], "RUNNING") << "its end is still owed";
  const std::string warning = "loom: warning: the controller cannot write its state since ";
  EXPECT_NE(read_only.err.find(warning), std::string::npos) << read_only.err;
  EXPECT_NE(read_only.err.find("it refuses changes until it can"), std::string::npos)
      << read_only.err;
  const Completed queued = cluster->loom("loom-alice", {"queue"}, jobs.string());
  EXPECT_EQ(queued.exit_code, 0) << queued.err;
  EXPECT_NE(queued.err.find(warning), std::string::npos) << queued.err;
  const Completed refused =
      cluster->loom("loom-alice", {"submit", "--", "/bin/true"}, jobs.string());
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("cannot write its state since"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("no change is taken until it can"), std::string::npos) << refused.err;
  fs::remove(state / "filler");

  Completed shown;
  for (const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
       std::chrono::steady_clock::now() < deadline;) {
    shown = cluster->loom("loom-alice", {"show", id, "--json"}, jobs.string());
    if (shown.exit_code == 0 && nlohmann::json::parse(shown.out)["state"] != "RUNNING") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  const nlohmann::json job = nlohmann::json::parse(shown.out);
  EXPECT_EQ(job["state"], "COMPLETED") << job.dump();
  EXPECT_EQ(job["exit_code"], 0);
  std::ifstream runs(jobs / "runs.txt");
  const std::string ran((std::istreambuf_iterator<char>(runs)), std::istreambuf_iterator<char>());
  EXPECT_EQ(ran, "ran\n") << "it ran once";
  std::ifstream log(cluster->state_dir() / "state" / "loomctld.log");
  const std::string said((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(said.find("the state could not be written"), std::string::npos) << said;
  EXPECT_NE(said.find("serving reads only"), std::string::npos) << said;
  EXPECT_NE(said.find("the state can be written again"), std::string::npos) << said;
  fs::remove_all(jobs);
}

}  // namespace
}  // namespace loom::testing
