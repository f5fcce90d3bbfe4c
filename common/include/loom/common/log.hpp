// Logging: spdlog, to stderr, one setup for every Loom program.
#pragma once

#include <spdlog/common.h>

#include <string_view>

#include "loom/common/error.hpp"

namespace loom::log {

// "trace", "debug", "info", "warn", "error", "critical" or "off".
Result<spdlog::level::level_enum> parse_level(std::string_view text);

// Sends the default logger to stderr, tagged with the program's name, at a level taken
// from the LOOM_LOG environment variable when it is set, else from the configuration
// (log.level). Call once, early in main; a bad LOOM_LOG is an error that names it.
Status init(std::string_view program, std::string_view config_level);

}  // namespace loom::log
