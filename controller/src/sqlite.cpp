#include "sqlite.hpp"

#include <fmt/format.h>

#include <utility>

namespace loom::controller::detail {

namespace {

// SQLite's failures as Loom's codes. None is a refusal (kNotFound, kAlreadyExists): the
// store makes those itself, from what it asked.
ErrorCode kind_of(int code) {
  switch (code & 0xff) {  // the primary code of an extended one
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return ErrorCode::kUnavailable;
    case SQLITE_FULL:
      return ErrorCode::kResourceExhausted;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return ErrorCode::kDataLoss;
    default:
      return ErrorCode::kInternal;
  }
}

}  // namespace

Error Database::error(std::string_view what) const {
  return {kind_of(sqlite3_errcode(db_)), fmt::format("{}: {}", what, sqlite3_errmsg(db_))};
}

Result<Database> Database::open(const std::string& path) {
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  Database db(raw);  // owns it even when opening failed
  if (rc != SQLITE_OK) return std::unexpected(db.error(fmt::format("opening {}", path)));
  return db;
}

Status Database::exec(std::string_view sql) {
  char* message = nullptr;
  const std::string text(sql);
  if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    Error e = error(fmt::format("executing \"{}\"", text.substr(0, 60)));
    sqlite3_free(message);
    return std::unexpected(std::move(e));
  }
  return {};
}

Result<Statement> Database::prepare(std::string_view sql) const {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) !=
      SQLITE_OK) {
    return std::unexpected(error(fmt::format("preparing \"{}\"", sql.substr(0, 60))));
  }
  return Statement(db_, stmt);
}

Result<Statement*> Database::cached(std::string_view sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    Statement statement = LOOM_TRY(prepare(sql));
    it = cache_.emplace(std::string(sql), std::move(statement)).first;
  }
  LOOM_TRY(it->second.reset());  // a use that failed midway may have left it stepped
  return &it->second;
}

Status Database::run(std::string_view sql) {
  Statement* statement = LOOM_TRY(cached(sql));
  LOOM_TRY(statement->step());
  return statement->reset();
}

Result<int> Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW || rc == SQLITE_DONE) return rc;
  return make_error(kind_of(rc), fmt::format("{}: {}", sqlite3_sql(stmt_), sqlite3_errmsg(db_)));
}

Status Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  return {};
}

}  // namespace loom::controller::detail
