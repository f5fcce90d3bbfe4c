// The fields of a job every --json listing starts with (loom show, loom queue, loom acct).
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "loom/common/printable.hpp"
#include "loom/proto/controller.pb.h"

namespace loom::cli {

// A value, or null when the job has none.
template <class T>
nlohmann::json or_null(bool has, const T& value) {
  return has ? nlohmann::json(value) : nlohmann::json(nullptr);
}

// Who and what the job is, its state and why, and its exit status.
inline nlohmann::json job_identity(const v1::JobInfo& j) {
  return {
      {"id", j.id()},
      {"array_job", or_null(j.array_job() != 0, j.array_job())},
      {"array_index", or_null(j.array_job() != 0, j.array_index())},
      // The name is the user's bytes; JSON is UTF-8: bytes that are not, as U+FFFD.
      {"name", valid_utf8(j.name())},
      {"user", j.user()},
      {"account", j.account()},
      {"state", v1::JobState_Name(j.state())},
      {"reason", j.reason()},
      // The reason's code for scripts: "STAGE_IN_FAILED", "TIME_LIMIT", "NONE", ...
      {"reason_code", v1::Reason_Name(j.reason_code()).substr(std::string_view("REASON_").size())},
      {"exit_code", or_null(j.has_exit_code(), j.exit_code())},
      {"signal", or_null(j.has_signal(), j.signal())},
  };
}

}  // namespace loom::cli
