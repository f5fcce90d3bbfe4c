// Where the configuration file is, and reading it: for every program at its start.
#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "loom/common/config.hpp"
#include "loom/common/errno_text.hpp"
#include "loom/common/error.hpp"
#include "loom/common/log.hpp"

namespace loom {

std::filesystem::path config_path(const std::optional<std::filesystem::path>& explicit_path) {
  if (explicit_path) return *explicit_path;
  if (const char* env = std::getenv("LOOM_CONFIG"); env != nullptr && *env != '\0') return env;
  return "/etc/loom/loom.toml";
}

namespace {

Config with_environment(Config config) {
  for (auto [name, file] :
       {std::pair{"LOOM_TLS_CA", &config.tls.ca}, std::pair{"LOOM_TLS_CERT", &config.tls.cert},
        std::pair{"LOOM_TLS_KEY", &config.tls.key}}) {
    if (const char* value = std::getenv(name); value != nullptr && *value != '\0') *file = value;
  }
  return config;
}

}  // namespace

Result<Config> load_config(const std::optional<std::filesystem::path>& explicit_path) {
  const std::filesystem::path path = config_path(explicit_path);
  const char* env = std::getenv("LOOM_CONFIG");
  const bool must_exist = explicit_path || (env != nullptr && *env != '\0');
  std::ifstream in(path);
  if (!in) {
    if (!must_exist && !std::filesystem::exists(path)) return with_environment(Config{});
    return make_error(ErrorCode::kNotFound, fmt::format("cannot read configuration file {}: {}",
                                                        path.string(), loom::errno_text(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return with_environment(LOOM_TRY(parse_config(text.str(), path.string())));
}

Result<Config> start_program(std::string_view program,
                             const std::optional<std::filesystem::path>& explicit_path) {
  Config config = LOOM_TRY(load_config(explicit_path));
  LOOM_TRY(log::init(program, config.log.level));
  return config;
}

}  // namespace loom
