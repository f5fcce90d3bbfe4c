// loom-pmix as the agent drives it, without the agent: the namespace sent on its channel,
// each rank's environment back, then real Open MPI ranks (mpi_app) started with it, whose
// MPI_Allreduce, PMIx_Finalize and MPI_Abort the server serves and reports.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "loom/common/exec_args.hpp"
#include "loom/common/task_channel.hpp"
#include "loom/common/unique_fd.hpp"
#include "loom/launch/pmix_channel.hpp"
#include "loom/proto/pmix.pb.h"
#include "run.hpp"
#include "temp.hpp"

namespace loom {
namespace {

using std::chrono::seconds;

extern "C" char** environ;

// Starts argv with `environment` added to this process's, its output into `output`; with
// `channel`, that descriptor as the program's kTaskChannelFd.
pid_t spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& added,
            const std::string& output, int channel = -1) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    if (!added.contains(entry.substr(0, entry.find('=')))) env.push_back(entry);
  }
  for (const auto& [name, value] : added) env.push_back(name + "=" + value);
  const std::vector<char*> args = exec_args(argv), envp = exec_args(env);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(out, 1);
    ::dup2(out, 2);
    if (channel == kTaskChannelFd) {
      ::fcntl(channel, F_SETFD, 0);  // dup2 onto itself would leave it close-on-exec
    } else if (channel >= 0) {
      ::dup2(channel, kTaskChannelFd);
    }
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class PmixServerTest : public ::testing::Test {
 protected:
  static constexpr unsigned kRanks = 4;

  void SetUp() override {
    std::array<int, 2> pair{};
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair.data()), 0);
    agent_.reset(pair[0]);
    const UniqueFd server_end(pair[1]);
    dir_ = testing::temp_path("job");
    std::filesystem::create_directories(dir_);
    server_ = spawn({testing::built("mpi_launcher/loom-pmix")}, {}, dir_ + "/server.log",
                    server_end.get());
    v1::PmixJob job;
    job.set_nspace("loom.test." + std::to_string(::getpid()));
    v1::PmixNode* node = job.add_nodes();
    node->set_name("n0");
    node->set_ranks(kRanks);
    job.set_tmpdir(dir_ + "/pmix");
    for (unsigned r = 0; r < kRanks; ++r) job.add_local()->set_rank(r);
    ASSERT_TRUE(launch::write_message(agent_.get(), job));
  }
  void TearDown() override {
    if (server_ > 0) {
      ::kill(server_, SIGTERM);
      EXPECT_EQ(wait_for(server_), 0) << slurp(dir_ + "/server.log");
    }
  }

  // Each rank's environment, as the server answers the namespace.
  std::map<unsigned, std::map<std::string, std::string>> ready() {
    v1::FromPmix answer;
    auto read = launch::read_message(agent_.get(), answer, seconds(30));
    EXPECT_TRUE(read) << read.error().to_string() << "\n" << slurp(dir_ + "/server.log");
    EXPECT_TRUE(answer.has_ready()) << answer.DebugString();
    std::map<unsigned, std::map<std::string, std::string>> out;
    for (const auto& r : answer.ready().ranks()) {
      out[r.rank()] = {r.environment().begin(), r.environment().end()};
      out[r.rank()]["OMPI_MCA_schizo"] = "^orte";  // as the launch plan gives every rank
      // Open MPI's own allocations outlive MPI_Finalize: under the asan preset the ranks
      // (built with it) would exit 134 on them. The server is checked, not Open MPI.
      out[r.rank()]["LSAN_OPTIONS"] = "detect_leaks=0";
    }
    return out;
  }

  // Starts mpi_app's ranks with their environments and waits for them: their exit codes.
  std::vector<int> run_ranks(const std::vector<std::string>& arguments) {
    std::vector<pid_t> ranks;
    auto environments = ready();
    for (unsigned r = 0; r < kRanks; ++r) {
      std::vector<std::string> argv{testing::built("tests/mpi/mpi_app")};
      argv.insert(argv.end(), arguments.begin(), arguments.end());
      ranks.push_back(spawn(argv, environments[r], rank_output(r)));
    }
    std::vector<int> codes;
    for (pid_t pid : ranks) codes.push_back(wait_for(pid));
    return codes;
  }

  std::string rank_output(unsigned r) const { return dir_ + "/rank" + std::to_string(r); }

  UniqueFd agent_;
  pid_t server_ = -1;
  std::string dir_;
};

