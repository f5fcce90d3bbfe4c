// Burst buffers and staging end to end: `loom up` (two compute agents with loop-mounted
// NVMe devices, a storage agent exporting a directory), jobs submitted as loom-alice, files
// moved over libfabric tcp;ofi_rxm on loopback.
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <random>
#include <thread>

#include "cluster_test.hpp"
#include "loom/common/unique_fd.hpp"
#include "run.hpp"

namespace loom::testing {
namespace {

namespace fs = std::filesystem;
using loom::testing::run;

class BurstBufferTest : public ClusterTest {
 protected:
  std::string config() const override { return "[controller]\nkill_grace = \"2s\"\n"; }

  void SetUp() override {
    ClusterTest::SetUp();
    export_ = storage_with_results();
  }

  void write_random(const fs::path& path, std::size_t size) const {
    std::mt19937 random(static_cast<unsigned>(size));
    std::string bytes(size, '\0');
    for (char& c : bytes) c = static_cast<char>(random());
    std::ofstream(path, std::ios::binary) << bytes;
  }
  static std::string contents(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  // Waits (bounded: 30 s) for a job to write a file in the job directory.
  bool appears(const std::string& name) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!fs::exists(dir_ / name)) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }
  fs::path export_;
};

TEST_F(BurstBufferTest, ASliceIsTheJobsOwnAndHoldsWhatItWasGivenAndNoMore) {
  const std::uint64_t id = submit(
      {"submit", "--bb", "16M", "-o", "out-%j", "--", "/bin/sh", "-c",
       "stat -c '%U %a' \"$LOOM_BB_DIR\"; echo secret > \"$LOOM_BB_DIR/secret\"; "
       "dd if=/dev/zero of=\"$LOOM_BB_DIR/fill\" bs=1M count=64 2>&1 | grep -o 'No space left'; "
       "echo \"$LOOM_BB_DIR\" > slice; while [ ! -e release ]; do sleep 0.05; done"});
  ASSERT_TRUE(appears("slice"));
  const std::string slice = read("slice").substr(0, read("slice").find('\n'));
  // Another user cannot look in, whatever they run.
  Completed bob = cluster_->loom("loom-bob",
                                 {"submit", "-o", (dir_ / "bob-%j").string(), "--", "/bin/sh", "-c",
                                  "cat '" + slice + "/secret' || echo refused"},
                                 dir_.string());
  ASSERT_EQ(bob.exit_code, 0) << bob.err;
  const std::uint64_t bob_id = std::stoull(bob.out);
  const Completed watched =
      cluster_->loom("loom-bob", {"watch", "--json", std::to_string(bob_id)}, dir_.string());
  EXPECT_EQ(watched.exit_code, 0) << watched.err;
  EXPECT_NE(read("bob-" + std::to_string(bob_id)).find("refused"), std::string::npos);
  EXPECT_EQ(read("bob-" + std::to_string(bob_id)).find("secret\n"), std::string::npos);
  std::ofstream(dir_ / "release") << "";
  const nlohmann::json job = finish(id);
  EXPECT_EQ(job["state"], "COMPLETED") << job.dump();
  EXPECT_EQ(read("out-" + std::to_string(id)), "loom-alice 700\nNo space left\n");
  EXPECT_FALSE(fs::exists(slice));
  EXPECT_EQ(slices_left(), std::vector<std::string>{});
}

TEST_F(BurstBufferTest, FilesAreStagedInAndOutByteIdentical) {
  write_random(export_ / "one.bin", 1);
  write_random(export_ / "data.bin", (5 << 20) + 3);
  const std::uint64_t id = submit(
      {"submit", "--bb", "32M", "--stage-in", "storage:/one.bin", "--stage-in", "storage:/data.bin",
       "--stage-out", "out.bin:storage:/results/", "-o", "out-%j", "--", "/bin/sh", "-c",
       R"(echo "$LOOM_STAGED_FILES"; cp "$LOOM_BB_DIR/data.bin" "$LOOM_BB_DIR/out.bin")"});
  const nlohmann::json job = finish(id);
  ASSERT_EQ(job["state"], "COMPLETED") << job.dump();
  EXPECT_EQ(contents(export_ / "results" / "out.bin"), contents(export_ / "data.bin"));
  const std::string staged = read("out-" + std::to_string(id));
  EXPECT_NE(staged.find("/one.bin:"), std::string::npos) << staged;
  EXPECT_NE(staged.find("/data.bin\n"), std::string::npos) << staged;
  const nlohmann::json shown = show(id);
  ASSERT_EQ(shown["staging"].size(), 3u) << shown.dump();
  for (const nlohmann::json& f : shown["staging"]) {
    EXPECT_EQ(f["state"], "done") << f.dump();
    EXPECT_EQ(f["bytes_done"], f["bytes_total"]) << f.dump();
  }
  EXPECT_EQ(shown["staging"][1]["bytes_total"], (5 << 20) + 3);
  EXPECT_EQ(shown["staging"][2]["direction"], "out");
  EXPECT_EQ(slices_left(), std::vector<std::string>{});
}

// An agent stopped (SIGTERM: an upgrade) while it stages a job's file out leaves the copy
// to the next agent, which stages out again: the job completes with its file whole. The
// storage agent is held (SIGSTOP) so that the stop lands mid-copy.
TEST_F(BurstBufferTest, AStageOutCutShortByAnAgentStopIsDoneByTheNextAgent) {
  const std::uint64_t id = submit(
      {"submit", "--bb", "32M", "--stage-out", "out.bin:storage:/results/", "-o", "out-%j", "--",
       "/bin/sh", "-c",
       "head -c 5000000 /dev/urandom > \"$LOOM_BB_DIR/out.bin\"; cp \"$LOOM_BB_DIR/out.bin\" "
       "kept.bin; echo start; while [ ! -e go ]; do sleep 0.05; done"});
  LocalCluster::wait_for(dir_ / fmt::format("out-{}", id), "start");
  const std::string node = show(id)["placement"][0]["node"];
  const pid_t storage = daemon("loomd", "--export");
  ASSERT_EQ(::kill(storage, SIGSTOP), 0);
  std::ofstream(dir_ / "go") << "";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (show(id)["state"] != "STAGING_OUT" && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(show(id)["state"], "STAGING_OUT");
  ASSERT_EQ(::kill(daemon("loomd", "--name " + node + " "), SIGTERM), 0);
  LocalCluster::wait_for(cluster_->state_dir() / "state" / fmt::format("loomd-{}.log", node),
                         "signal 15: leaving");
  ASSERT_EQ(::kill(storage, SIGCONT), 0);
  cluster_->wait_log(fmt::format("loomd {} exited with status 0; restarting it", node));
  const nlohmann::json job = finish(id);
  EXPECT_EQ(job["state"], "COMPLETED") << job.dump();
  EXPECT_EQ(contents(export_ / "results" / "out.bin"), contents(dir_ / "kept.bin"));
  EXPECT_EQ(slices_left(), std::vector<std::string>{});
}

// A storage agent killed (SIGKILL) while it writes a job's file out leaves the file's
// temporary name in the export; its next start removes it, as the file's writer. The job
// fails naming its stage-out, and nothing of it is left in the export.
TEST_F(BurstBufferTest, AStorageAgentKilledMidStageOutLeavesNoTemporaryFileOnceRestarted) {
  const fs::path results = export_ / "results";
  const UniqueFd watch(::inotify_init1(IN_CLOEXEC));
  ASSERT_GE(::inotify_add_watch(watch.get(), results.c_str(), IN_CREATE), 0);
  const std::uint64_t id =
      submit({"submit", "--bb", "160M", "--stage-out", "out.bin:storage:/results/", "--", "/bin/sh",
              "-c", "head -c 134217728 /dev/zero > \"$LOOM_BB_DIR/out.bin\""});
  // The moment the storage agent makes the temporary file: 128 MiB are still to come.
  std::string temp;
  std::array<char, 4096> events{};
  pollfd ready{watch.get(), POLLIN, 0};
  while (temp.empty() && ::poll(&ready, 1, 60'000) == 1) {
    const ssize_t n = ::read(watch.get(), events.data(), events.size());
    for (ssize_t at = 0; at < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(events.data() + at);
      if (event->len > 0 && std::string_view(event->name).starts_with(".out.bin.loom-storage-"))
        temp = event->name;
      at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
    }
  }
  ASSERT_FALSE(temp.empty()) << "the storage agent never began writing out.bin";
  ASSERT_EQ(::kill(daemon("loomd", "--export"), SIGKILL), 0);
  EXPECT_TRUE(fs::exists(results / temp)) << "the copy ended before the kill: nothing tested";

  cluster_->wait_log("loomd storage was killed by signal 9; restarting it");
  LocalCluster::wait_for(cluster_->state_dir() / "state" / "loomd-storage.log",
                         "removed 1 temporary file(s)");
  EXPECT_FALSE(fs::exists(results / temp));
  const nlohmann::json job = finish(id);
  EXPECT_EQ(job["state"], "FAILED") << job.dump();
  EXPECT_EQ(job["reason_code"], "STAGE_OUT_FAILED") << job.dump();
  std::vector<std::string> left;
  for (const fs::directory_entry& e : fs::directory_iterator(results))
    left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{});
  EXPECT_EQ(slices_left(), std::vector<std::string>{});
}

TEST_F(BurstBufferTest, StagingFailuresNameTheFileAndLeaveNothing) {
  // Refused at submit: outside the export, or no slice to stage into.
  Completed outside =
      alice({"submit", "--bb", "8M", "--stage-in", "storage:/../etc/passwd", "--", "true"});
  EXPECT_NE(outside.exit_code, 0);
  EXPECT_NE(outside.err.find("--stage-in"), std::string::npos) << outside.err;
  Completed no_bb = alice({"submit", "--stage-in", "storage:/one.bin", "--", "true"});
  EXPECT_NE(no_bb.exit_code, 0);
  EXPECT_NE(no_bb.err.find("--bb"), std::string::npos) << no_bb.err;

  // A missing file: the job fails before it runs, naming it.
  const std::uint64_t missing =
      submit({"submit", "--bb", "8M", "--stage-in", "storage:/missing.bin", "--", "touch", "ran"});
  nlohmann::json job = finish(missing);
  EXPECT_EQ(job["state"], "FAILED");
  EXPECT_EQ(job["reason_code"], "STAGE_IN_FAILED");
  EXPECT_NE(job["reason"].get<std::string>().find("StageInFailed: storage:/missing.bin"),
            std::string::npos)
      << job.dump();
  EXPECT_NE(job["reason"].get<std::string>().find("does not exist"), std::string::npos)
      << job.dump();
  EXPECT_FALSE(fs::exists(dir_ / "ran"));

  // A file larger than the slice.
  write_random(export_ / "big.bin", 24 << 20);
  const std::uint64_t full =
      submit({"submit", "--bb", "8M", "--stage-in", "storage:/big.bin", "--", "touch", "ran"});
  job = finish(full);
  EXPECT_EQ(job["state"], "FAILED");
  EXPECT_NE(job["reason"].get<std::string>().find("No space left"), std::string::npos)
      << job.dump();

  // A job that turns its output into a link to a file it may not read gets nothing out.
  const std::uint64_t link =
      submit({"submit", "--bb", "8M", "--stage-out", "out.h5:storage:/results/", "--", "/bin/sh",
              "-c", "ln -s /etc/shadow \"$LOOM_BB_DIR/out.h5\""});
  job = finish(link);
  EXPECT_EQ(job["state"], "FAILED");
  EXPECT_EQ(job["reason_code"], "STAGE_OUT_FAILED");
  EXPECT_NE(job["reason"].get<std::string>().find("StageOutFailed: out.h5"), std::string::npos)
      << job.dump();
  EXPECT_NE(job["reason"].get<std::string>().find("symbolic link"), std::string::npos)
      << job.dump();
  EXPECT_EQ(job["exit_code"], 0) << "the ranks' own status: they ran, and exited 0";
  EXPECT_FALSE(fs::exists(export_ / "results" / "out.h5"));
  // Nothing partial anywhere: no temporary names in the export, no slice on any device.
  std::vector<std::string> exported;
  for (const auto& e : fs::recursive_directory_iterator(export_))
    exported.push_back(e.path().filename().string());
  std::ranges::sort(exported);
  EXPECT_EQ(exported, (std::vector<std::string>{"big.bin", "results"}));
  EXPECT_EQ(slices_left(), std::vector<std::string>{});
}

TEST_F(BurstBufferTest, APersistentBufferOutlivesJobsAndRestartsUntilDestroyed) {
  auto nvme_free = [&](const std::string& node) {
    const nlohmann::json nodes = nlohmann::json::parse(alice({"nodes", "--json"}).out);
    for (const nlohmann::json& n : nodes["nodes"]) {
      if (n["name"] == node) return n["nvme"][0]["bytes_free"].get<std::uint64_t>();
    }
    return std::uint64_t{0};
  };
  const Completed created = alice({"bb", "create", "scratch", "--size", "32M", "--node", "node1"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::uint64_t free_before = nvme_free("node0");
  EXPECT_EQ(nvme_free("node0") - nvme_free("node1"), std::uint64_t{32} << 20)
      << "its bytes are taken from node1's device";
  nlohmann::json listed = nlohmann::json::parse(alice({"bb", "list", "--json"}).out)["buffers"];
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["name"], "scratch");
  EXPECT_EQ(listed[0]["owner"], "loom-alice");
  EXPECT_EQ(listed[0]["node"], "node1");
  EXPECT_EQ(listed[0]["bytes"], 32 << 20);
  EXPECT_EQ(listed[0]["used_by"], nlohmann::json::array());

  // A job writes in it; it runs on the buffer's node.
  const std::uint64_t writer = submit({"submit", "--bb-persistent", "scratch", "--", "/bin/sh",
                                       "-c", "echo kept > \"$LOOM_BB_PERSISTENT_DIR/data\""});
  nlohmann::json job = finish(writer);
  EXPECT_EQ(job["state"], "COMPLETED") << job.dump();
  EXPECT_EQ(job["placement"][0]["node"], "node1");
  // The controller and the buffer's agent die; what they come back to still has it.
  ASSERT_EQ(::kill(daemon("loomctld"), SIGKILL), 0);
  cluster_->wait_log("loomctld was killed by signal 9; restarting it");
  ASSERT_EQ(::kill(daemon("loomd", "--name node1 "), SIGKILL), 0);
  cluster_->wait_log("loomd node1 was killed by signal 9; restarting it");
  const std::uint64_t reader =
      submit({"submit", "--bb-persistent", "scratch", "-o", "read-%j", "--", "/bin/sh", "-c",
              "cat \"$LOOM_BB_PERSISTENT_DIR/data\""});
  job = finish(reader);
  EXPECT_EQ(job["state"], "COMPLETED") << job.dump();
  EXPECT_EQ(read("read-" + std::to_string(reader)), "kept\n");

  // Another user can neither use nor destroy it, nor see it.
  const Completed bob = cluster_->loom(
      "loom-bob", {"submit", "--bb-persistent", "scratch", "--", "true"}, dir_.string());
  EXPECT_NE(bob.exit_code, 0);
  EXPECT_NE(bob.err.find("--bb-persistent scratch"), std::string::npos) << bob.err;
  EXPECT_NE(cluster_->loom("loom-bob", {"bb", "destroy", "scratch"}, dir_.string()).exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(
                cluster_->loom("loom-bob", {"bb", "list", "--json"}, dir_.string()).out)["buffers"]
                .size(),
            0u);

  const Completed destroyed = alice({"bb", "destroy", "scratch"});
  ASSERT_EQ(destroyed.exit_code, 0) << destroyed.err;
  EXPECT_EQ(nlohmann::json::parse(alice({"bb", "list", "--json"}).out)["buffers"].size(), 0u);
  EXPECT_EQ(nvme_free("node1"), free_before) << "its bytes are given back";
  const Completed gone = alice({"submit", "--bb-persistent", "scratch", "--", "true"});
  EXPECT_NE(gone.exit_code, 0);
}

TEST_F(BurstBufferTest, AJobGetsOnlyTheHdf5DatasetsItAskedFor) {
  const fs::path cdl = dir_ / "in.cdl";
  std::ofstream(cdl)
      << "netcdf in {\n"
         "dimensions: x = 4 ;\n"
         "group: fields {\n"
         "  variables: float temperature(x) ; float pressure(x) ; float humidity(x) ;\n"
         "  data: temperature = 1, 2, 3, 4 ; pressure = 5, 6, 7, 8 ; humidity = 9, 9, 9, 9 ;\n"
         "}\n"
         "}\n";
  const Completed made =
      run({"ncgen", "-k", "nc4", "-o", (export_ / "in.h5").string(), cdl.string()});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::uint64_t id = submit(
      {"submit", "--bb", "16M", "--stage-in", "storage:/in.h5:/fields/temperature,/fields/pressure",
       "--stage-out", "in.h5:storage:/results/", "-o", "out-%j", "--", "/bin/sh", "-c",
       "h5ls -r \"$LOOM_BB_DIR/in.h5\" | cut -d' ' -f1"});
  const nlohmann::json job = finish(id);
  ASSERT_EQ(job["state"], "COMPLETED") << job.dump();
  EXPECT_EQ(read("out-" + std::to_string(id)),
            "/\n/fields\n/fields/pressure\n/fields/temperature\n");
  const nlohmann::json staged = show(id)["staging"][0];
  EXPECT_EQ(staged["source"], "storage:/in.h5:/fields/temperature,/fields/pressure");
  ASSERT_FALSE(staged["notes"].empty()) << staged.dump();
  EXPECT_NE(staged["notes"][0].get<std::string>().find("DIMENSION_LIST"), std::string::npos)
      << staged.dump();
  // What came back out has each dataset's data as it was (only the dimension scales' links are not
  // carried).
  for (const char* object : {"/fields/temperature", "/fields/pressure"}) {
    const Completed diff = run({"h5diff", "-v", (export_ / "in.h5").string(),
                                (export_ / "results" / "in.h5").string(), object, object});
    EXPECT_NE(diff.out.find("dataset: <" + std::string(object) + "> and <" + object +
                            ">\n0 differences found"),
              std::string::npos)
        << diff.out;
  }
  // loom stage takes datasets too, its skeleton placed by loom-h5skeleton as the user.
  const Completed staged_here =
      alice({"stage", "storage:/in.h5:/fields/pressure", (dir_ / "pressure.h5").string()});
  ASSERT_EQ(staged_here.exit_code, 0) << staged_here.err;
  const Completed here =
      run({"h5diff", "-v", (export_ / "in.h5").string(), (dir_ / "pressure.h5").string(),
           "/fields/pressure", "/fields/pressure"});
  EXPECT_NE(
      here.out.find("dataset: </fields/pressure> and </fields/pressure>\n0 differences found"),
      std::string::npos)
      << here.out << here.err;
  // Users' HDF5 files are parsed by loom-h5skeleton alone: no agent has HDF5 loaded.
  const std::vector<std::string> agents =
      lines(run({"pgrep", "-x", "-P", std::to_string(cluster_->pid()), "loomd"}).out);
  ASSERT_FALSE(agents.empty());
  for (const std::string& pid : agents) {
    std::ifstream maps("/proc/" + pid + "/maps");
    const std::string mapped((std::istreambuf_iterator<char>(maps)),
                             std::istreambuf_iterator<char>());
    EXPECT_EQ(mapped.find("libhdf5"), std::string::npos) << "loomd " << pid;
  }
}

TEST_F(BurstBufferTest, LoomStageCopiesAsTheUserBothWays) {
  write_random(export_ / "data.bin", (3 << 20) + 7);
  const Completed in = alice({"stage", "storage:/data.bin", (dir_ / "here.bin").string()});
  ASSERT_EQ(in.exit_code, 0) << in.err;
  EXPECT_NE(in.out.find("staged storage:/data.bin -> "), std::string::npos) << in.out;
  EXPECT_EQ(contents(dir_ / "here.bin"), contents(export_ / "data.bin"));
  const Completed out =
      alice({"stage", "--json", (dir_ / "here.bin").string(), "storage:/results/"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  const nlohmann::json summary = nlohmann::json::parse(out.out);
  EXPECT_EQ(summary["bytes"], (3 << 20) + 7);
  EXPECT_EQ(summary["dest"], "storage:/results/here.bin");
  EXPECT_EQ(contents(export_ / "results" / "here.bin"), contents(export_ / "data.bin"));
  // As the user: where alice may not write, nothing is written.
  const Completed refused = alice({"stage", (dir_ / "here.bin").string(), "storage:/here.bin"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("Permission denied"), std::string::npos) << refused.err;
  EXPECT_FALSE(fs::exists(export_ / "here.bin"));
  const Completed neither = alice({"stage", "a", "b"});
  EXPECT_NE(neither.exit_code, 0);
  EXPECT_NE(neither.err.find("NODE:/path"), std::string::npos) << neither.err;
}

// A storage agent that stops answering (SIGSTOP: hung, or its host gone) costs a staging
// staging.stall_timeout, not the job's walltime: the job fails naming the file and why, and
// once the agent answers again it stages as before.
class StallTest : public BurstBufferTest {
 protected:
  std::string config() const override {
    return "[controller]\nkill_grace = \"2s\"\n[staging]\nstall_timeout = \"2s\"\n";
  }
};

TEST_F(StallTest, AStorageAgentThatStopsAnsweringFailsTheStagingNamingTheFile) {
  write_random(export_ / "data.bin", (2 << 20) + 5);
  const pid_t storage = daemon("loomd", "--export");
  ASSERT_EQ(::kill(storage, SIGSTOP), 0);
  const std::uint64_t stalled = submit({"submit", "-t", "1:00:00", "--bb", "16M", "--stage-in",
                                        "storage:/data.bin", "--", "/bin/true"});
  const nlohmann::json failed = finish(stalled);
  ASSERT_EQ(::kill(storage, SIGCONT), 0);
  EXPECT_EQ(failed["state"], "FAILED") << failed.dump();
  EXPECT_EQ(failed["reason_code"], "STAGE_IN_FAILED") << failed.dump();
  const std::string reason = failed["reason"];
  EXPECT_NE(reason.find("/data.bin"), std::string::npos) << reason;
  EXPECT_NE(reason.find("did not answer within staging.stall_timeout"), std::string::npos)
      << reason;
  EXPECT_EQ(slices_left(), std::vector<std::string>{});

  const std::uint64_t served =
      submit({"submit", "--bb", "16M", "--stage-in", "storage:/data.bin", "--", "/bin/true"});
  const nlohmann::json job = finish(served);
  EXPECT_EQ(job["state"], "COMPLETED") << job.dump();
  const nlohmann::json shown = show(served);
  ASSERT_EQ(shown["staging"].size(), 1u) << shown.dump();
  EXPECT_EQ(shown["staging"][0]["state"], "done") << shown.dump();
  EXPECT_EQ(shown["staging"][0]["bytes_done"], (2 << 20) + 5) << shown.dump();
}

}  // namespace
}  // namespace loom::testing
