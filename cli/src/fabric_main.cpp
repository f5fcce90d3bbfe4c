// loom-fabric, run as `loom fabric ...`: what libfabric offers here, and what Loom would
// choose. A program of its own because libfabric's PSM providers pull in libraries whose
// constructors sleep ~200 ms at every start (libinfinipath); the `loom` that users and
// scripts run hundreds of times must not link it.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "loom/common/config.hpp"
#include "loom/fabric/fabric.hpp"

namespace {

using namespace loom;

nlohmann::json offer_json(const fabric::Offer& o) {
  return {{"name", o.provider},
          {"fabric", o.fabric},
          {"domain", o.domain},
          {"ep_type", o.ep_type},
          {"mr_mode", o.mr_mode}};
}

}  // namespace

// Errors are Results; an exception that escapes is a bug, and terminate()'s core dump is
// how it should be seen.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  CLI::App app{"loom fabric: the RDMA data plane"};
  app.name("loom fabric");
  std::optional<std::filesystem::path> config_file;
  app.add_option("--config", config_file, loom::kConfigHelp);
  auto* info = app.add_subcommand(
      "info",
      "List the RDM endpoints with RMA that libfabric offers here, and the one Loom would choose");
  app.require_subcommand(1);
  bool json = false;
  info->add_flag("--json", json, "Print one JSON object");
  CLI11_PARSE(app, argc, argv);
  auto fail = [](const Error& e) {
    (void)std::fprintf(stderr, "loom: %s\n", e.to_string().c_str());
    return 1;
  };
  auto config = start_program("loom", config_file);
  if (!config) return fail(config.error());

  auto offers = fabric::list_offers();
  if (!offers) return fail(offers.error());
  auto chosen = fabric::Info::choose({config->fabric.provider, config->fabric.interface});
  if (json) {
    nlohmann::json providers = nlohmann::json::array();
    for (const fabric::Offer& o : *offers) providers.push_back(offer_json(o));
    nlohmann::json out = {
        {"providers", providers},
        {"chosen", chosen ? offer_json(chosen->offer()) : nlohmann::json(nullptr)}};
    if (!chosen) out["chosen_error"] = chosen.error().to_string();
    std::cout << out.dump(2) << '\n';
    return 0;
  }
  std::cout << fmt::format("{:<16} {:<24} {:<10} {:<10} {}\n", "provider", "fabric", "domain",
                           "endpoint", "mr_mode");
  for (const fabric::Offer& o : *offers) {
    std::cout << fmt::format(
        "{:<16} {:<24} {:<10} {:<10} {}\n", o.provider, o.fabric, o.domain, o.ep_type,
        o.mr_mode.empty() ? "-" : fmt::format("{}", fmt::join(o.mr_mode, ",")));
  }
  if (chosen) {
    const fabric::Offer o = chosen->offer();
    std::cout << fmt::format("chosen: {} on {} ({})\n", o.provider, o.domain, o.fabric);
  } else {
    std::cout << "chosen: none: " << chosen.error().to_string() << '\n';
  }
  return 0;
}
