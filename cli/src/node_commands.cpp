// loom nodes / drain / resume: the cluster's nodes as the controller sees them, and the
// admin's hold on them.
#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "loom/client/client.hpp"
#include "loom/common/bytes.hpp"
#include "loom/common/printable.hpp"

namespace loom::cli {

// The controller as `loom` reaches it (loom/client/client.hpp).
using namespace loom::client;

namespace {

nlohmann::json node_json(const v1::NodeInfo& n) {
  nlohmann::json numa = nlohmann::json::array();
  for (const v1::NumaInfo& d : n.numa()) {
    numa.push_back({{"os_index", d.os_index()},
                    {"cores_free", d.cores_free()},
                    {"cores_total", d.cores_total()},
                    {"mem_free", d.mem_free()},
                    {"mem_total", d.mem_total()}});
  }
  nlohmann::json nvme = nlohmann::json::array();
  for (const v1::NvmeInfo& d : n.nvme()) {
    nvme.push_back({{"path", d.path()},
                    {"numa", d.numa()},
                    {"bytes_free", d.bytes_free()},
                    {"bytes_total", d.bytes_total()}});
  }
  return {{"name", n.name()},
          {"role", n.role()},
          {"state", n.state()},
          {"reason", n.reason()},
          {"numa", numa},
          {"nvme", nvme},
          {"data_address", n.data_address()},
          {"cgroup",
           {{"version", n.cgroup().version()},
            {"layout", n.cgroup().layout()},
            {"enforced",
             std::vector<std::string>(n.cgroup().enforced().begin(), n.cgroup().enforced().end())},
            {"not_enforced", std::vector<std::string>(n.cgroup().not_enforced().begin(),
                                                      n.cgroup().not_enforced().end())}}}};
}

// Drain or resume: the same request, told apart by the call.
Status node_request(const std::string& controller, const Context& context, const std::string& node,
                    const std::string& reason, bool drain) {
  const Client client = LOOM_TRY(connect(controller, context.config));
  v1::NodeRequest request;
  v1::Caller caller = LOOM_TRY(me());
  *request.mutable_caller() = std::move(caller);
  request.set_node(node);
  request.set_reason(reason);
  v1::NodeReply reply;
  grpc::ClientContext call;
  const grpc::Status s = drain ? client.stub->Drain(&call, request, &reply)
                               : client.stub->Resume(&call, request, &reply);
  if (!s.ok()) return std::unexpected(client.error(s));
  return {};
}

}  // namespace

std::vector<Command> add_node_commands(CLI::App& app) {
  auto controller = std::make_shared<std::string>();
  std::vector<Command> commands;

  auto* nodes = app.add_subcommand(
      "nodes", "List the nodes: state, free and total cores and memory per NUMA domain, NVMe");
  auto nodes_json = std::make_shared<bool>(false);
  nodes->add_flag("--json", *nodes_json, "Print one JSON object");
  nodes->add_option("--controller", *controller, kControllerHelp);
  commands.push_back(
      {nodes, [nodes_json, controller](const Context& context) -> Status {
         const Client client = LOOM_TRY(connect(*controller, context.config));
         v1::NodesRequest request;
         v1::Caller caller = LOOM_TRY(me());
         *request.mutable_caller() = std::move(caller);
         v1::NodesReply reply;
         grpc::ClientContext call;
         if (grpc::Status s = client.stub->Nodes(&call, request, &reply); !s.ok())
           return std::unexpected(client.error(s));
         warn_read_only(reply.read_only());
         if (*nodes_json) {
           nlohmann::json list = nlohmann::json::array();
           for (const v1::NodeInfo& n : reply.nodes()) list.push_back(node_json(n));
           std::cout << nlohmann::json{{"nodes", list}}.dump(2) << '\n';
           return {};
         }
         std::cout << fmt::format("{:<16} {:<6} {:>11} {:>21} {:>21}  {}\n", "NODE", "STATE",
                                  "CORES FREE", "MEMORY FREE", "NVME FREE", "REASON");
         for (const v1::NodeInfo& n : reply.nodes()) {
           if (n.role() == "storage") {
             std::cout << fmt::format(
                 "{:<16} {:<6} {:>11} {:>21} {:>21}  storage agent, serving at {}\n", n.name(),
                 n.state(), "-", "-", "-", n.data_address());
             continue;
           }
           unsigned cores_free = 0, cores_total = 0;
           std::uint64_t mem_free = 0, mem_total = 0, nvme_free = 0, nvme_total = 0;
           for (const v1::NumaInfo& d : n.numa()) {
             cores_free += d.cores_free();
             cores_total += d.cores_total();
             mem_free += d.mem_free();
             mem_total += d.mem_total();
           }
           for (const v1::NvmeInfo& d : n.nvme()) {
             nvme_free += d.bytes_free();
             nvme_total += d.bytes_total();
           }
           std::cout << fmt::format(
               "{:<16} {:<6} {:>11} {:>21} {:>21}  {}\n", n.name(), n.state(),
               fmt::format("{}/{}", cores_free, cores_total),
               fmt::format("{}/{}", format_bytes(Bytes(mem_free)), format_bytes(Bytes(mem_total))),
               fmt::format("{}/{}", format_bytes(Bytes(nvme_free)),
                           format_bytes(Bytes(nvme_total))),
               printable(n.reason()));
           // A limit the node cannot enforce is said, never silently dropped.
           for (const std::string& note : n.cgroup().not_enforced())
             std::cout << "  not enforced: " << printable(note) << '\n';
         }
         return {};
       }});

  auto* drain =
      app.add_subcommand("drain", "Keep new jobs off a node; its running jobs finish (admins)");
  auto drain_node = std::make_shared<std::string>();
  auto drain_reason = std::make_shared<std::string>();
  drain->add_option("node", *drain_node, "Node name")->required();
  drain->add_option("--reason", *drain_reason, "Why: shown by loom nodes")->required();
  drain->add_option("--controller", *controller, kControllerHelp);
  commands.push_back({drain, [drain_node, drain_reason, controller](const Context& context) {
                        return node_request(*controller, context, *drain_node, *drain_reason, true);
                      }});

  auto* resume = app.add_subcommand("resume", "Let a drained node take jobs again (admins)");
  auto resume_node = std::make_shared<std::string>();
  resume->add_option("node", *resume_node, "Node name")->required();
  resume->add_option("--controller", *controller, kControllerHelp);
  commands.push_back({resume, [resume_node, controller](const Context& context) {
                        return node_request(*controller, context, *resume_node, "", false);
                      }});
  return commands;
}

}  // namespace loom::cli
