#include "sqlite_rows.hpp"

#include <fmt/format.h>

#include "stored_placement.hpp"

namespace loom::controller::detail {

namespace {

std::optional<int> optional_int(sqlite3_stmt* s, int column) {
  if (sqlite3_column_type(s, column) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_int(s, column);
}

std::optional<std::int64_t> optional_int64(sqlite3_stmt* s, int column) {
  if (sqlite3_column_type(s, column) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_int64(s, column);
}

}  // namespace

Result<JobRow> job_from(sqlite3_stmt* s) {
  JobRow row;
  row.id = JobId(static_cast<JobId::rep>(sqlite3_column_int64(s, 0)));
  row.user = reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
  row.uid = static_cast<std::uint32_t>(sqlite3_column_int64(s, 2));
  row.state = static_cast<v1::JobState>(sqlite3_column_int(s, 3));
  row.reason.detail = reinterpret_cast<const char*>(sqlite3_column_text(s, 4));
  row.reason.code = static_cast<v1::Reason>(sqlite3_column_int(s, 16));
  row.exit_code = optional_int(s, 5);
  row.signal = optional_int(s, 6);
  row.submit_time = sqlite3_column_int64(s, 7);
  row.start_time = optional_int64(s, 8);
  row.end_time = optional_int64(s, 9);
  const void* blob = sqlite3_column_blob(s, 10);
  if (!row.spec.ParseFromArray(blob, sqlite3_column_bytes(s, 10))) {
    return make_error(ErrorCode::kDataLoss,
                      fmt::format("job {}: its stored spec does not parse", row.id.value()));
  }
  auto placement = placement_from_json(reinterpret_cast<const char*>(sqlite3_column_text(s, 11)));
  if (!placement) {
    return std::unexpected(
        std::move(placement).error().with_context(fmt::format("job {}", row.id.value())));
  }
  row.placement = *std::move(placement);
  if (auto array = optional_int64(s, 12)) row.array_job = JobId(static_cast<JobId::rep>(*array));
  row.array_index = static_cast<std::uint32_t>(sqlite3_column_int64(s, 13));
  if (sqlite3_column_type(s, 14) != SQLITE_NULL &&
      !row.staging.ParseFromArray(sqlite3_column_blob(s, 14), sqlite3_column_bytes(s, 14))) {
    return make_error(ErrorCode::kDataLoss,
                      fmt::format("job {}: its stored staging does not parse", row.id.value()));
  }
  if (sqlite3_column_type(s, 15) != SQLITE_NULL &&
      !row.usage.emplace().ParseFromArray(sqlite3_column_blob(s, 15),
                                          sqlite3_column_bytes(s, 15))) {
    return make_error(ErrorCode::kDataLoss,
                      fmt::format("job {}: its stored usage does not parse", row.id.value()));
  }
  if (auto killing = optional_int(s, 17)) {
    row.killing = Killing{static_cast<v1::JobState>(*killing),
                          {static_cast<v1::Reason>(sqlite3_column_int(s, 18)),
                           reinterpret_cast<const char*>(sqlite3_column_text(s, 19))}};
  }
  return row;
}

}  // namespace loom::controller::detail