TEST_F(PmixServerTest, EachRanksEnvironmentNamesItsNamespaceRankAndMunge) {
  const auto environments = ready();
  ASSERT_EQ(environments.size(), kRanks);
  for (const auto& [rank, environment] : environments) {
    ASSERT_TRUE(environment.contains("PMIX_RANK") && environment.contains("PMIX_NAMESPACE") &&
                environment.contains("PMIX_SECURITY_MODE"));
    EXPECT_EQ(environment.at("PMIX_RANK"), std::to_string(rank));
    EXPECT_EQ(environment.at("PMIX_NAMESPACE"), "loom.test." + std::to_string(::getpid()));
    EXPECT_EQ(environment.at("PMIX_SECURITY_MODE"), "munge");
  }
}

TEST_F(PmixServerTest, OpenMpiRanksStartedWithItsEnvironmentAllreduceAndFinalize) {
  const std::vector<int> codes = run_ranks({});
  for (unsigned r = 0; r < kRanks; ++r) {
    EXPECT_EQ(codes[r], 0) << slurp(rank_output(r));
    EXPECT_NE(slurp(rank_output(r)).find("rank=" + std::to_string(r) + " size=4 sum=6"),
              std::string::npos)
        << slurp(rank_output(r));
  }
  std::set<unsigned> connected, finalized;
  while (finalized.size() < kRanks) {
    v1::FromPmix event;
    ASSERT_TRUE(launch::read_message(agent_.get(), event, seconds(10)));
    if (event.has_connected()) {
      connected.insert(event.connected().rank());
      continue;
    }
    ASSERT_TRUE(event.has_finalized()) << event.DebugString();
    EXPECT_TRUE(connected.contains(event.finalized().rank())) << "finalized before it connected";
    finalized.insert(event.finalized().rank());
  }
  EXPECT_EQ(connected, (std::set<unsigned>{0, 1, 2, 3}));
  EXPECT_EQ(finalized, (std::set<unsigned>{0, 1, 2, 3}));
}

TEST_F(PmixServerTest, ARanksMpiAbortIsReportedWithItsStatus) {
  std::vector<pid_t> ranks;
  auto environments = ready();
  for (unsigned r = 0; r < kRanks; ++r) {
    ranks.push_back(spawn({testing::built("tests/mpi/mpi_app"), "abort", "2"}, environments[r],
                          rank_output(r)));
  }
  v1::FromPmix event;
  do {
    ASSERT_TRUE(launch::read_message(agent_.get(), event, seconds(30)));
  } while (event.has_finalized() || event.has_connected());
  ASSERT_TRUE(event.has_abort()) << event.DebugString();
  EXPECT_EQ(event.abort().rank(), 2U);
  EXPECT_EQ(event.abort().status(), 7);
  // The agent's part: the job's processes are killed, the aborting rank's wait included.
  for (pid_t pid : ranks) ::kill(pid, SIGKILL);
  for (pid_t pid : ranks) wait_for(pid);
}

TEST_F(PmixServerTest, GarbageOnTheChannelAfterTheNamespaceIsIgnoredAndTheServerStopsOnSigterm) {
  ASSERT_EQ(ready().size(), kRanks);
  ASSERT_EQ(::write(agent_.get(), "\xff\xff\xff\xff garbage", 12), 12);
  agent_.reset();  // an agent that restarts: the server serves on, until SIGTERM
  ::kill(server_, SIGTERM);
  EXPECT_EQ(wait_for(server_), 0) << slurp(dir_ + "/server.log");
  server_ = -1;
}

}  // namespace
}  // namespace loom
