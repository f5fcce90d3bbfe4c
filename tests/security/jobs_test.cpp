// Attacks of issue 19 end to end, as a user's jobs make them: a job on a node that has just
// staged (its agent's libfabric endpoint open) lists its own descriptors, and finds none of
// loomd's; a job that leaves a FIFO to be staged out does not hold the node's stager; a
// job's name reaches an admin's terminal with its control characters escaped; what Loom
// writes for a job has the modes its submitter's umask gives; two users' burst buffers of
// one name are two.
#include <fmt/ranges.h>
#include <sys/stat.h>

#include <regex>
#include <set>

#include "cluster_test.hpp"

namespace loom::testing {
namespace {

class JobAttacksTest : public ClusterTest {
 protected:
  std::string config() const override { return "[controller]\nkill_grace = \"2s\"\n"; }
  static std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
};

TEST_F(JobAttacksTest, AJobAfterAStagingOnItsNodeHoldsOnlyItsOwnDescriptors) {
  const std::filesystem::path storage = storage_with_results();
  std::ofstream(storage / "in.bin") << "input";
  // `; true`: sh forks ls, so the listing is the shell's own, as the agent started it.
  const std::uint64_t id = submit({"submit", "--bb", "8M", "--stage-in", "storage:/in.bin", "-o",
                                   "fds-%j", "--", "/bin/sh", "-c", "ls -l /proc/$$/fd; true"});
  const nlohmann::json job = finish(std::to_string(id));
  ASSERT_EQ(job["state"], "COMPLETED") << job.dump();
  const std::string listing = read("fds-" + std::to_string(id));
  std::set<int> fds;
  const std::regex line(R"((\d+) -> )");
  for (auto it = std::sregex_iterator(listing.begin(), listing.end(), line);
       it != std::sregex_iterator(); ++it) {
    fds.insert(std::stoi((*it)[1]));
  }
  EXPECT_EQ(fds, (std::set<int>{0, 1, 2})) << listing;
}

TEST_F(JobAttacksTest, AFifoLeftForStageOutFailsThatJobAloneAndTheNodeStagesOn) {
  const std::filesystem::path storage = storage_with_results();
  const std::uint64_t fifo =
      submit({"submit", "--bb", "8M", "--stage-out", "out.bin:storage:/results/", "--", "/bin/sh",
              "-c", "mkfifo \"$LOOM_BB_DIR/out.bin\""});
  nlohmann::json job = finish(fifo);
  EXPECT_EQ(job["state"], "FAILED") << job.dump();
  EXPECT_NE(job["reason"].get<std::string>().find("StageOutFailed: out.bin"), std::string::npos)
      << job.dump();
  EXPECT_NE(job["reason"].get<std::string>().find("not a regular file"), std::string::npos)
      << job.dump();
  const std::uint64_t next =
      submit({"submit", "--bb", "8M", "--stage-out", "out.bin:storage:/results/", "--", "/bin/sh",
              "-c", "echo fine > \"$LOOM_BB_DIR/out.bin\""});
  job = finish(next);
  EXPECT_EQ(job["state"], "COMPLETED") << job.dump();
  EXPECT_EQ(read_file(storage / "results" / "out.bin"), "fine\n");
}

TEST_F(JobAttacksTest, AJobsNameCannotDriveAnAdminsTerminal) {
  const std::string name = "\x1b]0;owned\x07job\nFAKE 99 loom-bob COMPLETED";
  const std::uint64_t id = submit({"submit", "-J", name, "--", "true"});
  finish(id);
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"queue", "--all"}, {"show", std::to_string(id)}}) {
    const Completed shown = cluster_->loom("", command);
    ASSERT_EQ(shown.exit_code, 0) << shown.err;
    EXPECT_EQ(shown.out.find('\x1b'), std::string::npos) << shown.out;
    EXPECT_EQ(shown.out.find('\x07'), std::string::npos) << shown.out;
    EXPECT_EQ(shown.out.find("\nFAKE"), std::string::npos) << "a forged line:\n" << shown.out;
  }
  const Completed show = cluster_->loom("", {"show", std::to_string(id)});
  EXPECT_NE(show.out.find("\\x1b]0;owned\\x07job\\nFAKE"), std::string::npos) << show.out;
}

