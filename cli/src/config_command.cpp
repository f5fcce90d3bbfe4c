// loom config [--keys] [--json]: the configuration in force, or every key documented.
#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"

namespace loom::cli {

Command add_config(CLI::App& app) {
  auto* command = app.add_subcommand(
      "config", "Print the configuration in force (--config, $LOOM_CONFIG or /etc/loom/loom.toml)");
  struct Options {
    bool keys = false;
    bool json = false;
  };
  auto options = std::make_shared<Options>();
  command->add_flag("--keys", options->keys, "List every key with its type, default and meaning");
  command->add_flag("--json", options->json, "Print one JSON object");
  return {command, [options](const Context& context) -> Status {
            if (options->keys) {
              nlohmann::json keys = nlohmann::json::array();
              for (const ConfigKey& key : config_keys()) {
                if (options->json) {
                  keys.push_back({{"key", key.name},
                                  {"type", key.type},
                                  {"default", key.default_value},
                                  {"description", key.description}});
                } else {
                  std::cout << fmt::format("{}  ({}, default {})\n    {}\n", key.name, key.type,
                                           key.default_value, key.description);
                }
              }
              if (options->json) std::cout << nlohmann::json{{"keys", keys}}.dump(2) << '\n';
              return {};
            }
            nlohmann::json values = nlohmann::json::object();
            for (const ConfigKey& key : config_keys()) {
              const std::string value = config_value(context.config, key.name);
              if (options->json) {
                values[std::string(key.name)] = value;
              } else {
                std::cout << fmt::format("{} = {}\n", key.name, value);
              }
            }
            if (options->json) std::cout << values.dump(2) << '\n';
            return {};
          }};
}

}  // namespace loom::cli
