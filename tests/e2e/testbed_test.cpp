// The end-to-end scenario on a cluster of hosts: `loom up --netns 4` puts four compute hosts
// and a storage host in network namespaces of their own (own hostnames, addresses in
// 198.18.0.0/24, a bridge between them). An MPI job of 16 ranks over the four hosts gets
// NUMA-local slices, has two HDF5 datasets staged in over libfabric tcp;ofi_rxm between the
// namespaces, reads them, and stages out what rank 0 wrote. And loom-rsh, the door through
// which mpirun starts its daemons on the other hosts, opens for nothing else.
#include <grpcpp/grpcpp.h>
#include <pwd.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "cluster_test.hpp"
#include "loom/proto/controller.grpc.pb.h"
#include "run.hpp"

namespace loom::testing {
namespace {

namespace fs = std::filesystem;

class Testbed : public ClusterTest {
 protected:
  std::string config() const override { return "[controller]\nkill_grace = \"2s\"\n"; }
  // 4 hosts of 8 cores in 2 NUMA domains: 4 ranks of 2 cores each per host.
  std::unique_ptr<LocalCluster> make_cluster() const override {
    return std::make_unique<LocalCluster>(4, "pack:1 numa:2 core:4 pu:1", config(),
                                          std::vector<std::string>{"--netns", "4"});
  }
  void SetUp() override {
    ClusterTest::SetUp();
    export_ = storage_with_results();
  }

  // loom-rsh as `user` would run it inside a job (LOOM_JOB_ID set unless job is empty).
  Completed rsh(const std::string& user, const std::string& job,
                const std::vector<std::string>& args) const {
    std::vector<std::string> argv{"runuser", "-u", user, "--", "env"};
    for (const std::string& e : cluster_->exports()) argv.push_back(e);
    if (!job.empty()) argv.push_back("LOOM_JOB_ID=" + job);
    argv.push_back(built("mpi_launcher/loom-rsh"));
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  }

