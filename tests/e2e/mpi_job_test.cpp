// MPI jobs end to end: `loom submit --mpi` on `loom up`, a real Open MPI program
// (tests/mpi/mpi_app) whose ranks report what the kernel applied to them. What any MPI job
// gets is tested in both launch modes (--mpi=pmix and --mpi=mpirun); each mode's own
// behaviour apart.
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

// The same tests in each launch mode: GetParam() is the --mpi option.
class AnyMpiJob : public MpiJob, public ::testing::WithParamInterface<std::string> {
 protected:
  std::string mpi() const { return GetParam(); }
};
INSTANTIATE_TEST_SUITE_P(Modes, AnyMpiJob, ::testing::Values("--mpi=pmix", "--mpi=mpirun"),
                         [](const auto& info) { return info.param.substr(6); });

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

TEST_P(AnyMpiJob, EveryRankRunsWhereItWasPlacedAndTheWorldIsWhole) {
  const std::uint64_t id =
      submit({"submit", mpi(), "-n", "4", "-c", "1", "--bb", "8M", "-o", "mpi-%j", "--", app()});
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

TEST_P(AnyMpiJob, OutputGoesToAFilePerRankWhenItsNameHasPercentT) {
  const std::uint64_t id =
      submit({"submit", mpi(), "-n", "4", "-o", "rank-%j-%t.out", "--", app()});
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

TEST_P(AnyMpiJob, AFailingRankFailsTheJobWithItsCodeAndCancelLeavesNoRank) {
  const std::uint64_t failing =
      submit({"submit", mpi(), "-n", "2", "--", app(), "1"});  // rank 1 exits 3
  nlohmann::json job = finish(failing);
  EXPECT_EQ(job["state"], "FAILED") << job.dump();
  EXPECT_EQ(job["exit_code"], 3) << job.dump();

  const std::uint64_t id = submit({"submit", mpi(), "-n", "2", "-o", "long-%j-%t", "--", "sh", "-c",
                                   "echo up; exec sleep 3017"});
  for (unsigned rank = 0; rank < 2; ++rank)
    LocalCluster::wait_for(dir_ / fmt::format("long-{}-{}", id, rank), "up");
  // mpirun and two ranks; or the job's PMIx server and two ranks.
  EXPECT_GE(cluster_->job_processes(id).size(), 3u) << "in the job's cgroups";
  // Open MPI's session directory is in the job's own directory, the user's alone.
  const std::filesystem::path shm = cluster_->shm_dir(show(id)["placement"][0]["node"], id);
  struct stat st {};
  ASSERT_EQ(::stat(shm.c_str(), &st), 0) << shm;
  EXPECT_EQ(st.st_uid, ::getpwnam("loom-alice")->pw_uid);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_NE(run({"ls", shm.string()}).out.find(mpi() == "--mpi=pmix" ? "pmix." : "ompi."),
            std::string::npos)
      << run({"ls", "-R", shm.string()}).out;
  ASSERT_EQ(alice({"cancel", std::to_string(id)}).exit_code, 0);
  job = finish(id);
  EXPECT_EQ(job["state"], "CANCELLED");
  EXPECT_EQ(run({"pgrep", "-f", "sleep 3017"}).out, "") << "no rank left";
  EXPECT_EQ(cluster_->job_processes(id), std::vector<pid_t>{})
      << "mpirun or the PMIx server, and the ranks, are gone with the job's cgroups";
  EXPECT_FALSE(std::filesystem::exists(shm)) << "nothing of the killed job's left in /dev/shm";
}

TEST_F(MpiJob, UnderMpirunARankOutsideTheJobsWorldFailsAndTwoAgentsOfOneMachineAreRefused) {
  // A rank outside an MPI world of the job's size fails the job loudly.
  const std::uint64_t alone =
      submit({"submit", "--mpi=mpirun", "-n", "2", "-o", "alone-%j", "--", "sh", "-c",
              "OMPI_COMM_WORLD_SIZE=1 " + built("mpi_launcher/loom-rank") + " true"});
  nlohmann::json job = finish(alone);
  EXPECT_EQ(job["state"], "FAILED") << job.dump();
  EXPECT_NE(
      read("alone-" + std::to_string(alone)).find("is in an MPI world of 1 ranks; the job has 2"),
      std::string::npos)
      << read("alone-" + std::to_string(alone));

  // Two agents of one machine are not two hosts to Open MPI: the job says so. (Across
  // hosts: tests/e2e/testbed_test.cpp.)
  job = finish(submit({"submit", "--mpi=mpirun", "-N", "2", "-n", "4", "--", app()}));
  EXPECT_EQ(job["state"], "FAILED") << job.dump();
  EXPECT_NE(job["reason"].get<std::string>().find("node1 does not resolve here ("),
            std::string::npos)
      << job.dump();
  EXPECT_NE(job["reason"].get<std::string>().find(
                "): an MPI job needs every node's name to be its resolvable hostname"),
            std::string::npos)
      << job.dump();
}

TEST_F(MpiJob, UnderPmixARanksAbortFailsTheJobWithItsStatusAndWhoCalledIt) {
  nlohmann::json job =
      finish(submit({"submit", "--mpi=pmix", "-n", "4", "--", app(), "abort", "2"}));
  EXPECT_EQ(job["state"], "FAILED") << job.dump();
  EXPECT_EQ(job["exit_code"], 7) << job.dump();
  EXPECT_NE(
      job["reason"].get<std::string>().find("MpiFailed: rank 2 on node0 called PMIx_Abort(7)"),
      std::string::npos)
      << job.dump();
}

TEST_F(MpiJob, UnderPmixARankThatEndsBeforeFinalizeEndsTheOthers) {
  // Rank 1 leaves after MPI_Init without MPI_Finalize, as a crashed rank would; rank 0
  // waits in a barrier that can never complete, until the job ends it.
  const std::string script = fmt::format(
      "if [ \"$LOOM_RANK\" = 1 ]; then exec {} exit-early; else exec {} barrier-forever; fi", app(),
      app());
  const nlohmann::json job =
      finish(submit({"submit", "--mpi=pmix", "-n", "2", "-t", "5", "--", "sh", "-c", script}));
  EXPECT_EQ(job["state"], "FAILED") << job.dump();
  EXPECT_NE(job["reason"].get<std::string>().find("rank 1 on node0 exited before PMIx_Finalize"),
            std::string::npos)
      << job.dump();
}

TEST_F(MpiJob, UnderPmixAProgramThatIsNotMpiRunsAsPlainTasks) {
  const std::uint64_t id = submit({"submit", "--mpi=pmix", "-n", "2", "-o", "plain-%j-%t", "--",
                                   "sh", "-c", "echo rank $LOOM_RANK ${PMIX_RANK+served}"});
  const nlohmann::json job = finish(id);
  EXPECT_EQ(job["state"], "COMPLETED") << job.dump();
  for (unsigned r = 0; r < 2; ++r)
    EXPECT_EQ(read(fmt::format("plain-{}-{}", id, r)), fmt::format("rank {} served\n", r));
}

TEST_F(MpiJob, AnUnknownMpiModeIsRefusedAtSubmitNamingTheModes) {
  const Completed refused = alice({"submit", "--mpi=hydra", "--", app()});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("--mpi=\"hydra\": takes pmix or mpirun"), std::string::npos)
      << refused.err;
}

}  // namespace
}  // namespace loom::testing
