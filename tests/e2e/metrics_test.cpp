// loomctld's /metrics (issue 20), scraped by a real Prometheus: its HTTP API answers the
// running jobs' count and the NVMe bytes they hold; and on a settled cluster the endpoint
// says what `loom queue` and `loom nodes` say.
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <csignal>
#include <regex>

#include "cluster_test.hpp"

namespace loom::testing {
namespace {

using nlohmann::json;

// A port nothing listens on now, for Prometheus' own web server.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), length), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

// The value of a sample of the exposition text, by its name and labels as written.
double sample(const std::string& text, const std::string& series) {
  const std::string prefix = series + " ";
  for (const std::string& line : lines(text)) {
    if (line.starts_with(prefix)) return std::stod(line.substr(prefix.size()));
  }
  ADD_FAILURE() << "no " << series << " in\n" << text;
  return -1;
}

class MetricsTest : public ClusterTest {
 protected:
  std::string config() const override { return "[metrics]\naddress = \"127.0.0.1:0\"\n"; }
  void TearDown() override {
    if (prometheus_ > 0) {
      ::kill(prometheus_, SIGTERM);
      ::waitpid(prometheus_, nullptr, 0);
    }
    ClusterTest::TearDown();
  }
  // loomctld's metrics port, from its log.
  int metrics_port() const {
    const std::string line = LocalCluster::wait_for(
        cluster_->state_dir() / "state" / "loomctld.log", "metrics on http://127.0.0.1:");
    return std::stoi(line.substr(line.rfind(':') + 1));
  }
  std::string scrape(int port) const {
    httplib::Client client("127.0.0.1", port);
    const httplib::Result got = client.Get("/metrics");
    EXPECT_TRUE(got && got->status == 200);
    return got ? got->body : "";
  }
  // Prometheus, scraping loomctld every second; returns its web port.
  int start_prometheus(int target) {
    const std::filesystem::path dir = dir_ / "prometheus";
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "prometheus.yml")
        << "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: loom\n"
        << "    static_configs:\n      - targets: ['127.0.0.1:" << target << "']\n";
    const int port = free_port();
    prometheus_ = LocalCluster::spawn(
        {"/usr/bin/prometheus", "--config.file=" + (dir / "prometheus.yml").string(),
         "--storage.tsdb.path=" + (dir / "data").string(),
         fmt::format("--web.listen-address=127.0.0.1:{}", port)},
        {}, dir / "prometheus.log");
    return port;
  }
  // A PromQL query's one value, once Prometheus has one equal to `expected` (bounded: 60 s).
  double query_until(int port, const std::string& promql, double expected) const {
    httplib::Client client("127.0.0.1", port);
    double value = -1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline && value != expected) {
      const httplib::Params params{{"query", promql}};
      const httplib::Result got = client.Get("/api/v1/query", params, httplib::Headers{});
      if (got && got->status == 200) {
        const json answer = json::parse(got->body);
        const json& result = answer["data"]["result"];
        if (!result.empty()) value = std::stod(result[0]["value"][1].get<std::string>());
      }
      if (value != expected) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return value;
  }
  pid_t prometheus_ = -1;
};

TEST_F(MetricsTest, PrometheusScrapesTheRunningJobsAndTheNvmeTheyHoldAndTheEndpointMatchesTheCli) {
  const int target = metrics_port();
  const std::string gate = "while [ ! -e go ]; do sleep 0.05; done";
  const std::uint64_t first = submit({"submit", "--bb", "16M", "--", "sh", "-c", gate});
  const std::uint64_t second = submit({"submit", "--bb", "32M", "-c", "2", "--", "sh", "-c", gate});
  wait_running(first);
  wait_running(second);
  const std::uint64_t waiting = submit({"submit", "-n", "6", "--", "true"});  // 5 cores free

  const int web = start_prometheus(target);
  EXPECT_EQ(query_until(web, "sum(loom_jobs{state=\"running\"})", 2), 2);
  EXPECT_EQ(query_until(web, "loom_cluster_nvme_used_bytes", 48 << 20), 48 << 20);

  // Settled (nothing changes state while these are read): the endpoint as the CLI has it.
  const std::string text = scrape(target);
  const json queue = json::parse(alice({"queue", "--json"}).out)["jobs"];
  const auto count = [&](const std::string& state) {
    return static_cast<double>(
        std::ranges::count_if(queue, [&](const json& j) { return j["state"] == state; }));
  };
  EXPECT_EQ(sample(text, "loom_jobs{state=\"running\",reason=\"none\"}"), count("RUNNING"));
  EXPECT_EQ(sample(text, "loom_jobs{state=\"pending\",reason=\"none\"}"), count("PENDING"));
  double cores = 0, cores_free = 0, nvme = 0, nvme_free = 0, up = 0;
  const json nodes = json::parse(cluster_->loom("", {"nodes", "--json"}).out)["nodes"];
  for (const json& node : nodes) {
    if (node["role"] != "compute") continue;
    up += node["state"] == "UP" ? 1 : 0;
    for (const json& d : node["numa"]) {
      cores += d["cores_total"].get<double>();
      cores_free += d["cores_free"].get<double>();
    }
    for (const json& d : node["nvme"]) {
      nvme += d["bytes_total"].get<double>();
      nvme_free += d["bytes_free"].get<double>();
    }
  }
  EXPECT_EQ(sample(text, "loom_nodes{state=\"up\"}"), up);
  EXPECT_EQ(sample(text, "loom_cluster_cores"), cores);
  EXPECT_EQ(sample(text, "loom_cluster_cores_used"), cores - cores_free);
  EXPECT_EQ(sample(text, "loom_cluster_nvme_bytes"), nvme);
  EXPECT_EQ(sample(text, "loom_cluster_nvme_used_bytes"), nvme - nvme_free);
  EXPECT_EQ(sample(text, "loom_account_cores_used{account=\"\"}"), 3);
  EXPECT_NE(text.find("loom_agent_heartbeat_age_seconds{node=\"node0\"}"), std::string::npos);

  std::ofstream(dir_ / "go") << "";
  EXPECT_EQ(finish(first)["state"], "COMPLETED");
  EXPECT_EQ(finish(second)["state"], "COMPLETED");
  EXPECT_EQ(finish(waiting)["state"], "COMPLETED");
  EXPECT_EQ(query_until(web, "loom_jobs_ended_total{state=\"completed\"}", 3), 3);
}

}  // namespace
}  // namespace loom::testing