  fs::path export_;
};

std::map<std::string, std::string> fields(const std::string& line) {
  std::map<std::string, std::string> out;
  std::istringstream words(line);
  for (std::string word; words >> word;)
    out[word.substr(0, word.find('='))] = word.substr(word.find('=') + 1);
  return out;
}

std::string joined(const std::set<unsigned>& values) {
  std::string out;
  for (unsigned v : values) out += (out.empty() ? "" : ",") + std::to_string(v);
  return out;
}

std::set<unsigned> numbers(const nlohmann::json& list) {
  std::set<unsigned> out;
  for (const nlohmann::json& x : list) out.insert(x.get<unsigned>());
  return out;
}

TEST_F(Testbed, AnMpiJobStagesHdf5DatasetsInAndItsResultOutAcrossFourHosts) {
  const nlohmann::json nodes = nlohmann::json::parse(alice({"nodes", "--json"}).out);
  for (const nlohmann::json& n : nodes["nodes"]) {
    if (n["name"] == "storage") {
      EXPECT_TRUE(n["data_address"].get<std::string>().starts_with("198.18.0."))
          << "staging crosses the bridge: " << n.dump();
    }
  }
  constexpr long kRows = 512, kCols = 1024;
  ASSERT_EQ(run({built("tests/mpi/mpi_stage_app"), "--make", (export_ / "in.h5").string(),
                 std::to_string(kRows), std::to_string(kCols)})
                .exit_code,
            0);
  const std::uint64_t id = submit(
      {"submit", "--mpi", "-N", "4", "--tasks-per-node", "4", "-c", "2", "--bb", "1G", "--stage-in",
       "storage:/in.h5:/fields/temperature,/fields/pressure", "--stage-out",
       "out.h5:storage:/results/", "-o", "stage-%j", "--", built("tests/mpi/mpi_stage_app")});
  const nlohmann::json job = finish(id);
  const std::string output = read("stage-" + std::to_string(id));
  ASSERT_EQ(job["state"], "COMPLETED") << job.dump() << output;
  EXPECT_EQ(job["exit_code"], 0);

  // Every rank ran on the host it was placed on, bound as its agent reported, which is the
  // explicit mapping of its placed cores onto this machine's PUs (PU k -> k mod P).
  const unsigned real_pus = std::thread::hardware_concurrency();
  std::map<unsigned, nlohmann::json> placed;
  std::set<std::string> hosts;
  for (const nlohmann::json& p : job["placement"]) {
    placed[p["rank"].get<unsigned>()] = p;
    hosts.insert(p["node"].get<std::string>());
  }
  EXPECT_EQ(hosts, (std::set<std::string>{"node0", "node1", "node2", "node3"}));
  std::set<unsigned> reported;
  std::string total;
  for (const std::string& line : lines(output)) {
    if (line.starts_with("total ")) total = line;
    // mpirun's own messages share the file (Open MPI 4.1 may warn of a setpgid race).
    if (!line.starts_with("rank=")) continue;
    std::map<std::string, std::string> r = fields(line);
    const unsigned rank = static_cast<unsigned>(std::stoul(r["rank"]));
    reported.insert(rank);
    ASSERT_TRUE(placed.contains(rank)) << line;
    const nlohmann::json& p = placed[rank];
    EXPECT_EQ(r["size"], "16") << "one world over four hosts";
    EXPECT_EQ(r["host"], p["node"].get<std::string>()) << line;
    EXPECT_EQ(r["cpus"], joined(numbers(p["bound_cpus"]))) << line;
    EXPECT_EQ(r["mempolicy"], "bind") << line;
    EXPECT_EQ(r["numa"], joined(numbers(p["bound_numa"]))) << line;
    std::set<unsigned> mapped;
    for (const nlohmann::json& core : p["cores"]) mapped.insert(core.get<unsigned>() % real_pus);
    EXPECT_EQ(numbers(p["bound_cpus"]), mapped) << p.dump();
  }
  EXPECT_EQ(reported.size(), 16u) << output;

  // The ranks read what was staged: their sums are the input's.
  double temperature = 0, pressure = 0;
  for (long i = 0; i < kRows; ++i) {
    for (long j = 0; j < kCols; ++j) {
      temperature += 250.0 + 0.01 * static_cast<double>(i) + 0.001 * static_cast<double>(j);
      pressure += 1000.0 - 0.02 * static_cast<double>(i) + 0.0005 * static_cast<double>(j);
    }
  }
  std::map<std::string, std::string> sums = fields(total);
  ASSERT_TRUE(sums.contains("temperature")) << output;
  EXPECT_NEAR(std::stod(sums["temperature"]), temperature, temperature * 1e-9);
  EXPECT_NEAR(std::stod(sums["pressure"]), pressure, pressure * 1e-9);

  // Staged in on every host, staged out from the first, byte for byte.
  std::set<std::string> staged_on;
  for (const nlohmann::json& s : job["staging"]) {
    EXPECT_EQ(s["state"], "done") << s.dump();
    EXPECT_EQ(s["bytes_done"], s["bytes_total"]) << s.dump();
    if (s["direction"] == "in") staged_on.insert(s["node"].get<std::string>());
    if (s["direction"] == "out") {
      EXPECT_EQ(s["node"], "node0") << s.dump();
    }
  }
  EXPECT_EQ(staged_on, hosts);
  for (const std::string object : {"/fields/temperature", "/fields/pressure"}) {
    const Completed diff = run({"h5diff", "-v", (export_ / "in.h5").string(),
                                (export_ / "results" / "out.h5").string(), object, object});
    EXPECT_EQ(diff.exit_code, 0) << diff.out << diff.err;
    EXPECT_NE(diff.out.find("0 differences found"), std::string::npos) << diff.out;
  }
  const Completed listed = run({"h5ls", "-r", (export_ / "results" / "out.h5").string()});
  EXPECT_NE(listed.out.find("/results/sums"), std::string::npos) << listed.out;
  EXPECT_EQ(slices_left(), std::vector<std::string>{});
  EXPECT_EQ(cluster_->job_processes(id), std::vector<pid_t>{});
}

TEST_F(Testbed, LoomRshStartsOnlyOpenMpisDaemonOnlyInTheCallersJob) {
  const std::uint64_t id =
      submit({"submit", "--mpi", "-N", "2", "--tasks-per-node", "1", "-o", "long-%j", "--", "sh",
              "-c", "echo up on $(hostname); exec sleep 3006"});
  const std::string job = std::to_string(id);
  ASSERT_EQ(LocalCluster::wait_for(dir_ / ("long-" + job), "up on").empty(), false);
  std::vector<std::string> on;
  const nlohmann::json running =
      show(id);  // kept: a loop over a temporary's member would outlive it
  for (const nlohmann::json& p : running["placement"]) on.push_back(p["node"].get<std::string>());
  ASSERT_EQ(on.size(), 2u) << show(id).dump() << read("long-" + job);
  std::string outside;
  for (const char* node : {"node0", "node1", "node2", "node3"}) {
    if (std::ranges::find(on, node) == on.end()) outside = node;
  }
  // mpirun and a rank on the first host, orted and a rank on the second: all the job's
  // user's, Open MPI's traffic kept on the hosts' network, its daemon started by loom-rsh.
  std::map<std::string, std::string> commands;  // name -> command line
  const passwd* user = ::getpwnam("loom-alice");
  ASSERT_NE(user, nullptr);
  for (pid_t pid : cluster_->job_processes(id)) {
    std::string cmdline = testing::proc_file(fmt::format("/proc/{}/cmdline", pid));
    std::ranges::replace(cmdline, '\0', ' ');
    commands[fs::path(cmdline.substr(0, cmdline.find(' '))).filename().string()] = cmdline;
    struct stat st {};
    ASSERT_EQ(::stat(fmt::format("/proc/{}", pid).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, user->pw_uid) << cmdline;
  }
  ASSERT_TRUE(commands.contains("mpirun") && commands.contains("orted") &&
              commands.contains("sleep"))
      << ::testing::PrintToString(commands);
  EXPECT_NE(commands["mpirun"].find("--mca plm_rsh_agent " + built("mpi_launcher/loom-rsh")),
            std::string::npos)
      << commands["mpirun"];
  EXPECT_NE(commands["mpirun"].find("--mca oob_tcp_if_include 198.18.0."), std::string::npos)
      << commands["mpirun"];
  EXPECT_NE(commands["mpirun"].find("--mca btl_tcp_if_include 198.18.0."), std::string::npos)
      << commands["mpirun"];
  EXPECT_EQ(commands["orted"].find("--daemonize"), std::string::npos) << commands["orted"];

  auto refused = [](const Completed& done, const std::string& why) {
    EXPECT_EQ(done.exit_code, 255) << done.out << done.err;
    EXPECT_NE(done.err.find(why), std::string::npos) << done.err;
  };
  refused(rsh("loom-alice", "", {on[1], "orted"}),
          "not inside a Loom job (LOOM_JOB_ID is not set)");
  refused(rsh("loom-alice", job, {on[1], "sh", "-c", "id"}),
          "runs only Open MPI's daemon, orted, not \"sh -c id\"");
  refused(rsh("loom-alice", job, {outside, "orted"}),
          fmt::format("{} is not a node of job {}", outside, job));
  refused(rsh("loom-alice", job, {on[0], "orted"}), "first node, where mpirun runs");
  refused(rsh("loom-alice", job, {on[1], "orted"}),
          fmt::format("job {} runs Open MPI's daemon on {} already", job, on[1]));
  refused(rsh("loom-bob", job, {on[1], "orted"}),
          fmt::format("job {} does not exist", job));  // another's job is invisible
  refused(rsh("root", job, {on[1], "orted"}),
          fmt::format("job {} is loom-alice's", job));  // an admin sees it, may not enter it

  // The controller checks the command itself, whatever the client: Exec as loom-alice,
  // with her own credential, asking for a shell.
  const Completed credential = run({"runuser", "-u", "loom-alice", "--", "munge", "-n"});
  ASSERT_EQ(credential.exit_code, 0) << credential.err;
  auto stub =
      v1::Controller::NewStub(grpc::CreateChannel(cluster_->address(), cluster_->tls().channel()));
  v1::ExecRequest request;
  request.mutable_caller()->set_credential(lines(credential.out).front());
  request.set_job(id);
  request.set_node(on[1]);
  for (const char* word : {"sh", "-c", "id"}) request.add_argv(word);
  grpc::ClientContext context;
  v1::ExecReply reply;
  const grpc::Status status = stub->Exec(&context, request, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();

  // Cancel reaches every rank on every host.
  ASSERT_EQ(alice({"cancel", job}).exit_code, 0);
  EXPECT_EQ(finish(id)["state"], "CANCELLED");
  EXPECT_EQ(cluster_->job_processes(id), std::vector<pid_t>{});
}

TEST_F(Testbed, AnMpiJobAcrossHostsOutlivesAControllerRestart) {
  const std::uint64_t id = submit(
      {"submit", "--mpi", "-N", "2", "--tasks-per-node", "1", "-o", "restart-%j", "--", "sh", "-c",
       "echo up; while [ ! -e release ]; do sleep 0.05; done; echo done on $(hostname)"});
  const std::string output = "restart-" + std::to_string(id);
  // Both ranks are up (mpirun's own warnings may share the file).
  auto ranks_up = [&] {
    const std::vector<std::string> said = lines(read(output));
    return std::count(said.begin(), said.end(), "up");
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (ranks_up() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(ranks_up(), 2) << read(output) << show(id).dump();
  // The controller dies; loom up starts it again. loom-rsh, whose call to it broke, asks
  // again; mpirun and its daemon go on.
  ASSERT_EQ(::kill(daemon("loomctld"), SIGKILL), 0);
  cluster_->wait_log("loomctld was killed by signal 9; restarting it");
  std::ofstream(dir_ / "release") << "";
  const nlohmann::json job = finish(id);
  EXPECT_EQ(job["state"], "COMPLETED") << job.dump() << read(output);
  const std::vector<std::string> said = lines(read(output));
  EXPECT_EQ(std::count_if(said.begin(), said.end(),
                          [](const std::string& l) { return l.starts_with("done on node"); }),
            2)
      << read(output);
}

}  // namespace
}  // namespace loom::testing
