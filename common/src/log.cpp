#include "loom/common/log.hpp"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <array>
#include <cstdlib>
#include <memory>

namespace loom::log {

Result<spdlog::level::level_enum> parse_level(std::string_view text) {
  using L = spdlog::level::level_enum;
  static constexpr std::array<std::pair<std::string_view, L>, 7> kLevels = {{
      {"trace", L::trace},
      {"debug", L::debug},
      {"info", L::info},
      {"warn", L::warn},
      {"error", L::err},
      {"critical", L::critical},
      {"off", L::off},
  }};
  for (auto [name, level] : kLevels) {
    if (name == text) return level;
  }
  return make_error(ErrorCode::kInvalidArgument,
                    fmt::format("invalid log level \"{}\": expected trace, debug, info, warn, "
                                "error, critical or off",
                                text));
}

Status init(std::string_view program, std::string_view config_level) {
  std::string_view chosen = config_level;
  const char* env = std::getenv("LOOM_LOG");
  if (env != nullptr && *env != '\0') chosen = env;
  auto level = parse_level(chosen);
  if (!level) {
    return std::unexpected(std::move(level).error().with_context(
        env != nullptr && *env != '\0' ? "LOOM_LOG" : "log.level"));
  }
  auto logger = std::make_shared<spdlog::logger>(std::string(program),
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern(fmt::format("%Y-%m-%dT%H:%M:%S.%e %^%l%$ {}[%P]: %v", program));
  logger->set_level(*level);
  spdlog::set_default_logger(std::move(logger));
  return {};
}

}  // namespace loom::log
