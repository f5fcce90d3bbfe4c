// MPI jobs end to end: `loom submit --mpi` on `loom up`, a real Open MPI program
// (tests/mpi/mpi_app) whose ranks report what the kernel applied to them.
#include <pwd.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <regex>

#include "cluster_test.hpp"
#include "run.hpp"

namespace loom::testing {
namespace {

class MpiJob : public ClusterTest {
 protected:
  std::string config() const override { return "[controller]\nkill_grace = \"2s\"\n"; }
  static std::string app() { return built("tests/mpi/mpi_app"); }
};

// "rank=1 size=4 ... cpus=1 mempolicy=bind numa=0 bb=..." as a map.
std::map<std::string, std::string> fields(const std::string& line) {
  std::map<std::string, std::string> out;
  std::istringstream words(line);
  for (std::string word; words >> word;)
    out[word.substr(0, word.find('='))] = word.substr(word.find('=') + 1);
  return out;
}

std::string joined(const nlohmann::json& list) {
  std::string out;
  for (const nlohmann::json& x : list)
    out += (out.empty() ? "" : ",") + std::to_string(x.get<unsigned>());
  return out;
}

TEST_F(MpiJob, EveryRankRunsWhereItWasPlacedAndTheWorldIsWhole) {
  const std::uint64_t id =
      submit({"submit", "--mpi", "-n", "4", "-c", "1", "--bb", "8M", "-o", "mpi-%j", "--", app()});
  const nlohmann::json job = finish(id);
  ASSERT_EQ(job["state"], "COMPLETED") << job.dump() << read("mpi-" + std::to_string(id));
  const std::vector<std::string> ranks = lines(read("mpi-" + std::to_string(id)));
  ASSERT_EQ(ranks.size(), 4u) << read("mpi-" + std::to_string(id));
  std::map<unsigned, nlohmann::json> placed;
  for (const nlohmann::json& p : job["placement"]) placed[p["rank"].get<unsigned>()] = p;
  for (const std::string& line : ranks) {
    std::map<std::string, std::string> r = fields(line);
    const unsigned rank = static_cast<unsigned>(std::stoul(r["rank"]));
    EXPECT_EQ(r["size"], "4") << "one world, not singletons";
    EXPECT_EQ(r["sum"], "6") << "MPI_Allreduce over ranks 0-3";
    ASSERT_TRUE(placed.contains(rank)) << line;
    EXPECT_EQ(r["cpus"], joined(placed[rank]["bound_cpus"])) << line;
    EXPECT_EQ(r["mempolicy"], "bind") << line;
    EXPECT_EQ(r["numa"], joined(placed[rank]["bound_numa"])) << line;
    EXPECT_NE(r["bb"].find("/job_" + std::to_string(id) + "/rank-" + r["rank"]), std::string::npos)
        << line;
  }
}

TEST_F(MpiJob, OutputGoesToAFilePerRankWhenItsNameHasPercentT) {
  const std::uint64_t id =
      submit({"submit", "--mpi", "-n", "4", "-o", "rank-%j-%t.out", "--", app()});
  ASSERT_EQ(finish(id)["state"], "COMPLETED");
  for (unsigned rank = 0; rank < 4; ++rank) {
    const std::vector<std::string> written = lines(read(fmt::format("rank-{}-{}.out", id, rank)));
    ASSERT_EQ(written.size(), 1u) << rank;
    EXPECT_TRUE(written.front().starts_with(fmt::format("rank={} size=4", rank)))
        << written.front();
  }
  // Plain tasks too, one per rank, and %N names the node.
  const std::uint64_t plain =
      submit({"submit", "-n", "2", "-o", "plain-%j-%N-%t.out", "--", "sh", "-c",
              "echo rank $LOOM_RANK of $LOOM_NTASKS on $LOOM_NODELIST cores $LOOM_RANK_CORES"});
  const nlohmann::json job = finish(plain);
  ASSERT_EQ(job["state"], "COMPLETED");
  std::string nodelist;  // the job's nodes in rank order
  for (const nlohmann::json& p : job["placement"]) {
    const std::string node = p["node"].get<std::string>();
    if (nodelist.find(node) == std::string::npos) nodelist += (nodelist.empty() ? "" : ",") + node;
  }
  for (const nlohmann::json& p : job["placement"]) {
    const unsigned rank = p["rank"].get<unsigned>();
    const std::string node = p["node"].get<std::string>();
    EXPECT_EQ(
        read(fmt::format("plain-{}-{}-{}.out", plain, node, rank)),
        fmt::format("rank {} of 2 on {} cores {}\n", rank, nodelist, joined(p["bound_cpus"])));
  }
}

TEST_F(MpiJob, AFailingRankFailsTheJobWithItsCodeAndCancelLeavesNoRank) {
  const std::uint64_t failing =
      submit({"submit", "--mpi", "-n", "2", "--", app(), "1"});  // rank 1 exits 3
  nlohmann::json job = finish(failing);
  EXPECT_EQ(job["state"], "FAILED") << job.dump();
  EXPECT_EQ(job["exit_code"], 3) << job.dump();

  const std::uint64_t id = submit({"submit", "--mpi", "-n", "2", "-o", "long-%j", "--", "sh", "-c",
                                   "echo up; exec sleep 3017"});
  LocalCluster::wait_for(dir_ / ("long-" + std::to_string(id)), "up");
  EXPECT_GE(cluster_->job_processes(id).size(), 3u) << "mpirun and two ranks, in the job's cgroup";
  // Open MPI's session directory is in the job's own directory, the user's alone.
  const std::filesystem::path shm = cluster_->shm_dir(show(id)["placement"][0]["node"], id);
  struct stat st {};
  ASSERT_EQ(::stat(shm.c_str(), &st), 0) << shm;
  EXPECT_EQ(st.st_uid, ::getpwnam("loom-alice")->pw_uid);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_NE(run({"ls", shm.string()}).out.find("ompi."), std::string::npos)
      << run({"ls", "-R", shm.string()}).out;
  ASSERT_EQ(alice({"cancel", std::to_string(id)}).exit_code, 0);
  job = finish(id);
  EXPECT_EQ(job["state"], "CANCELLED");
  EXPECT_EQ(run({"pgrep", "-f", "sleep 3017"}).out, "") << "no rank left";
  EXPECT_EQ(cluster_->job_processes(id), std::vector<pid_t>{})
      << "mpirun and its ranks are gone with the job's cgroup";
  EXPECT_FALSE(std::filesystem::exists(shm)) << "nothing of the killed job's left in /dev/shm";

  // A rank outside an MPI world of the job's size fails the job loudly.
  const std::uint64_t alone =
      submit({"submit", "--mpi", "-n", "2", "-o", "alone-%j", "--", "sh", "-c",
              "OMPI_COMM_WORLD_SIZE=1 " + built("mpi_launcher/loom-rank") + " true"});
  job = finish(alone);
  EXPECT_EQ(job["state"], "FAILED") << job.dump();
  EXPECT_NE(
      read("alone-" + std::to_string(alone)).find("is in an MPI world of 1 ranks; the job has 2"),
      std::string::npos)
      << read("alone-" + std::to_string(alone));

  // Two agents of one machine are not two hosts to Open MPI: the job says so. (Across
  // hosts: tests/e2e/testbed_test.cpp.)
  job = finish(submit({"submit", "--mpi", "-N", "2", "-n", "4", "--", app()}));
  EXPECT_EQ(job["state"], "FAILED") << job.dump();
  EXPECT_NE(job["reason"].get<std::string>().find("node1 does not resolve here ("),
            std::string::npos)
      << job.dump();
  EXPECT_NE(job["reason"].get<std::string>().find(
                "): an MPI job needs every node's name to be its resolvable hostname"),
            std::string::npos)
      << job.dump();
}

}  // namespace
}  // namespace loom::testing