// Files Loom made for a user were 0644 whatever their umask: a 0600 input came back
// readable by everybody (issue 19).
TEST_F(JobAttacksTest, FilesLoomWritesForAUserHonourTheirUmask) {
  const std::filesystem::path storage = storage_with_results();
  std::ofstream(dir_ / "job.sh") << "#!/bin/sh\n#LOOM --bb 8M\n"
                                    "#LOOM --stage-out out.bin:storage:/results/\n"
                                    "#LOOM -o private-%j\n"
                                    "echo secret\necho data > \"$LOOM_BB_DIR/out.bin\"\n";
  auto mode = [](const std::filesystem::path& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  };
  for (const auto& [umask, expected] : {std::pair{"077", 0600u}, std::pair{"027", 0640u}}) {
    SCOPED_TRACE(umask);
    std::filesystem::remove(storage / "results" / "out.bin");
    const Completed submitted =
        run({"runuser", "-u", "loom-alice", "--", "sh", "-c",
             fmt::format("umask {} && cd '{}' && exec env {} '{}' submit job.sh", umask,
                         dir_.string(), fmt::join(cluster_->exports(), " "), built("cli/loom"))});
    ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
    const std::string id = lines(submitted.out).at(0);
    const nlohmann::json job = finish(id);
    ASSERT_EQ(job["state"], "COMPLETED") << job.dump();
    EXPECT_EQ(read("private-" + id), "secret\n");
    EXPECT_EQ(mode(dir_ / ("private-" + id)), expected) << "the job's output";
    EXPECT_EQ(mode(storage / "results" / "out.bin"), expected) << "the staged-out file";
    std::filesystem::remove(storage / "results" / "up.txt");
    const Completed staged =
        run({"runuser", "-u", "loom-alice", "--", "sh", "-c",
             fmt::format("umask {} && cd '{}' && exec env {} '{}' stage job.sh "
                         "storage:/results/up.txt",
                         umask, dir_.string(), fmt::join(cluster_->exports(), " "),
                         built("cli/loom"))});
    ASSERT_EQ(staged.exit_code, 0) << staged.err;
    EXPECT_EQ(mode(storage / "results" / "up.txt"), expected) << "a loom stage upload";
  }
}

