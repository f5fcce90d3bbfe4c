// A job's row as the store reads it: the columns, their order, and the row they make.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <optional>

#include "loom/common/error.hpp"
#include "loom/controller/store.hpp"

namespace loom::controller::detail {

inline constexpr const char* kSelectJob =
    "SELECT id, user, uid, state, reason, exit_code, signal, submit_time, start_time, end_time, "
    "spec, placement, array_job, array_index, staging, usage, reason_code, killing_state, "
    "killing_reason_code, killing_reason FROM jobs";

// A row of kSelectJob.
Result<JobRow> job_from(sqlite3_stmt* s);

// Binds a value when there is one; a parameter left unbound is NULL.
template <typename T>
void bind_optional(sqlite3_stmt* s, int index, const std::optional<T>& value) {
  if (value) sqlite3_bind_int64(s, index, *value);
}

}  // namespace loom::controller::detail
