// loom bb: persistent burst buffers, named slices of a node's NVMe that outlive jobs.
#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "loom/client/client.hpp"
#include "loom/common/bytes.hpp"

namespace loom::cli {

// The controller as `loom` reaches it (loom/client/client.hpp).
using namespace loom::client;

std::vector<Command> add_bb_commands(CLI::App& app) {
  auto controller = std::make_shared<std::string>();
  std::vector<Command> commands;
  auto* bb = app.add_subcommand(
      "bb",
      "Persistent burst buffers: create, list, destroy; a job uses one with --bb-persistent NAME");
  bb->require_subcommand(1);

  struct Create {
    std::string name, size, node, account;
  };
  auto c = std::make_shared<Create>();
  auto* create = bb->add_subcommand(
      "create",
      "Make a buffer of yours on a node's NVMe device (the one with the most room, "
      "or on --node); jobs that use it run on that node");
  create->add_option("name", c->name, "Its name: letters, digits, '-', '_', '.'")->required();
  create->add_option("--size", c->size, "Its capacity, e.g. 10G")->required();
  create->add_option("--node", c->node, "The node to put it on");
  create->add_option("-A,--account", c->account,
                     "The account its bytes are charged to, as a job's (default: your first)");
  create->add_option("--controller", *controller, kControllerHelp);
  commands.push_back(
      {create, [c, controller](const Context& context) -> Status {
         const Bytes bytes = LOOM_TRY(with_context(parse_bytes(c->size), "--size"));
         const Client client = LOOM_TRY(connect(*controller, context.config));
         v1::BufferRequest request;
         *request.mutable_caller() = LOOM_TRY(me());
         request.set_name(c->name);
         request.set_bytes(bytes.count());
         request.set_node(c->node);
         request.set_account(c->account);
         v1::BufferInfo reply;
         grpc::ClientContext call;
         if (grpc::Status s = client.stub->CreateBuffer(&call, request, &reply); !s.ok())
           return std::unexpected(client.error(s));
         std::cout << fmt::format("burst buffer {} ({}) on {} at {}\n", reply.name(),
                                  format_bytes(Bytes(reply.bytes())), reply.node(), reply.path());
         return {};
       }});

  auto json = std::make_shared<bool>(false);
  auto* list = bb->add_subcommand("list", "List your buffers (every user's for an admin)");
  list->add_flag(
      "--json", *json,
      "Print one JSON object: {\"buffers\": [{\"name\", \"owner\", \"account\", \"node\", "
      "\"bytes\", \"used_by\", \"path\"}]}");
  list->add_option("--controller", *controller, kControllerHelp);
  commands.push_back(
      {list, [json, controller](const Context& context) -> Status {
         const Client client = LOOM_TRY(connect(*controller, context.config));
         v1::BuffersRequest request;
         *request.mutable_caller() = LOOM_TRY(me());
         v1::BuffersReply reply;
         grpc::ClientContext call;
         if (grpc::Status s = client.stub->ListBuffers(&call, request, &reply); !s.ok())
           return std::unexpected(client.error(s));
         if (*json) {
           nlohmann::json buffers = nlohmann::json::array();
           for (const v1::BufferInfo& b : reply.buffers()) {
             buffers.push_back(
                 {{"name", b.name()},
                  {"owner", b.owner()},
                  {"account", b.account()},
                  {"node", b.node()},
                  {"bytes", b.bytes()},
                  {"used_by", std::vector<std::uint64_t>(b.used_by().begin(), b.used_by().end())},
                  {"path", b.path()}});
           }
           std::cout << nlohmann::json{{"buffers", buffers}}.dump(2) << '\n';
           return {};
         }
         std::cout << fmt::format("{:<20} {:<12} {:<12} {:<12} {:>10}  {}\n", "NAME", "OWNER",
                                  "ACCOUNT", "NODE", "SIZE", "USED BY");
         for (const v1::BufferInfo& b : reply.buffers()) {
           std::string users;
           for (std::uint64_t id : b.used_by())
             users += (users.empty() ? "job " : ", ") + std::to_string(id);
           std::cout << fmt::format("{:<20} {:<12} {:<12} {:<12} {:>10}  {}\n", b.name(), b.owner(),
                                    b.account().empty() ? "-" : b.account(), b.node(),
                                    format_bytes(Bytes(b.bytes())), users.empty() ? "-" : users);
         }
         return {};
       }});

  auto name = std::make_shared<std::string>();
  auto owner = std::make_shared<std::string>();
  auto* destroy = bb->add_subcommand(
      "destroy", "Destroy a buffer of yours and what it holds (refused while a job uses it)");
  destroy->add_option("name", *name, "The buffer's name")->required();
  destroy->add_option("--user", *owner,
                      "Whose buffer (administrators: another user's; each user names their own)");
  destroy->add_option("--controller", *controller, kControllerHelp);
  commands.push_back({destroy, [name, owner, controller](const Context& context) -> Status {
                        const Client client = LOOM_TRY(connect(*controller, context.config));
                        v1::BufferRequest request;
                        *request.mutable_caller() = LOOM_TRY(me());
                        request.set_name(*name);
                        request.set_owner(*owner);
                        v1::BufferReply reply;
                        grpc::ClientContext call;
                        if (grpc::Status s = client.stub->DestroyBuffer(&call, request, &reply);
                            !s.ok())
                          return std::unexpected(client.error(s));
                        return {};
                      }});
  return commands;
}

}  // namespace loom::cli
