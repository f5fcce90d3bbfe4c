// How config.cpp reads a key's TOML value and writes it back: a key's specification, the
// types named in errors, and the shapes several keys share (durations, paths).
#pragma once

#include <fmt/format.h>
#include <toml++/toml.h>

#include <chrono>
#include <span>
#include <string>
#include <string_view>

#include "loom/common/config.hpp"
#include "loom/common/duration.hpp"
#include "loom/common/error.hpp"

namespace loom::config_detail {

// How one key is read from the file and written back. Each key's validation lives in
// config.cpp's table, next to its documentation, so `loom config` and the parser cannot
// disagree.
struct KeySpec {
  ConfigKey doc;
  Status (*set)(Config& config, const toml::node& value);
  std::string (*get)(const Config& config);
};

inline std::string_view type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

inline Result<std::string> as_string(const toml::node& node) {
  if (auto value = node.value<std::string>(); value && node.is_string()) return *value;
  return make_error(ErrorCode::kInvalidArgument,
                    fmt::format("must be a string, got {}", type_name(node)));
}

inline Result<bool> as_bool(const toml::node& node) {
  if (auto value = node.value<bool>(); value && node.is_boolean()) return *value;
  return make_error(ErrorCode::kInvalidArgument,
                    fmt::format("must be true or false, got {}", type_name(node)));
}

// A duration key, (config.*section).*field, read with parse_duration and written with
// format_duration; at least MinSeconds.
template <auto Section, auto Field, int MinSeconds = 0>
KeySpec duration_key(ConfigKey doc) {
  return KeySpec{
      std::move(doc),
      [](Config& config, const toml::node& value) -> Status {
        const std::string text = LOOM_TRY(as_string(value));
        const std::chrono::seconds duration = LOOM_TRY(parse_duration(text));
        if (duration.count() < MinSeconds) {
          return make_error(
              ErrorCode::kInvalidArgument,
              fmt::format("must be at least {} second{}", MinSeconds, MinSeconds == 1 ? "" : "s"));
        }
        (config.*Section).*Field = duration;
        return {};
      },
      [](const Config& config) { return format_duration((config.*Section).*Field); },
  };
}

// A file's absolute path, or "" for none: (config.*section).*field.
template <auto Section, auto Field>
KeySpec path_key(ConfigKey doc) {
  return KeySpec{
      std::move(doc),
      [](Config& config, const toml::node& value) -> Status {
        std::string& path = (config.*Section).*Field;
        path = LOOM_TRY(as_string(value));
        if (!path.empty() && !path.starts_with('/'))
          return make_error(ErrorCode::kInvalidArgument,
                            fmt::format("must be an absolute path, got \"{}\"", path));
        return {};
      },
      [](const Config& config) { return (config.*Section).*Field; },
  };
}

// A number from 0 to 1e9 (an integer or not): (config.*section).*field.
template <auto Section, auto Field>
KeySpec weight_key(ConfigKey doc) {
  return KeySpec{
      std::move(doc),
      [](Config& config, const toml::node& value) -> Status {
        const auto number = value.value<double>();
        if (!value.is_number() || !number || !(*number >= 0 && *number <= 1e9))
          return make_error(ErrorCode::kInvalidArgument, "must be a number from 0 to 1e9");
        (config.*Section).*Field = *number;
        return {};
      },
      [](const Config& config) { return fmt::format("{}", (config.*Section).*Field); },
  };
}

// The keys of [scheduler] (config_scheduler.cpp).
std::span<const KeySpec> scheduler_keys();

// [[accounts]] (config_accounts.cpp).
std::span<const KeySpec> account_keys();

}  // namespace loom::config_detail
