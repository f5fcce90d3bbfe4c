// An agent that stops reading its stream (hung, or behind a saturated link) while the
// controller has launches for it: the controller goes on answering and scheduling, and
// drops that agent once controller.agent_queue bytes wait for it.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cluster_test.hpp"
#include "loom/common/munge.hpp"
#include "loom/proto/agent.grpc.pb.h"

namespace loom {
namespace {

using loom::testing::Completed;
using nlohmann::json;

class SlowAgent : public loom::testing::ClusterTest {
 protected:
  std::string config() const override { return "[controller]\nagent_queue = \"2MiB\"\n"; }
  std::unique_ptr<loom::testing::LocalCluster> make_cluster() const override {
    return std::make_unique<loom::testing::LocalCluster>(1, "pack:1 numa:1 core:2 pu:1", config());
  }
  std::string node_state(const std::string& name) const {
    Completed nodes = cluster_->loom("", {"nodes", "--json"});
    EXPECT_EQ(nodes.exit_code, 0) << nodes.err;
    const json listing = json::parse(nodes.out);
    for (const json& n : listing["nodes"]) {
      if (n["name"] == name) return n["state"];
    }
    return "";
  }
};

TEST_F(SlowAgent, AnAgentThatReadsNothingDelaysOnlyItselfAndIsDropped) {
  // A node's agent as a raw client, as root: it registers, then reads nothing more.
  Completed topology =
      cluster_->loom("", {"topo", "--synthetic", "pack:1 numa:1 core:16 pu:1", "--json"});
  ASSERT_EQ(topology.exit_code, 0) << topology.err;
  auto credential = munge_credential();
  ASSERT_TRUE(credential.has_value()) << credential.error().to_string();
  auto stub = v1::AgentLink::NewStub(
      grpc::CreateChannel(cluster_->address(), cluster_->tls("node0").channel()));
  grpc::ClientContext context;
  auto stream = stub->Connect(&context);
  v1::FromAgent hello;
  hello.mutable_hello()->set_name("slow0");
  hello.mutable_hello()->set_topology_json(topology.out);
  hello.mutable_hello()->set_credential(*credential);
  ASSERT_TRUE(stream->Write(hello));
  v1::ToAgent registered;
  ASSERT_TRUE(stream->Read(&registered));
  ASSERT_TRUE(registered.has_registered());

  // Every new job goes to slow0, each launch carrying a script of nearly 1 MiB.
  ASSERT_EQ(cluster_->loom("", {"drain", "node0", "--reason", "slow0 takes these"}).exit_code, 0);
  std::ofstream(dir_ / "big.sh") << "#!/bin/sh\n# " << std::string(std::size_t{1000} * 1000, 'x')
                                 << "\ntrue\n";
  for (int i = 0; i < 12; ++i) submit({"submit", "big.sh"});

  // The controller answers all along, and drops slow0 once 2 MiB wait for it.
  for (int i = 0; i < 600 && node_state("slow0") != "DOWN"; ++i) ::usleep(100'000);
  EXPECT_EQ(node_state("slow0"), "DOWN");
  ASSERT_EQ(cluster_->loom("", {"resume", "node0"}).exit_code, 0);
  EXPECT_EQ(finish(submit({"submit", "--", "true"}))["state"], "COMPLETED")
      << "the other node's jobs run";
  context.TryCancel();
}

}  // namespace
}  // namespace loom