// root's `loom queue --all` failed with "Received message larger than max" once an array
// had made the listing larger than gRPC's 4 MiB (issue 19): listings come a page at a time.
TEST_F(JobAttacksTest, AListingLargerThanOneMessageComesWholeAPageAtATime) {
  const std::uint64_t blocker =
      submit({"submit", "--", "/bin/sh", "-c", "while [ ! -e release ]; do sleep 0.05; done"});
  // 40,000 records of over 170 bytes each (a 128-byte name): more than 6 MiB in one reply.
  constexpr unsigned kArray = 40'000;
  const std::uint64_t array =
      submit({"submit", "-a", fmt::format("1-{}", kArray), "-J", std::string(128, 'n'), "-d",
              fmt::format("afterok:{}", blocker), "--", "true"});
  const Completed listed = cluster_->loom("", {"queue", "--all", "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const nlohmann::json jobs = nlohmann::json::parse(listed.out)["jobs"];
  ASSERT_EQ(jobs.size(), kArray + 1);
  std::set<std::uint64_t> ids;
  for (const nlohmann::json& j : jobs) ids.insert(j["id"].get<std::uint64_t>());
  EXPECT_EQ(ids.size(), kArray + 1u) << "each job once";
  EXPECT_EQ(jobs.back()["array_index"], kArray);
  ASSERT_EQ(alice({"cancel", std::to_string(array)}).exit_code, 0);
  std::ofstream(dir_ / "release") << "";
  EXPECT_EQ(finish(blocker)["state"], "COMPLETED");
}

// loom-bob once learned that loom-alice held a buffer of a name, and his pending job bound
// to the buffer she made later under the name he had used. Each user names their own: both
// hold a `scratch` on one device, each job sees its user's, and an admin names the owner.
TEST_F(JobAttacksTest, TwoUsersBuffersOfOneNameAreEachTheirOwn) {
  auto as = [&](const std::string& user, const std::vector<std::string>& args) {
    return cluster_->loom(user, args, dir_.string());
  };
  for (const std::string user : {"loom-bob", "loom-alice"}) {
    const Completed made = as(user, {"bb", "create", "scratch", "--size", "8M", "--node", "node0"});
    ASSERT_EQ(made.exit_code, 0) << user << ": " << made.err;
  }
  // Each job writes its user's name in the buffer and says where it is.
  auto use = [&](const std::string& user) {
    const Completed submitted =
        as(user, {"submit", "--bb-persistent", "scratch", "-o", user + "-%j", "--", "/bin/sh", "-c",
                  "cat \"$LOOM_BB_PERSISTENT_DIR/who\" 2>/dev/null; echo $(id -un) >> "
                  "\"$LOOM_BB_PERSISTENT_DIR/who\"; echo \"$LOOM_BB_PERSISTENT_DIR\""});
    EXPECT_EQ(submitted.exit_code, 0) << submitted.err;
    const std::string id = submitted.out.substr(0, submitted.out.find('\n'));
    EXPECT_EQ(as(user, {"watch", id}).exit_code, 0);
    return read_file(dir_ / (user + "-" + id));
  };
  const std::string bobs = use("loom-bob");
  const std::string alices = use("loom-alice");
  EXPECT_EQ(lines(bobs).size(), 1u) << "an empty buffer: " << bobs;
  EXPECT_EQ(lines(alices).size(), 1u) << "an empty buffer, not loom-bob's: " << alices;
  EXPECT_NE(bobs, alices);
  for (const std::string user : {"loom-bob", "loom-alice"}) {
    const nlohmann::json listed =
        nlohmann::json::parse(as(user, {"bb", "list", "--json"}).out)["buffers"];
    ASSERT_EQ(listed.size(), 1u) << listed.dump();
    EXPECT_EQ(listed[0]["owner"], user);
  }
  const Completed unnamed = as("", {"bb", "destroy", "scratch"});
  EXPECT_NE(unnamed.exit_code, 0);
  EXPECT_NE(unnamed.err.find("(held by: --user loom-alice --user loom-bob)"), std::string::npos)
      << unnamed.err;
  const Completed destroyed = as("", {"bb", "destroy", "scratch", "--user", "loom-bob"});
  ASSERT_EQ(destroyed.exit_code, 0) << destroyed.err;
  EXPECT_EQ(use("loom-alice"), "loom-alice\n" + alices) << "hers is whole";
  EXPECT_NE(as("loom-bob", {"submit", "--bb-persistent", "scratch", "--", "true"}).exit_code, 0);
  EXPECT_EQ(as("loom-alice", {"bb", "destroy", "scratch"}).exit_code, 0);
}

// An agent run by a user is refused when it registers; before that it makes nothing: a
// /dev/shm base of loom-bob's, made by his own loomd, would have stopped root's agents.
TEST_F(JobAttacksTest, AnAgentRunByAUserMakesNoSharedMemoryBase) {
  const std::filesystem::path shm = temp_path("rogue-shm");
  std::filesystem::create_directories(shm);
  std::filesystem::permissions(
      shm, std::filesystem::perms::all | std::filesystem::perms::sticky_bit);  // as /dev/shm is
  std::vector<std::string> argv{"runuser", "-u", "loom-bob", "--", "env"};
  for (const std::string& e : cluster_->stolen_tls("node0", "loom-bob")) argv.push_back(e);
  argv.insert(argv.end(), {built("agent/loomd"), "--controller", cluster_->address(), "--name",
                           "rogue", "--synthetic", "pack:1 core:4 pu:1", "--shm-dir",
                           (shm / "loom").string(), "--state-dir", (shm / "state").string()});
  const Completed rogue = run(argv);
  EXPECT_NE(rogue.exit_code, 0);
  EXPECT_NE(rogue.err.find("an agent must run as root; loom-bob"), std::string::npos) << rogue.err;
  EXPECT_FALSE(std::filesystem::exists(shm / "loom")) << rogue.err;
  std::filesystem::remove_all(shm);
}

}  // namespace
}  // namespace loom::testing
