// loom fabric info [--json]: what libfabric offers here, and what Loom would choose.
#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "loom/fabric/fabric.hpp"

namespace loom::cli {

namespace {

nlohmann::json offer_json(const fabric::Offer& o) {
  return {{"name", o.provider}, {"fabric", o.fabric}, {"domain", o.domain}, {"ep_type", o.ep_type}, {"mr_mode", o.mr_mode}};
}

}  // namespace

Command add_fabric(CLI::App& app) {
  auto* command = app.add_subcommand("fabric", "The RDMA data plane");
  auto* info = command->add_subcommand(
      "info", "List the RDM endpoints with RMA that libfabric offers here, and the one Loom would choose");
  command->require_subcommand(1);
  auto json = std::make_shared<bool>(false);
  info->add_flag("--json", *json, "Print one JSON object");
  return {command, [json](const Context& context) -> Status {
            std::vector<fabric::Offer> offers = LOOM_TRY(fabric::list_offers());
            auto chosen = fabric::Info::choose({context.config.fabric.provider, context.config.fabric.interface});
            if (*json) {
              nlohmann::json providers = nlohmann::json::array();
              for (const fabric::Offer& o : offers) providers.push_back(offer_json(o));
              nlohmann::json out = {{"providers", providers},
                                    {"chosen", chosen ? offer_json(chosen->offer()) : nlohmann::json(nullptr)}};
              if (!chosen) out["chosen_error"] = chosen.error().to_string();
              std::cout << out.dump(2) << '\n';
              return {};
            }
            std::cout << fmt::format("{:<16} {:<24} {:<10} {:<10} {}\n", "provider", "fabric", "domain", "endpoint", "mr_mode");
            for (const fabric::Offer& o : offers) {
              std::cout << fmt::format("{:<16} {:<24} {:<10} {:<10} {}\n", o.provider, o.fabric, o.domain, o.ep_type,
                                       o.mr_mode.empty() ? "-" : fmt::format("{}", fmt::join(o.mr_mode, ",")));
            }
            if (chosen) {
              const fabric::Offer o = chosen->offer();
              std::cout << fmt::format("chosen: {} on {} ({})\n", o.provider, o.domain, o.fabric);
            } else {
              std::cout << "chosen: none: " << chosen.error().to_string() << '\n';
            }
            return {};
          }};
}

}  // namespace loom::cli
