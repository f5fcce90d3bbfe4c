// Owners for SQLite handles (private to the controller).
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>
#include <string_view>

#include "loom/common/error.hpp"

namespace loom::controller::detail {

class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(Statement&& other) noexcept
      : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)) {}
  Statement& operator=(Statement&&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  sqlite3_stmt* get() const { return stmt_; }
  // SQLITE_ROW, SQLITE_DONE, or an Error naming the statement.
  Result<int> step();
  Status reset();

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

class Database {
 public:
  static Result<Database> open(const std::string& path);
  Database(Database&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
  Database& operator=(Database&&) = delete;
  ~Database() { sqlite3_close(db_); }

  Status exec(std::string_view sql);
  Result<Statement> prepare(std::string_view sql) const;
  sqlite3* get() const { return db_; }
  Error error(std::string_view what) const;

 private:
  explicit Database(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

}  // namespace loom::controller::detail
